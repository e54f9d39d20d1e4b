"""python manage.py build_dataset --books DIR --out DIR: training pairs from books, printed as JSON counts."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.dataset import DEFAULT_MAX_ANSWER_CHARS, build_dataset
from training.services import serving_prompt_budget, serving_token_counter


class Command(BaseCommand):
    help = (
        "Build GRPO training pairs {chapter 0 + chapters 1..k -> chapter k+1} from every .txt/.md/.epub "
        "book in --books, split 70/30 by book (seeded), and write train.jsonl, test.jsonl and split.json "
        'to --out. Prints JSON: {"train": n, "test": n, "skipped": n, "trimmed": n, "books": {...}}.'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--books", required=True, type=Path, help="Folder of books (.txt, .md, .epub).")
        parser.add_argument("--out", required=True, type=Path, help="Output folder for the JSONL files.")
        parser.add_argument(
            "--test-fraction", type=float, default=0.3, help="Share of BOOKS held out for test (default 0.3)."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the book split (default 0).")
        parser.add_argument(
            "--budget-tokens",
            type=int,
            default=None,
            help="Prompt budget in tokens (default: the writer's, WRITER_CONTEXT_TOKENS - "
            "WRITER_MAX_NEW_TOKENS - the chat template's margin).",
        )
        parser.add_argument(
            "--max-answer-chars",
            type=int,
            default=DEFAULT_MAX_ANSWER_CHARS,
            help=f"Skip pairs whose answer chapter is longer (default {DEFAULT_MAX_ANSWER_CHARS:,}).",
        )

    def handle(self, *args, **options) -> None:
        budget = options["budget_tokens"]
        if budget is None:
            # The same budget the writer gives a prompt, so training prompts match served ones.
            budget = serving_prompt_budget()
        if budget < 1:
            raise CommandError(f"--budget-tokens must be positive, got {budget}.")
        try:
            result = build_dataset(
                books_dir=options["books"],
                out_dir=options["out"],
                count_tokens=serving_token_counter(),
                budget_tokens=budget,
                test_fraction=options["test_fraction"],
                seed=options["seed"],
                max_answer_chars=options["max_answer_chars"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result, ensure_ascii=False))
