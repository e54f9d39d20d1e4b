"""python manage.py judge_pairs --dataset DIR --a FILE --b FILE: pairwise win rate of A over B by a judge."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.dataset import read_jsonl, write_rows
from training.judge import (
    CHAPTER_TOKENS,
    MODES,
    STORY_TOKENS,
    VERDICT_TOKENS,
    judge_engine,
    judge_pairs,
    matched_candidates,
    read_answers,
)

NAME_CHARS = 64  # JudgeComparison.target


class Command(BaseCommand):
    help = (
        "Ask a judge model, for every held-out pair both targets answered, which answer is closer to the "
        "real next chapter (plot, characters, voice), in both orders to cancel position bias. --a and "
        "--b are answers files ({book, k, text} a line: evaluate_adapter --answers-out). --mode logprobs "
        "(default) scores the letters A and B as the judge's first answer token and averages P(target) "
        "over both orders; --mode letters reads a generated letter. Prints JSON: the mode, pairs, wins, "
        "losses, ties, no_verdict, win_rate of A over B (over decisive pairs) and its 95% Wilson interval "
        "ci95, and diagnostics (mean_preference in logprobs mode, first_position_share). --record also "
        "keeps it for the leaderboard's pairwise judge table, as --a-name against --b-name."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dataset", required=True, type=Path, help="Folder with the pairs (build_dataset)."
        )
        parser.add_argument("--split", default="test", help="Which pairs file of the folder (default: test).")
        parser.add_argument("--a", required=True, type=Path, help="Answers of the target (JSONL).")
        parser.add_argument("--b", required=True, type=Path, help="Answers of the baseline (JSONL).")
        parser.add_argument("--limit", type=int, default=None, help="Judge at most this many pairs.")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="Questions asked at the same time (a vLLM server batches them; keep 1 for the local engine).",
        )
        parser.add_argument(
            "--engine", choices=("vllm", "local"), default=None, help="Default: JUDGE_ENGINE (the writer's)."
        )
        parser.add_argument(
            "--model",
            default=None,
            help="The judge: a served model name at JUDGE_BASE_URL (default JUDGE_MODEL), or a model "
            "folder for the local engine (default JUDGE_MODEL_PATH). JUDGE_* default to the writer's.",
        )
        parser.add_argument(
            "--mode",
            choices=MODES,
            default="logprobs",
            help="logprobs (default): the probabilities of A and B as the judge's first answer token, "
            "both orders averaged (needs a server or provider that returns log-probabilities); letters: "
            "the letter the judge writes, a win only when both orders name the target.",
        )
        parser.add_argument(
            "--story-tokens", type=int, default=STORY_TOKENS, help="Budget of the story so far."
        )
        parser.add_argument(
            "--chapter-tokens", type=int, default=CHAPTER_TOKENS, help="Budget of each chapter shown."
        )
        parser.add_argument(
            "--max-tokens", type=int, default=VERDICT_TOKENS, help="Of each judge answer (--mode letters)."
        )
        parser.add_argument(
            "--verdicts-out",
            type=Path,
            default=None,
            help="Write each pair's answers and outcome here (JSONL).",
        )
        parser.add_argument(
            "--record",
            action="store_true",
            help="Also record the result as a judged comparison on the leaderboard (replacing the same "
            "comparison of the same answers files).",
        )
        parser.add_argument(
            "--a-name", default=None, help="The target's name when recorded (default: --a's stem, less 'answers-')."
        )
        parser.add_argument(
            "--b-name", default=None, help="The baseline's name when recorded (default: --b's stem, less 'answers-')."
        )
        parser.add_argument(
            "--dataset-name",
            default=None,
            help="The leaderboard's dataset when recorded (default: the --dataset folder, as evaluations name it).",
        )

    def handle(self, *args, **options) -> None:
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        names = {"a": options["a_name"], "b": options["b_name"], "dataset": options["dataset_name"]}
        if not options["record"] and any(v is not None for v in names.values()):
            raise CommandError("--a-name, --b-name and --dataset-name name a recorded comparison: add --record.")
        if options["record"]:
            names["a"] = (names["a"] or answers_name(options["a"])).strip()
            names["b"] = (names["b"] or answers_name(options["b"])).strip()
            for which in ("a", "b"):
                if not names[which] or len(names[which]) > NAME_CHARS:
                    raise CommandError(f"--{which}-name must be 1 to {NAME_CHARS} characters.")
        path = options["dataset"] / f"{options['split']}.jsonl"
        if not path.is_file():
            raise CommandError(
                f"No {path.name} in {options['dataset']}: build the dataset first (build_dataset)."
            )
        try:
            engine = judge_engine(engine=options["engine"], model=options["model"])
            pairs, a, b = matched_candidates(
                read_jsonl(path), read_answers(options["a"]), read_answers(options["b"])
            )
            total = len(pairs)
            if options["limit"] is not None:
                pairs, a, b = pairs[: options["limit"]], a[: options["limit"]], b[: options["limit"]]
            if not pairs:
                raise CommandError(
                    f"No pair of {path} is answered in both {options['a']} and {options['b']}."
                )
            self.stderr.write(
                f"Judging {len(pairs)} of {total} pair(s) answered by both (two questions each, "
                f"mode {options['mode']})..."
            )
            result = judge_pairs(
                pairs,
                a,
                b,
                engine,
                mode=options["mode"],
                story_tokens=options["story_tokens"],
                chapter_tokens=options["chapter_tokens"],
                max_tokens=options["max_tokens"],
                concurrency=options["concurrency"],
                on_pair=lambda done, record: self.stderr.write(
                    f"  {done}/{len(pairs)}: {record['outcome']}"
                    + (f" (preference {record['preference']:.3f})" if record.get("preference") is not None else "")
                ),
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["verdicts_out"] is not None:
            write_rows(result.verdicts, options["verdicts_out"])
        summary = {
            "mode": result.mode,
            **result.summary,
            "model": result.model,
            "seconds": round(result.seconds, 2),
        }
        self.stdout.write(json.dumps(summary))
        if options["record"]:
            from training.services import judge_comparison_record  # the database only when recording

            row = judge_comparison_record(
                dataset_dir=names["dataset"] or str(options["dataset"].resolve()),
                target=names["a"],
                baseline=names["b"],
                summary=summary,
                source=f"judge_pairs {result.mode}: {options['a'].resolve()} vs {options['b'].resolve()}",
            )
            self.stderr.write(f"Recorded {row.target} vs {row.baseline} on {row.dataset_dir} (comparison {row.pk}).")


def answers_name(path: Path) -> str:
    """The writer an answers file is of: its stem, less train_writer.sh's "answers-" (answers-grpo.jsonl: grpo)."""
    stem = path.stem
    return stem.removeprefix("answers-") or stem
