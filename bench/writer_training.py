"""The trained writer against its base, on the held-out books: what `scripts/gpu/train_writer.sh` brought
back (docs/gpu-logs/runN/results), scored again here with every reward the GPU host could not run.

    .venv/bin/python bench/writer_training.py --results docs/gpu-logs/run10/results \
        --dataset /tmp/corpus-ds --adapters sft=/tmp/gpu-adapters/sft/adapter16,grpo=/tmp/gpu-adapters/grpo/adapter16

For each target (base, SFT, SFT+GRPO) and each held-out pair it answered: format, BLEU, ROUGE-1/2/L,
METEOR, BERTScore, embedding cosine, repetition (the reward and the share of repeated 4-grams), words,
and the perplexity of the REAL next chapter under the target (its first 256 tokens, after the last
1,024 tokens of the pair's prompt and an empty reasoning block: how well the target predicts what the
author wrote). Paired against
the base: the mean difference and on how many pairs the target is better. Then the judge's verdicts,
the training logs (SFT loss, GRPO rewards) and the distillation summary. Appends a dated section to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.report import append_report, machine_info  # noqa: E402

REWARDS = (
    "format_exact",
    "format_partial",
    "bleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "meteor",
    "bertscore",
    "embedding_cosine",
    "repetition",
)
CHAPTER_TOKENS = 256  # of the real chapter, for its perplexity
CONTEXT_TOKENS = 1024  # the end of the prompt before it (a 3,400-token pass takes ~20 s on these 2 cores)
TARGETS = ("base", "sft", "grpo")
LABELS = {"base": "SmolLM2-135M (base)", "sft": "SFT", "grpo": "SFT + GRPO"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def real_chapter_perplexity(pairs, adapter_dir: str | None) -> list[float]:
    """exp(mean NLL) of each pair's real chapter (first CHAPTER_TOKENS tokens) after the last
    CONTEXT_TOKENS of its prompt and an empty reasoning block, under the base model with the LoRA in
    `adapter_dir` (None: the base alone)."""
    import torch
    from django.conf import settings
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from writer.prompting import REASONING_END, REASONING_START, SOLUTION_START

    torch.set_num_threads(2)
    folder = str(settings.WRITER_MODEL_PATH)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    out = []
    for pair in pairs:
        context = tokenizer.apply_chat_template(pair.prompt, tokenize=False, add_generation_prompt=True)
        context += f"{REASONING_START}\n{REASONING_END}\n{SOLUTION_START}\n"
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"][-CONTEXT_TOKENS:]
        chapter = tokenizer(pair.answer, add_special_tokens=False)["input_ids"][:CHAPTER_TOKENS]
        ids = torch.tensor([ctx + chapter])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1]
        nll = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(chapter), reduction="mean")
        out.append(math.exp(nll.item()))
    return out


def score_target(pairs, answers: dict, adapter_dir: str | None, *, perplexity: bool = True) -> list[dict]:
    """Per pair: every reward, the repeated-4-gram share and words of the chapter, and (unless
    `perplexity` is off: it compares only targets of one tokenizer) the real chapter's perplexity."""
    from training.rewards import score_all
    from writer.parsing import parse_output
    from writer.quality import text_quality

    rows = []
    ppl = real_chapter_perplexity(pairs, adapter_dir) if perplexity else [None] * len(pairs)
    for pair, perplexity in zip(pairs, ppl, strict=True):
        text = answers[(pair.book, pair.k)]
        scores = score_all(text, pair.answer, names=list(REWARDS), prompt=pair.prompt)
        quality = text_quality(parse_output(text).text)
        rows.append(
            {
                "book": pair.book,
                "k": pair.k,
                **{k: v for k, v in scores.items()},
                "repeat_share": quality.repetition,
                "words": quality.words,
                "real_chapter_ppl": round(perplexity, 3) if perplexity is not None else None,
            }
        )
    return rows


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="The build_dataset folder the run used.")
    parser.add_argument("--adapters", required=True, help="sft=DIR,grpo=DIR (the LoRAs that came back)")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--max-new-tokens", type=int, default=640, help="What the answers were asked for (train_writer.sh COMPLETION_TOKENS)."
    )
    parser.add_argument("--sft-epochs", type=int, default=5, help="train_writer.sh SFT_EPOCHS of the run.")
    args = parser.parse_args()

    import django

    django.setup()
    from training.dataset import read_jsonl as read_pairs

    started = time.monotonic()
    adapters = dict(item.split("=", 1) for item in args.adapters.split(","))
    pairs_by_key = {(p.book, p.k): p for p in read_pairs(args.dataset / "test.jsonl")}
    answers = {
        t: {(r["book"], r["k"]): r["text"] for r in read_jsonl(args.results / f"answers-{t}.jsonl")} for t in TARGETS
    }
    keys = [k for k in answers["base"] if all(k in answers[t] for t in TARGETS)]
    pairs = [pairs_by_key[k] for k in keys]
    scored = {t: score_target(pairs, answers[t], adapters.get(t)) for t in TARGETS}
    metrics = [*REWARDS, "repeat_share", "words", "real_chapter_ppl"]
    lower_better = {"repeat_share", "real_chapter_ppl"}
    table = {t: {m: mean(r[m] for r in scored[t]) for m in metrics} for t in TARGETS}
    better = {
        t: {
            m: sum(
                1
                for a, b in zip(scored[t], scored["base"], strict=True)
                if a[m] is not None
                and b[m] is not None
                and ((a[m] < b[m]) if m in lower_better else (a[m] > b[m]))
            )
            for m in metrics
        }
        for t in ("sft", "grpo")
    }
    judge = {
        name: json.loads((args.results / f"judge-{name}.json").read_text())
        for name in ("grpo-vs-base", "sft-vs-base", "grpo-vs-sft")
        if (args.results / f"judge-{name}.json").is_file()
    }
    sft = json.loads((args.results / "train-sft.json").read_text())
    grpo = json.loads((args.results / "train-grpo.json").read_text())
    distill = json.loads((args.results / "distill_summary.json").read_text())
    result = {"pairs": len(pairs), "table": table, "better_than_base": better, "judge": judge, "rows": scored}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))

    def fmt(value) -> str:
        return "—" if value is None else (f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}")

    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the writer trained for real "
        "(scripts/gpu/train_writer.sh, bench/writer_training.py)",
        "",
        f"Training on one NVIDIA H100 80GB (docs/gpu-logs/{args.results.parent.name}); scoring here: "
        + ", ".join(f"{k} {v}" for k, v in machine_info().items())
        + ".",
        "",
        f"- **Corpus**: gutenberg-classics, 319 training pairs (Emma, Mansfield Park, Persuasion, Pride and "
        f"Prejudice, Moby-Dick), {len(pairs_by_key)} held out (Northanger Abbey, Sense and Sensibility: whole "
        f"books never trained on); the first {len(pairs)} held-out pairs answered by each target.",
        (
            f"- **Distillation**: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, bf16 on vLLM) explained "
            f"{distill['done']} of {distill['pairs']} real next chapters in {distill['seconds']:.0f} s "
            f"({distill['failed']} refused; {distill['truncated']} stopped at 400 tokens, cut at a sentence by SFT)."
            if "reused" not in distill
            else f"- **Distillation**: reused (`distill --reuse`) from an earlier run's Qwen2.5-Coder-1.5B-Instruct "
            f"reasoning: {distill['splits']['train']['written']} of {distill['splits']['train']['rows']} training pairs."
        ),
        f"- **SFT**: TRL SFTTrainer + LoRA r=16 on SmolLM2-135M, {sft['rows_used']} rows, {sft['steps']} steps "
        f"({args.sft_epochs} epochs, lr 2e-4), loss {sft['step_logs'][0]['loss']:.3f} -> {sft['final_loss']:.3f}, "
        f"{sft['seconds']:.0f} s.",
        f"- **GRPO** from the SFT adapter: TRL + colocated vLLM, {grpo['steps']} steps x 2 prompts x 8 "
        f"completions of up to {args.max_new_tokens} tokens, lr 2e-5, rewards format, repetition, BLEU, ROUGE-1/L, VR-CLI; "
        f"{grpo['seconds']:.0f} s.",
        f"- **Answers**: one per held-out pair and target, seed 0, temperature 0.8, {args.max_new_tokens} new tokens "
        "for the reasoning and the chapter together, one call, no constrained decoding (the format measured is "
        "the model's own).",
        "",
        "| metric | " + " | ".join(LABELS[t] for t in TARGETS) + " | SFT better than base | SFT+GRPO better than base |",
        "|---|" + "---|" * (len(TARGETS) + 2),
    ]
    for m in metrics:
        arrow = " (lower is better)" if m in lower_better else ""
        lines.append(
            f"| {m}{arrow} | "
            + " | ".join(fmt(table[t][m]) for t in TARGETS)
            + f" | {better['sft'][m]} / {len(pairs)} | {better['grpo'][m]} / {len(pairs)} |"
        )
    lines.append("")
    for name, summary in judge.items():
        mode = summary.get("mode", "letters")
        ci = summary.get("ci95")
        rate = (
            f"win rate {summary['win_rate']:.1%} of the decisive pairs (95 % interval {ci[0]:.1%}-{ci[1]:.1%}), "
            f"{summary['win_rate_ties_half']:.1%} with ties as half"
            if summary.get("win_rate") is not None
            else "no decisive pair"
        )
        bias = (
            f"the first-shown letter had the higher probability in {summary['first_position_share']:.0%} of the "
            f"orders; mean preference {summary['mean_preference']:.4f}"
            if mode == "logprobs"
            else f"it named the candidate shown first in {summary['first_position_share']:.0%} of its answers"
        )
        lines.append(
            f"- Judge (Qwen 1.5B, both orders, {mode}) {name}: {summary['wins']} wins, {summary['losses']} losses, "
            f"{summary['ties']} ties, {summary['no_verdict']} without a verdict: {rate}; {bias}."
        )
    lines.append(f"\nScored in {time.monotonic() - started:.0f} s.\n")
    report = "\n".join(lines)
    print(report)
    if not args.no_report:
        append_report(args.report, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
