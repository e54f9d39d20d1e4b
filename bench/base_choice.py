"""Which base for the shipped writer: two answer files scored side by side on the held-out pairs both answered.

    .venv/bin/python bench/base_choice.py --dataset /tmp/corpus-ds \
        --answers "SmolLM2-135M + mesu-writer-v2=docs/gpu-logs/run11/results-79/answers-grpo.jsonl" \
        --answers "Qwen2.5-Coder-0.5B (base)=/tmp/run11/answers-q05.jsonl" [--note "..."]

Each file is what `evaluate_adapter --answers-out` writes (one JSON object a line: book, k, text). Every
reward of bench/writer_training.py but the real chapter's perplexity, which is only comparable between
targets that share a tokenizer; plus the share of repeated 4-grams and the words of the chapter. Paired:
on how many pairs the first target is better than the second. Appends a dated section to docs/benchmarks.md
(--note: a line of context, e.g. the speed measured for each).
"""

from __future__ import annotations

import argparse
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
from bench.writer_training import read_jsonl, score_target  # noqa: E402

# What the table shows (bench/writer_training.py scores every reward).
METRICS = (
    "format_exact",
    "bleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "meteor",
    "bertscore",
    "embedding_cosine",
    "repetition",
    "repeat_share",
    "words",
)
LOWER_IS_BETTER = {"repeat_share"}


def read_answers(path: Path) -> dict[tuple[str, int], str]:
    return {(r["book"], r["k"]): r["text"] for r in read_jsonl(path)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True, help="The build_dataset folder (test.jsonl).")
    parser.add_argument("--answers", action="append", required=True, help="LABEL=FILE, twice")
    parser.add_argument("--note", default="")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    if len(args.answers) != 2:
        parser.error("give --answers twice: LABEL=FILE for each target")

    import django

    django.setup()
    import torch

    from training.dataset import read_jsonl as read_pairs

    torch.set_num_threads(1)
    started = time.monotonic()
    targets = [item.split("=", 1) for item in args.answers]
    answers = {label: read_answers(Path(path)) for label, path in targets}
    labels = [label for label, _ in targets]
    pairs = [p for p in read_pairs(args.dataset / "test.jsonl") if all((p.book, p.k) in answers[t] for t in labels)]
    scored = {label: score_target(pairs, answers[label], None, perplexity=False) for label in labels}
    metrics = METRICS

    def mean(label: str, metric: str) -> float:
        values = [r[metric] for r in scored[label] if r[metric] is not None]
        return sum(values) / len(values)

    first, second = labels
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: the base of the shipped writer "
        "(bench/base_choice.py)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()) + ".",
        f"The {len(pairs)} held-out pairs (Northanger Abbey, Sense and Sensibility) both targets answered, "
        "one answer each, seed 0, 640 new tokens, no constrained decoding.",
        *([args.note] if args.note else []),
        "",
        f"| metric | {first} | {second} | {first} better |",
        "|---|---|---|---|",
    ]
    for m in metrics:
        better = sum(
            1
            for a, b in zip(scored[first], scored[second], strict=True)
            if a[m] is not None
            and b[m] is not None
            and ((a[m] < b[m]) if m in LOWER_IS_BETTER else (a[m] > b[m]))
        )
        arrow = " (lower is better)" if m in LOWER_IS_BETTER else ""
        lines.append(
            f"| {m}{arrow} | {mean(first, m):.3f} | {mean(second, m):.3f} | {better} / {len(pairs)} |"
        )
    lines.append(f"\nScored in {time.monotonic() - started:.0f} s.\n")
    report = "\n".join(lines)
    print(report)
    if not args.no_report:
        append_report(args.report, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
