from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from writer import preferences


class Command(BaseCommand):
    help = (
        "Write the preference dataset (readers' ratings and choices, authors' acceptances) as JSONL, one pair a "
        'line: {"prompt", "chosen", "rejected", "source", "writer"}. Prints {"path", "source", "pairs", '
        '"by_source", "by_writer", "skipped"}.'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--out", required=True, help="The .jsonl file to write (replaced if it exists).")
        parser.add_argument("--source", default="all", help="reader, author or all (default).")

    def handle(self, *args, **options) -> None:
        try:
            sources = preferences.parse_source(options["source"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        source = "all" if len(sources) > 1 else sources[0]
        out = Path(options["out"])
        if out.is_dir():
            raise CommandError(f"{out} is a folder; give the file to write.")
        if not out.parent.is_dir():
            raise CommandError(f"The folder {out.parent} does not exist.")
        skipped: Counter = Counter()
        partial = out.with_name(out.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8") as handle:
                counts = preferences.write_jsonl(preferences.preference_pairs(source=source, skipped=skipped), handle)
            os.replace(partial, out)  # a reader of `out` never sees half a file
        except ApplicationError as exc:
            partial.unlink(missing_ok=True)
            raise CommandError(exc.message) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        summary = {
            "path": str(out.resolve()),
            "source": source,
            "pairs": counts["pairs"],
            "by_source": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("source:")},
            "by_writer": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("writer:")},
            "skipped": dict(sorted(skipped.items())),
        }
        self.stdout.write(json.dumps(summary))
