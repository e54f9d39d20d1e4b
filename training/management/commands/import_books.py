"""python manage.py import_books [FILE_OR_FOLDER...] [--corpus gutenberg-classics] [--library DIR]: books
into the training library.

Prints JSON: {"library": dir, "imported": n, "skipped": n, "failed": n, "books": [...]}, one entry per
file: {"file", "status": "imported" | "skipped" | "failed", and the book's fields, or "reason"}.

Exit status: 0 when every book file was imported or deliberately skipped (a README, a file that is not
a book, a book the library already has without --overwrite); 1 when any file failed (bad input: empty,
binary, undecodable, a broken EPUB, over the size limit) or no book file was given at all. Every file
is tried either way: one bad book never stops the others, and the JSON always lists them all.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.corpus import CORPORA, import_corpus
from training.dataset import BOOK_MAX_BYTES
from training.library import BookExistsError, book_files, import_book_file
from writer.book_import import BOOK_SUFFIXES


def default_library_dir() -> Path:
    # settings.TRAINING_BOOKS_DIR (MESU_VAR_DIR/books unless set); VAR_DIR/books where it is not defined.
    return Path(getattr(settings, "TRAINING_BOOKS_DIR", Path(settings.VAR_DIR) / "books"))


class Command(BaseCommand):
    help = (
        f"Import books ({', '.join(BOOK_SUFFIXES)}) into the training-book library as normalised markdown "
        "(chapter 0: title, author, date, version, summary), one <slug>.md per book, for build_dataset "
        "--books <library>. Folders give their book files (README/LICENSE files skipped). Prints JSON with "
        "one result per file; exits 1 if any file failed, after trying them all."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # --version is the book's version here; Django's own --version (its release) gives way to it.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="*", type=Path, help="Book files and/or folders of books.")
        parser.add_argument(
            "--corpus",
            choices=sorted(CORPORA),
            default=None,
            help="Also import a named corpus of public-domain novels from Debian's packages "
            "(gutenberg-classics: Austen's six novels and Moby-Dick; training/corpus.py).",
        )
        parser.add_argument(
            "--library",
            type=Path,
            default=None,
            help="The library folder (default: settings.TRAINING_BOOKS_DIR).",
        )
        parser.add_argument("--title", default=None, help="The book's title (one book only).")
        parser.add_argument(
            "--author", default=None, help="Author, for every book imported (replaces the book's)."
        )
        parser.add_argument("--date", default=None, help="Date, for every book imported.")
        parser.add_argument(
            "--version",
            "--book-version",
            dest="book_version",
            default=None,
            help="Version, for every book imported.",
        )
        parser.add_argument("--summary", default=None, help="Summary (one book only).")
        parser.add_argument(
            "--overwrite", action="store_true", help="Replace a book the library already has."
        )
        parser.add_argument(
            "--max-bytes",
            type=int,
            default=None,
            help=f"The largest book file accepted (default: settings.TRAINING_BOOK_MAX_BYTES, else {BOOK_MAX_BYTES:,}).",
        )

    def handle(self, *args, **options) -> None:
        library = options["library"] or default_library_dir()
        files, skipped = book_files(options["paths"])
        if (options["title"] is not None or options["summary"] is not None) and len(files) != 1:
            raise CommandError(
                f"--title and --summary describe one book, but {len(files)} book files were given."
            )
        max_bytes = options["max_bytes"]
        if max_bytes is None:
            max_bytes = getattr(settings, "TRAINING_BOOK_MAX_BYTES", BOOK_MAX_BYTES)
        if max_bytes < 1:
            raise CommandError("--max-bytes must be positive.")
        results: list[dict] = [
            {"file": str(path), "status": "skipped", "reason": reason} for path, reason in skipped
        ]
        for path in files:
            try:
                book = import_book_file(
                    path,
                    library_dir=library,
                    title=options["title"],
                    author=options["author"],
                    date=options["date"],
                    version=options["book_version"],
                    summary=options["summary"],
                    overwrite=options["overwrite"],
                    max_bytes=max_bytes,
                )
            except BookExistsError as exc:
                results.append({"file": str(path), "status": "skipped", "reason": exc.message})
            except ApplicationError as exc:
                results.append({"file": str(path), "status": "failed", "reason": exc.message})
            else:
                results.append({"file": str(path), "status": "imported", **book.to_json()})
        if options["corpus"]:
            for result in import_corpus(options["corpus"], library_dir=library, overwrite=options["overwrite"]):
                entry = {"file": f"{result.book.debian}:{result.book.data_set}", "status": result.status}
                if result.imported is not None:
                    entry |= result.imported.to_json()
                if result.reason:
                    entry["reason"] = result.reason
                results.append(entry)
        counts = {
            status: sum(1 for r in results if r["status"] == status)
            for status in ("imported", "skipped", "failed")
        }
        self.stdout.write(
            json.dumps({"library": str(library), **counts, "books": results}, ensure_ascii=False)
        )
        if counts["failed"] or not (files or options["corpus"]):
            why = f"{counts['failed']} file(s) failed" if counts["failed"] else "no book file was given"
            raise CommandError(f"{why}; the JSON on stdout lists every file and why.")
