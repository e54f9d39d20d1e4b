"""Book files built by tests: a small real EPUB for the one book reader (`writer.book_import`) and for
the commands that read books through it (import_book, import_books, build_dataset); real public-domain
novels from Debian's R packages for the reader's chapter splitting."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def make_epub(
    path: Path,
    chapters: list[tuple[str, str]],
    *,
    title: str = "The Glass Market",
    authors: tuple[str, ...] = ("A. Writer",),
    date: str = "2024-05-01T00:00:00+00:00",
    description: str = "<p>A market made of <b>glass</b> &amp; rain.</p>",
    nav: bool = True,
) -> Path:
    """A small EPUB 3 written by ebooklib itself: one XHTML page per (heading, body html) chapter."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("urn:mesu:test")
    book.set_title(title)
    book.set_language("en")
    for author in authors:
        book.add_author(author)
    if date:
        book.add_metadata("DC", "date", date)
    if description:
        book.add_metadata("DC", "description", description)
    pages = []
    for i, (heading, body) in enumerate(chapters, start=1):
        page = epub.EpubHtml(title=heading or f"Page {i}", file_name=f"ch{i}.xhtml", lang="en")
        page.content = (f"<h1>{heading}</h1>" if heading else "") + body
        book.add_item(page)
        pages.append(page)
    book.toc = pages
    book.add_item(epub.EpubNcx())
    spine: list = list(pages)
    if nav:
        book.add_item(epub.EpubNav())
        spine = ["nav", *pages]
    book.spine = spine
    epub.write_epub(str(path), book)
    return path


# ---------------------------------------------------------------------------------------------
# Real public-domain novels, as Debian ships them inside R packages (installed by
# scripts/setup_books.sh): r-cran-tokenizers' `mobydick` (Project Gutenberg's EBook #2701 of 2008,
# one string with its Gutenberg header and licence and Windows line endings) and r-cran-janeaustenr's
# six novels (one element per line, "CHAPTER 1" or "Chapter 1" lines, Emma in three volumes).
# R itself (r-base-core, which both depend on) reads them: no Python reader of R's lazy-load files.

PUBLIC_DOMAIN_BOOKS = {
    "mobydick": "tokenizers",
    "emma": "janeaustenr",
    "mansfieldpark": "janeaustenr",
    "northangerabbey": "janeaustenr",
    "persuasion": "janeaustenr",
    "prideprejudice": "janeaustenr",
    "sensesensibility": "janeaustenr",
}

_EXPORT_BOOKS = r"""
args <- commandArgs(trailingOnly = TRUE)
out <- args[1]
for (i in seq(2, length(args), by = 2)) {
  name <- args[i]; package <- args[i + 1]
  e <- new.env()
  found <- tryCatch({ data(list = name, package = package, envir = e); exists(name, envir = e) },
                    error = function(err) FALSE, warning = function(w) FALSE)
  if (found) {
    text <- enc2utf8(paste(get(name, envir = e), collapse = "\n"))
    writeBin(charToRaw(text), file.path(out, paste0(name, ".txt")))
  }
}
"""

SETUP_HINT = "scripts/setup_books.sh installs Debian's r-cran-tokenizers and r-cran-janeaustenr (./dev setup)"


@functools.cache
def _exported_books() -> dict[str, str]:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        args = [arg for name, package in PUBLIC_DOMAIN_BOOKS.items() for arg in (name, package)]
        subprocess.run(
            [rscript, "--vanilla", "-e", _EXPORT_BOOKS, tmp, *args],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return {path.stem: path.read_bytes().decode("utf-8") for path in Path(tmp).glob("*.txt")}


def public_domain_book(name: str) -> str:
    """The text of one of PUBLIC_DOMAIN_BOOKS exactly as its R package holds it; the test is skipped,
    saying why, where R or the package is not installed."""
    if shutil.which("Rscript") is None:
        pytest.skip(f"Rscript is not installed: {SETUP_HINT}")
    text = _exported_books().get(name)
    if text is None:
        pytest.skip(
            f"R package {PUBLIC_DOMAIN_BOOKS[name]} (data set {name!r}) is not installed: {SETUP_HINT}"
        )
    return text
