"""python manage.py build_dataset --books DIR --out DIR: training pairs from books, printed as JSON counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.dataset import DEFAULT_MAX_ANSWER_CHARS, build_dataset
from writer.model_files import is_model_folder
from writer.services import PROMPT_SAFETY_TOKENS


def serving_token_counter() -> Callable[[str], int]:
    """The writer's tokenizer, without the model: WRITER_TOKENIZER_PATH's tokenizer files when there
    are some, else the local engine's count_tokens (which reads the packaged GGUF's tokenizer)."""
    folder = Path(settings.WRITER_TOKENIZER_PATH)
    if (folder / "tokenizer.json").is_file() or is_model_folder(folder):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

        return count
    from writer.engines import get_engine

    return get_engine("local").count_tokens


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
            budget = settings.WRITER_CONTEXT_TOKENS - settings.WRITER_MAX_NEW_TOKENS - PROMPT_SAFETY_TOKENS
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
