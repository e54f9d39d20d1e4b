"""python manage.py evaluate_adapter --adapter NAME|base [...] --dataset DIR: score targets on the test split."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training import selectors
from training.dataset import write_rows
from training.evaluation import answer_rows
from training.rewards import REWARDS
from training.services import evaluation_run_create, evaluation_run_execute, evaluation_run_fail

BASE = "base"
# Every reward but the slowest model-based ones by default: a command-line check should take minutes.
DEFAULT_REWARDS = "format_exact,format_partial,bleu,rouge1,rouge2,rougeL,meteor,embedding_cosine"


class Command(BaseCommand):
    help = (
        "Generate the next chapter of every held-out pair (<dataset>/test.jsonl) with each target through "
        "the writer engine and score it with the rewards; each run lands on the leaderboard. Targets: "
        f"'{BASE}' (the base model) or the name of a registered adapter. Prints JSON, one entry per target."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--adapter",
            action="append",
            required=True,
            help=f"'{BASE}' or a registered adapter's name; repeat to compare several.",
        )
        parser.add_argument(
            "--dataset", required=True, type=Path, help="Folder with test.jsonl (build_dataset)."
        )
        parser.add_argument("--limit", type=int, default=None, help="Score at most this many pairs.")
        parser.add_argument(
            "--rewards", default=DEFAULT_REWARDS, help=f"Comma-separated; valid: {', '.join(REWARDS)}."
        )
        parser.add_argument(
            "--max-new-tokens", type=int, default=None, help="Per answer (default: the writer's)."
        )
        parser.add_argument("--engine", default=None, help="vllm or local (default: WRITER_ENGINE).")
        parser.add_argument("--seed", type=int, default=0, help="Sampling seed, the same for every target.")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="Answers asked at the same time (a vLLM server batches them; keep 1 for the local engine).",
        )
        parser.add_argument(
            "--answers-out",
            type=Path,
            default=None,
            help="Also write each whole answer to this JSONL ({book, k, text} a line), for judge_pairs "
            "--a/--b; one --adapter only. The run's samples keep the texts too.",
        )

    def handle(self, *args, **options) -> None:
        answers_out = options["answers_out"]
        if answers_out is not None and len(options["adapter"]) != 1:
            raise CommandError("--answers-out writes the answers of one target: give one --adapter.")
        results = []
        for target in options["adapter"]:
            adapter = None
            if target not in (BASE, settings.WRITER_MODEL):
                adapter = selectors.adapter_by_name(name=target)
                if adapter is None:
                    raise CommandError(f"No registered adapter called {target!r} (see the adapters page).")
            run = None
            try:
                run = evaluation_run_create(
                    user=None,
                    adapter=adapter,
                    dataset_dir=options["dataset"],
                    rewards=options["rewards"],
                    limit=options["limit"],
                    max_new_tokens=options["max_new_tokens"],
                    engine=options["engine"],
                    seed=options["seed"],
                    enqueue=False,
                )
                self.stderr.write(f"Evaluating {run.target_name} on {run.total} pair(s)...")
                run = evaluation_run_execute(
                    run_id=run.pk, keep_text=answers_out is not None, concurrency=options["concurrency"]
                )
                if answers_out is not None and run is not None:
                    written = write_rows(answer_rows(run.samples), answers_out)
                    self.stderr.write(f"Wrote {written} answer(s) to {answers_out}.")
            except ApplicationError as exc:
                if run is not None:
                    evaluation_run_fail(run_id=run.pk, error=exc.message)
                raise CommandError(exc.message) from exc
            results.append(
                {
                    "run": run.pk,
                    "target": run.target_name,
                    "pairs": run.done,
                    "metrics": run.metrics,
                    "format_ok": run.format_ok,
                    "tokens": run.tokens,
                    "seconds": round(run.seconds, 2),
                }
            )
        self.stdout.write(json.dumps(results, indent=2))
