"""Benchmark: seconds per GRPO step on this CPU, and the share of each step spent in each reward.

    nice .venv/bin/python bench/grpo_cpu.py [--steps 4] [--generations 4] [--completion-tokens 64]
                                            [--rank 16] [--budget-tokens 960] [--no-report]

The project's own path end to end: the shipped samples are imported into a temporary book library
(`training.library`), `training.dataset.build_dataset` makes the pairs (every book in train), and
`training.trainer.run_grpo` trains SmolLM2-135M with a LoRA, with a `GRPOJobConfig` that is the
default job's except for the sizes a 2-core box can run (stated in the report) and EVERY reward of
the registry (`training.rewards.REWARDS`, the default weights). Each reward callable is wrapped in a
timer and passed through run_grpo's `reward_funcs` (the wrapper keeps the function's name, so TRL
logs the same metrics); calls are attributed to the step whose on_step report follows them.

Reported per step: wall seconds (as the trainer's progress callback measures a step), seconds in
each reward and their share of the step. The first step is reported apart: it pays for loading the
reward models (BERTScore's and the embedding cosine's MiniLM, the perplexity model, WordNet), and
the time before it (model load, dataset, trainer set-up) is listed as a one-off cost. After the run,
each reward is timed again on the last step's completions with everything loaded (best of 3), which
isolates it from the trainer's noise on a busy machine. Goal: rewards <= 10 % of a step.

A CPU step is slow enough that almost anything is 10 % of it; the rewards matter on the GPU box,
which runs the seed's job (8 generations x 1024 tokens, 4 prompts per step = 32 completions) while
the rewards still run on its CPU. So the rewards are also timed alone at that shape (32 completions
of 1024 tokens of real prose, in the answer format, each against a reference of more than 2 x its
words, so the reference cut is as long as the reward code allows), which tells how long a step must
be for them to stay within 10 %.

torch runs on 1 thread (as the trainer and the rewards do on CPU); the load average is recorded at
the start and the end because other work may be running on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from report import append_report  # noqa: E402 (bench/report.py: this script's folder is on sys.path)
from report import machine_info as base_machine_info  # noqa: E402

GOAL_SHARE = 0.10  # rewards may take at most 10 % of a step
SAMPLES = ROOT / "samples"


def machine_info() -> dict[str, str]:
    import importlib.metadata

    import torch

    info = {**base_machine_info(), "torch": torch.__version__}
    for name in ("transformers", "trl", "peft"):
        info[name] = importlib.metadata.version(name)
    return info


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


class RewardTimer:
    """Wraps reward functions; records (function, seconds, completions) per call, grouped by step."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, float, int]] = []
        self.by_step: dict[int, list[tuple[str, float, int]]] = {}
        self.last_call: dict[str, tuple[tuple, dict]] = {}

    def wrap(self, name: str, func):
        @functools.wraps(func)  # TRL names its metrics after __name__: rewards/<name>/mean as before
        def timed(*args: Any, **kwargs: Any):
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                completions = args[0] if args else kwargs.get("completions", [])
                self.pending.append((name, seconds, len(completions)))
                self.last_call[name] = (args, kwargs)

        return timed

    def close_step(self, step: int) -> None:
        self.by_step[step] = self.pending
        self.pending = []


