"""run12's scores-cpu.json: bench/writer_training.py's scoring (score_target: every reward, METEOR,
BERTScore, embedding cosine, the real next chapter's perplexity, words, repeated 4-grams) of one stage's
seed-0 answers, on this CPU, in the schema of `bench/writer_training.py --json`.

run12 has no SFT stage; its base and v2 answers (answers-base.jsonl, answers-v2.jsonl) are run11's,
byte for byte (run11 results-79 answers-base.jsonl, answers-grpo.jsonl), so their rows are taken from
run11's scores-cpu.json ("base", and "grpo" as "v2") instead of being scored again; --check N
--v2-adapter DIR scores the first N pairs of v2 again and stops if they differ (run12a's scoring did, with
N = 2: the same to the third decimal).

    nice -n 5 .venv/bin/python docs/gpu-logs/run12/score_cpu.py --results docs/gpu-logs/run12/run12b/results \
        --dataset /tmp/corpus-ds --adapter /tmp/run12b-adapter --json docs/gpu-logs/run12/run12b/scores-cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench import writer_training as w  # noqa: E402  (sets the Django settings, HF_HUB_OFFLINE)

RUN11 = ROOT / "docs" / "gpu-logs" / "run11" / "results-79"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="The build_dataset folder (test.jsonl).")
    parser.add_argument("--adapter", required=True, help="The stage's LoRA folder.")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--check", type=int, default=0, help="v2 pairs scored again against run11's rows.")
    parser.add_argument(
        "--v2-adapter", default=None, help="mesu-writer-v2's folder (git history), for --check."
    )
    args = parser.parse_args()
    if args.check and not args.v2_adapter:
        parser.error("--check needs --v2-adapter")

    import django

    django.setup()
    from training.dataset import read_jsonl as read_pairs

    started = time.monotonic()
    for mine, theirs in (
        ("answers-base.jsonl", "answers-base.jsonl"),
        ("answers-v2.jsonl", "answers-grpo.jsonl"),
    ):
        if (args.results / mine).read_bytes() != (RUN11 / theirs).read_bytes():
            raise SystemExit(f"{mine} is not run11's {theirs}: score it again with bench/writer_training.py.")
    run11 = json.loads((RUN11 / "scores-cpu.json").read_text())
    reused = {"base": run11["rows"]["base"], "v2": run11["rows"]["grpo"]}
    pairs_by_key = {(p.book, p.k): p for p in read_pairs(args.dataset / "test.jsonl")}
    keys = [(r["book"], r["k"]) for r in reused["base"]]
    pairs = [pairs_by_key[k] for k in keys]
    if args.check:
        v2_answers = {(r["book"], r["k"]): r["text"] for r in w.read_jsonl(args.results / "answers-v2.jsonl")}
        again = w.score_target(pairs[: args.check], v2_answers, args.v2_adapter)
        for new, old in zip(again, reused["v2"], strict=False):
            for m, v in new.items():
                if isinstance(v, float) and not math.isclose(v, old[m], rel_tol=1e-3, abs_tol=1e-3):
                    raise SystemExit(
                        f"v2 {new['book']} {new['k']} {m}: {v} here, {old[m]} in run11: not reusable."
                    )
        print(f"v2 scored again on {len(again)} pair(s): the same as run11's rows.", flush=True)
    answers = {(r["book"], r["k"]): r["text"] for r in w.read_jsonl(args.results / "answers-grpo.jsonl")}
    scored = {**reused, "grpo": w.score_target(pairs, answers, args.adapter)}
    metrics = [*w.REWARDS, "repeat_share", "words", "real_chapter_ppl"]
    lower_better = {"repeat_share", "real_chapter_ppl"}
    table = {t: {m: w.mean(r[m] for r in rows) for m in metrics} for t, rows in scored.items()}
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
        for t in ("v2", "grpo")
    }
    judge = {
        path.name[len("judge-") : -len(".json")]: json.loads(path.read_text())
        for path in sorted(args.results.glob("judge-*.json"))
    }
    result = {
        "pairs": len(pairs),
        "table": table,
        "better_than_base": better,
        "judge": judge,
        "rows": scored,
        "note": "base and v2 rows: run11 results-79 scores-cpu.json (the same answers); grpo scored here.",
        "seconds": round(time.monotonic() - started),
    }
    args.json.write_text(json.dumps(result, indent=2))
    for m in metrics:
        print(
            f"{m:18s}" + "".join(f"{table[t][m]:>10.3f}" for t in ("base", "v2", "grpo")),
            f"  {better['grpo'][m]}/{len(pairs)}",
        )
    print(f"Scored in {result['seconds']} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
