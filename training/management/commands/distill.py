"""python manage.py distill --dataset DIR: a teacher's reasoning for every pair, printed as a JSON summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.distill import distill_dataset, reuse_reasoning
from training.teacher import ENGINES, TeacherSettings


class Command(BaseCommand):
    help = (
        "Ask a reasoning teacher (any OpenAI-compatible endpoint, e.g. Venice.AI's DeepSeek R1, the "
        "writer's vLLM server, or the local engine) WHY each pair's real next chapter is the way it is. "
        "Reads --dataset's train.jsonl/test.jsonl (made by build_dataset), writes <dataset>/distilled/ "
        "(or --out) with existing_chapters, output_chapter, reasoning and completion per row, caches "
        "every answer in <dataset>/distill_cache/ so a rerun resumes, and prints the summary as JSON. "
        "Defaults come from the TEACHER_* settings."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dataset", required=True, type=Path, help="A build_dataset output folder.")
        parser.add_argument(
            "--out", type=Path, default=None, help="Output folder (default <dataset>/distilled)."
        )
        parser.add_argument(
            "--engine", choices=ENGINES, default=None, help="openai (an HTTP endpoint) or local (in-process)."
        )
        parser.add_argument("--teacher-url", default=None, help="OpenAI-compatible API root ending in /v1.")
        parser.add_argument(
            "--teacher-model", default=None, help="The teacher's model name at that endpoint."
        )
        parser.add_argument(
            "--teacher-key-env",
            default=None,
            metavar="VAR",
            help="Read the API key from this environment variable (default: TEACHER_API_KEY). "
            "Keys are never taken on the command line, where other users and shell history see them.",
        )
        parser.add_argument("--limit", type=int, default=None, help="Distil at most N pairs (train first).")
        parser.add_argument("--concurrency", type=int, default=None, help="Pairs asked at the same time.")
        parser.add_argument(
            "--max-tokens", type=int, default=None, help="New tokens per answer (<think> included)."
        )
        parser.add_argument("--timeout", type=float, default=None, help="Seconds per teacher call.")
        parser.add_argument(
            "--max-retries", type=int, default=None, help="Retries of a timeout, 5xx or lost connection."
        )
        parser.add_argument(
            "--temperature", type=float, default=None, help="Sampling temperature (0 = greedy)."
        )
        parser.add_argument(
            "--reuse",
            type=Path,
            default=None,
            metavar="FILE",
            help="Ask no teacher: take each pair's reasoning from FILE (JSON lines of book, k, reasoning; "
            ".gz read as gzip), e.g. an earlier run's distilled-reasoning.jsonl.gz; rows it lacks are left out.",
        )
        parser.add_argument(
            "--reused-teacher", default="", help="With --reuse: the name of the teacher that wrote FILE."
        )

    def handle(self, *args, **options) -> None:
        dataset: Path = options["dataset"]
        if not dataset.is_dir():
            raise CommandError(f"No such dataset folder: {dataset}")
        if options["limit"] is not None and options["limit"] < 0:
            raise CommandError(f"--limit must not be negative, got {options['limit']}.")
        if options["reuse"] is not None:
            try:
                summary = reuse_reasoning(
                    dataset, options["reuse"], options["out"], teacher=options["reused_teacher"]
                )
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            self.stdout.write(json.dumps(summary, ensure_ascii=False))
            return
        overrides: dict[str, Any] = {
            "engine": options["engine"],
            "base_url": options["teacher_url"].rstrip("/") if options["teacher_url"] else None,
            "model": options["teacher_model"],
            "concurrency": options["concurrency"],
            "max_tokens": options["max_tokens"],
            "timeout": options["timeout"],
            "max_retries": options["max_retries"],
            "temperature": options["temperature"],
        }
        key_env = options["teacher_key_env"]
        if key_env:
            if key_env not in os.environ:
                raise CommandError(
                    f"--teacher-key-env {key_env}: that environment variable is not set (export it first)."
                )
            overrides["api_key"] = os.environ[key_env].strip()
        try:
            teacher = TeacherSettings.from_django(**overrides)
            summary = distill_dataset(
                dataset,
                options["out"],
                teacher=teacher,
                limit=options["limit"],
                on_progress=self._progress,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(summary, ensure_ascii=False))

    def _progress(self, p: dict[str, Any]) -> None:
        # To stderr: stdout carries only the JSON summary, for scripts. One line rewritten in place on
        # a terminal, one line per pair in a log.
        line = (
            f"distill: {p['finished']}/{p['total']} pairs ({p['done']} new, {p['cached']} cached, "
            f"{p['failed']} failed, {p['tokens']} tokens)"
        )
        if self.stderr.isatty():
            self.stderr.write("\r" + line, ending="\n" if p["finished"] >= p["total"] else "")
            self.stderr.flush()
        else:
            self.stderr.write(line)