def build_bench_dataset(work: Path, model_dir: Path, budget_tokens: int) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from training.dataset import build_dataset
    from training.library import book_files, import_book_file

    files, _ = book_files([SAMPLES])  # the sample books, not samples/README.md
    library = work / "books"
    for path in files:
        import_book_file(path, library_dir=library)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    # Every pair in train: the bench needs prompts, not a held-out split.
    return build_dataset(
        books_dir=library,
        out_dir=work / "dataset",
        count_tokens=count,
        budget_tokens=budget_tokens,
        test_fraction=0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (the first is reported apart)")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (GRPO group)")
    parser.add_argument("--completion-tokens", type=int, default=64, help="max_completion_length")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = rank)")
    parser.add_argument(
        "--budget-tokens",
        type=int,
        default=960,
        help="prompt budget of the dataset (the writer's rule trims chapters to it); it must stay under "
        "--max-prompt-length with the chat template's tokens",
    )
    parser.add_argument("--max-prompt-length", type=int, default=1024)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "models" / "smollm2")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-report", action="store_true", help="print the section, do not append it")
    parser.add_argument(
        "--seed-completions",
        type=int,
        default=32,
        help="completions per step of the seed's job (8 x 4 prompts)",
    )
    parser.add_argument(
        "--seed-completion-tokens", type=int, default=1024, help="the seed's max_completion_length"
    )
    args = parser.parse_args()

    load_start = load_average()
    started_at = dt.datetime.now().astimezone()
    t0 = time.perf_counter()

    import torch

    torch.set_num_threads(1)  # as the trainer and the rewards do on CPU (2 threads measured slower here)

    from training import rewards
    from training.config import GRPOJobConfig
    from training.trainer import run_grpo
    from writer.model_files import prepare_model

    info = machine_info()
    print("machine:", info, "load average:", load_start, flush=True)
    model_dir = prepare_model(args.model_dir)
    names = list(rewards.REWARDS)
    weights = [float(rewards.DEFAULT_WEIGHTS[n]) for n in names]
    config = GRPOJobConfig(
        base_model=str(model_dir),
        backend="trl",
        device="cpu",
        lora_rank=args.rank,
        num_generations=args.generations,
        gradient_accumulation_steps=1,  # one prompt's group per step: args.generations completions
        max_completion_length=args.completion_tokens,
        max_prompt_length=args.max_prompt_length,
        max_steps=args.steps,
        learning_rate=1e-5,
        warmup_ratio=0.0,
        save_steps=10_000,  # no checkpoint inside the timed steps
        reward_names=names,
        reward_weights=weights,
        report_to="none",
    )
    timer = RewardTimer()
    funcs = [timer.wrap(n, f) for n, f in zip(names, rewards.get_reward_funcs(names), strict=True)]

    work = Path(tempfile.mkdtemp(prefix="mesu-bench-grpo-"))
    steps: list[dict[str, Any]] = []
    marks: list[float] = []
    try:
        t_data = time.perf_counter()
        dataset = build_bench_dataset(work, model_dir, args.budget_tokens)
        dataset_seconds = time.perf_counter() - t_data
        print(f"dataset: {dataset['train']} pairs ({dataset_seconds:.1f} s)", flush=True)

        def on_step(entry: dict) -> None:
            marks.append(time.perf_counter())
            timer.close_step(entry["step"])
            steps.append(entry)
            spent = sum(s for _, s, _ in timer.by_step[entry["step"]])
            print(
                f"step {entry['step']}: {entry['seconds']:.1f} s, rewards {spent:.2f} s, "
                f"reward {entry['reward']}, completion length {entry['completion_length']}",
                flush=True,
            )

        t_run = time.perf_counter()
        result = run_grpo(
            config=config,
            dataset_dir=work / "dataset",
            out_dir=work / "run",
            on_step=on_step,
            reward_funcs=funcs,
            resume=False,
        )
        run_seconds = time.perf_counter() - t_run
        isolated = time_rewards_alone(timer, names)
        seed_shape = time_rewards_at_seed_shape(
            model_dir, names, completions=args.seed_completions, tokens=args.seed_completion_tokens
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load_end = load_average()
    report = render(
        info=info,
        config=config,
        args=args,
        dataset=dataset,
        steps=steps,
        timer=timer,
        names=names,
        isolated=isolated,
        seed_shape=seed_shape,
        setup_seconds=(marks[0] - t_run - steps[0]["seconds"]) if steps else 0.0,
        run_seconds=run_seconds,
        dataset_seconds=dataset_seconds,
        result=result,
        load_start=load_start,
        load_end=load_end,
        started_at=started_at,
        total_seconds=time.perf_counter() - t0,
    )
    print()
    print(report)
    if not args.no_report:
        append_report(args.out, report)
        print(f"appended to {args.out}")


def time_rewards_alone(timer: RewardTimer, names: list[str], repeats: int = 3) -> dict[str, float]:
    """Each reward on the last step's completions again, models loaded: the best of `repeats`."""
    from training import rewards

    out: dict[str, float] = {}
    for _ in range(repeats):
        # As in a step: new completions (empty caches), then every reward in order, so that rouge2 and
        # rougeL find the scores rouge1 computed and each parse is done once (as TRL calls them).
        _clear_step_caches()
        for name in names:
            if name not in timer.last_call:
                continue
            call_args, call_kwargs = timer.last_call[name]
            started = time.perf_counter()
            rewards.REWARDS[name](*call_args, **call_kwargs)
            out[name] = min(out.get(name, float("inf")), time.perf_counter() - started)
    return out


def _clear_step_caches() -> None:
    from training import rewards

    rewards.clear_step_caches()


def time_rewards_at_seed_shape(
    model_dir: Path, names: list[str], *, completions: int, tokens: int
) -> dict[str, Any]:
    """Each reward once on `completions` answers of `tokens` tokens, models loaded (the run loaded them).

    The answers are the sample books' prose in the writer's answer format; each one's reference is the
    other book's text after chapter 1 (about 2,000 words, more than the 2 x its words that a reward
    compares with), so every reward sees the longest inputs the seed's job gives it.

    Then the model rewards again with one cut of each reference for all its completions (2 x the mean
    answer's words, `reference_words_factor=None`): what they would cost if each prompt's reference
    were scored once instead of once per completion (each completion's cut is a different string)."""
    from transformers import AutoTokenizer

    from training import rewards
    from training.dataset import load_book_file
    from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    books = [load_book_file(p)[1] for p in sorted(SAMPLES.glob("*.txt")) + sorted(SAMPLES.glob("*.md"))
             if p.stem.lower() != "readme"]  # fmt: skip
    texts = ["\n\n".join(c.text for c in chapters) for chapters in books]
    refs = ["\n\n".join(c.text for c in chapters[1:]) for chapters in books]
    rows, answers = [], []
    for i in range(completions):
        book = i % len(texts)
        ids = tokenizer(texts[book], add_special_tokens=False)["input_ids"]
        start = (i // len(texts)) * 97 % max(1, len(ids) - tokens)  # a different stretch for each answer
        plan = f"{REASONING_START}Keep the voice; move the plot on; end on an open question.{REASONING_END}"
        room = tokens - len(
            tokenizer(plan + SOLUTION_START + SOLUTION_END, add_special_tokens=False)["input_ids"]
        )
        body = tokenizer.decode(ids[start : start + room])
        rows.append([{"role": "assistant", "content": f"{plan}{SOLUTION_START}{body}{SOLUTION_END}"}])
        answers.append(refs[(book + 1) % len(refs)])
    kwargs = {"answer": answers, "book": ["bench"] * completions, "k": [1] * completions}
    words = statistics.mean(len(rewards.solution_text(r).split()) for r in rows)
    out: dict[str, Any] = {"completions": completions, "tokens": tokens, "words": words,
                           "reference_words": statistics.mean(len(a.split()) for a in answers), "seconds": {}}  # fmt: skip
    _clear_step_caches()  # then every reward in order, as in one step
    for name in names:
        started = time.perf_counter()
        rewards.REWARDS[name](rows, **kwargs)
        out["seconds"][name] = time.perf_counter() - started
        print(f"seed shape: {name} {out['seconds'][name]:.2f} s", flush=True)

    model_rewards = [n for n in names if n in rewards.MODEL_REWARDS]
    previous = rewards.get_settings().reference_words_factor
    out["shared_reference"] = {}
    # One cut per reference, as long as a typical answer's (2 x the mean words), shared by its completions.
    typical = " ".join(["word"] * round(words))
    shared_kwargs = dict(kwargs, answer=[rewards.reference_for(typical, a) for a in answers])
    try:
        rewards.configure(reference_words_factor=None)  # also forgets the models: load them untimed
        for name in model_rewards:
            rewards.REWARDS[name](rows[:1], answer=answers[:1])
        _clear_step_caches()
        for name in model_rewards:
            started = time.perf_counter()
            rewards.REWARDS[name](rows, **shared_kwargs)
            out["shared_reference"][name] = time.perf_counter() - started
            print(
                f"seed shape, one reference per prompt: {name} {out['shared_reference'][name]:.2f} s",
                flush=True,
            )
    finally:
        rewards.configure(reference_words_factor=previous)
    return out


def _seed_shape_reading(seed: dict[str, float], shared: dict[str, float], shape: dict[str, Any]) -> list[str]:
    """What the seed-shape numbers mean, and what would bring the rewards under the goal."""
    from training import rewards

    total = sum(seed.values())
    model = {n: s for n, s in seed.items() if n in rewards.MODEL_REWARDS}
    model_total = sum(model.values())
    settings = rewards.get_settings()
    ranked = sorted(seed.items(), key=lambda x: -x[1])
    lines = [
        f"- At the seed's shape the rewards take **{total:.1f} s per step** on one core: within the "
        f"{100 * GOAL_SHARE:.0f} % goal only where a step takes at least **{total / GOAL_SHARE:.0f} s**. A "
        "seed-shaped step on a GPU is far shorter (not measured here: this machine has no GPU), so there these "
        f"CPU rewards are over budget by nearly all of their {total:.0f} s. Each reward alone fits 10 % only of "
        "a step of at least: "
        + ", ".join(f"{n} {s / GOAL_SHARE:.0f} s" for n, s in ranked if s >= 0.01 * total)
        + f" (the rest: {sum(s for _, s in ranked if s < 0.01 * total):.1f} s together).",
        f"- Run the model rewards on the GPU (`REWARD_DEVICE=cuda`, `RewardSettings.device`): perplexity, "
        f"embedding_cosine and bertscore are {model_total:.1f} s of the {total:.1f} s, all forward passes of "
        "small models (SmolLM2-135M in bfloat16, MiniLM-L6) that a GPU does in a fraction of a second at this size.",
    ]
    if shared:
        saved = {n: model[n] - shared[n] for n in shared if n in model}
        lines.append(
            "- Score each prompt's reference once: every completion gets its own cut of the reference (2 x its "
            f"words), so the {shape['completions']} completions make {shape['completions']} different reference "
            "strings, and the model rewards run each of them; perplexity reads only the first "
            f"{settings.perplexity_max_tokens} tokens and BERTScore the first 512 word pieces, so for them the cuts "
            "are the same input. With one reference per prompt (measured: one cut of each reference, 2 x the "
            "mean answer's words, for all its completions): "
            + ", ".join(f"{n} {seed[n]:.1f} -> {shared[n]:.1f} s" for n in shared)
            + f"; {sum(s for s in saved.values() if s > 0):.1f} s saved on one core. To keep the scores exact, "
            f"cache the reference's perplexity by its first {settings.perplexity_max_tokens} tokens (the same for "
            "every cut of an answer over ~130 words), and the embeddings and BERTScore's reference encodings by "
            "text (chunk text for the embeddings), so that each prompt's reference is encoded once."
        )
    if "rouge1" in seed:
        lines.append(
            f"- rouge1 ({seed['rouge1']:.1f} s) computes ROUGE-1, -2 and -L of each pair at once (rouge2 and "
            "rougeL then read the cache), tokenising and stemming each distinct word once and computing ROUGE-L's "
            f"longest common subsequence bit-parallel ({shape['words']:.0f} x ~{2 * shape['words']:.0f} words per "
            "pair; rouge-score's own pure-Python table was 15-50x slower, same numbers)."
        )
    lines.append(
        f"- Smaller levers, not measured here: BERTScore and the embedding batch sizes "
        f"({settings.bertscore_batch_size}, {settings.embedding_batch_size}); `RewardSettings.threads` (1, chosen for this "
        "busy 2-core box) could be raised on a GPU box's many cores for the model rewards left on the CPU."
    )
    return lines


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def render(
    *,
    info: dict[str, str],
    config,
    args,
    dataset: dict[str, Any],
    steps: list[dict[str, Any]],
    timer: RewardTimer,
    names: list[str],
    isolated: dict[str, float],
    seed_shape: dict[str, Any],
    setup_seconds: float,
    run_seconds: float,
    dataset_seconds: float,
    result,
    load_start: str,
    load_end: str,
    started_at: dt.datetime,
    total_seconds: float,
) -> str:
    when = started_at.strftime("%Y-%m-%d %H:%M %Z")
    completions = config.completions_per_step
    lines = [
        f"## {when}: GRPO on CPU, seconds per step and the rewards' share",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + f"; torch threads 1. Load average "
        f"(1/5/15 min) {load_start} at the start, {load_end} at the end (other work was running).",
        f"Job: `training.trainer.run_grpo`, backend {result.backend}, device {result.device}, SmolLM2-135M-Instruct "
        f"(float32), LoRA r={config.lora_rank} alpha={config.effective_lora_alpha} on "
        f"{', '.join(config.target_modules)}; {config.num_generations} generations x "
        f"{config.max_completion_length} tokens of 1 prompt per step ({completions} completions, gradient "
        f"accumulation {config.gradient_accumulation_steps}), {config.max_steps} steps, loss {config.loss_type}, "
        f"beta {config.beta}, gradient checkpointing {'on' if config.gradient_checkpointing else 'off'}, "
        f"optimizer {config.resolved(cuda=False, backend='trl').optim}. The seed's job is r=64, 8 generations x "
        f"1024 tokens, 4 prompts per step.",
        f"Data: the two sample books imported with `training.library`, `build_dataset` with a prompt budget of "
        f"{args.budget_tokens} tokens (max_prompt_length {config.max_prompt_length}): {dataset['train']} pairs, "
        f"{dataset['trimmed']} trimmed to the budget; {result.prompts_used} prompts used. Rewards: all "
        f"{len(names)} of the registry with the default weights ({', '.join(names)}); brand_subtlety is None "
        "on these rows (no brand brief), so it only costs its call.",
        "",
    ]
    header = "| step | step s | rewards s | rewards share | " + " | ".join(names) + " |"
    lines += [header, "|" + "---|" * (4 + len(names))]
    per_step_total: dict[int, float] = {}
    for entry in steps:
        calls = timer.by_step.get(entry["step"], [])
        per = defaultdict(float)
        for name, seconds, _ in calls:
            per[name] += seconds
        total = sum(per.values())
        per_step_total[entry["step"]] = total
        label = f"{entry['step']}" + (" (first)" if entry is steps[0] else "")
        lines.append(
            f"| {label} | {entry['seconds']:.1f} | {total:.2f} | {_pct(total, entry['seconds'])} | "
            + " | ".join(f"{per[n]:.3f}" for n in names)
            + " |"
        )
    lines.append("")

    later = steps[1:] or steps
    mean_step = statistics.mean(e["seconds"] for e in later)
    mean_per = {
        n: statistics.mean(
            sum(s for name, s, _ in timer.by_step.get(e["step"], []) if name == n) for e in later
        )
        for n in names
    }
    mean_rewards = sum(mean_per.values())
    share = mean_rewards / mean_step if mean_step else 0.0
    lines += [
        f"| reward | mean s/step (steps 2-{len(steps)}) | share of a step | alone, models loaded (best of 3) | first step s |",
        "|---|---|---|---|---|",
    ]
    first_calls = timer.by_step.get(steps[0]["step"], []) if steps else []
    for n in sorted(names, key=lambda n: -mean_per[n]):
        first = sum(s for name, s, _ in first_calls if name == n)
        alone = f"{isolated[n]:.3f}" if n in isolated else "-"
        lines.append(f"| {n} | {mean_per[n]:.3f} | {_pct(mean_per[n], mean_step)} | {alone} | {first:.2f} |")
    lines += [
        f"| **all rewards** | **{mean_rewards:.3f}** | **{_pct(mean_rewards, mean_step)}** | "
        f"{sum(isolated.values()):.3f} | {sum(s for _, s, _ in first_calls):.2f} |",
        "",
        "| one-off cost | seconds |",
        "|---|---|",
        f"| importing the samples and building the dataset (tokenizer included) | {dataset_seconds:.1f} |",
        f"| run_grpo until the first step began (model load, LoRA, trainer set-up) | {setup_seconds:.1f} |",
        f"| first step (includes the reward models' first load) | {steps[0]['seconds']:.1f} |"
        if steps
        else "",
        f"| the whole run_grpo call (adapter save included) | {run_seconds:.1f} |",
        "",
    ]
    verdict = "met" if share <= GOAL_SHARE else "NOT met"
    lines.append(
        f"- Steps 2-{len(steps)}: **{mean_step:.1f} s/step**, of which rewards {mean_rewards:.2f} s = "
        f"**{100 * share:.1f} %**; goal (rewards <= {100 * GOAL_SHARE:.0f} % of a step): **{verdict}**."
    )
    budget = GOAL_SHARE * mean_step
    over = [(n, mean_per[n]) for n in names if mean_per[n] > budget]
    if share > GOAL_SHARE:
        lines.append(
            f"- Over by {mean_rewards - budget:.2f} s per step (budget {budget:.2f} s). "
            + (
                "Rewards alone over the whole budget: "
                + ", ".join(f"{n} {s:.2f} s ({s / budget:.1f}x)" for n, s in over)
                + "."
                if over
                else "No single reward is over the whole budget; together they are."
            )
        )
    top = sorted(names, key=lambda n: -mean_per[n])[:3]
    lines.append(
        f"- Largest: {', '.join(f'{n} {mean_per[n]:.2f} s ({_pct(mean_per[n], mean_step)})' for n in top)}. "
        f"Whole bench {total_seconds / 60:.1f} min."
    )

    # The seed's shape.
    seed = seed_shape["seconds"]
    seed_total = sum(seed.values())
    lines += [
        "",
        f"Rewards alone at the seed job's shape ({seed_shape['completions']} completions of "
        f"{seed_shape['tokens']} tokens = 8 generations x 4 prompts, {seed_shape['words']:.0f} words of chapter "
        f"text each, references of {seed_shape['reference_words']:.0f} words cut by the reward code to 2 x the "
        "answer's words), models loaded, 1 thread:",
        "",
        "| reward | seconds per step | share of the rewards | one reference per prompt (what-if) |",
        "|---|---|---|---|",
    ]
    shared = seed_shape.get("shared_reference", {})
    for n in sorted(seed, key=lambda n: -seed[n]):
        what_if = f"{shared[n]:.2f}" if n in shared else ""
        lines.append(f"| {n} | {seed[n]:.2f} | {_pct(seed[n], seed_total)} | {what_if} |")
    lines += [f"| **all rewards** | **{seed_total:.1f}** | 100 % | |", ""]
    lines += _seed_shape_reading(seed, shared, seed_shape)
    return "\n".join(line for line in lines if line is not None) + "\n"


if __name__ == "__main__":
    main()
