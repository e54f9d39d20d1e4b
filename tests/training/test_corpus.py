"""The gutenberg-classics corpus: Debian's public-domain novels, read from the R packages' own files
without R (training/corpus.py), into the training library, each with its real chapter count."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.books import public_domain_book
from training.corpus import CORPORA, import_corpus, r_library_dirs, read_r_text
from training.library import import_book_file, read_library_book

pytestmark = pytest.mark.slow

BOOKS = CORPORA["gutenberg-classics"]
# The chapters each book has, as printed (Emma: 18 + 18 + 19 in three volumes; Moby-Dick: 135 and the
# Epilogue), independently of the table in training/corpus.py.
REAL_CHAPTERS = {
    "emma": 55,
    "mansfieldpark": 48,
    "northangerabbey": 31,
    "persuasion": 24,
    "prideprejudice": 61,
    "sensesensibility": 50,
    "mobydick": 136,
}


def _installed() -> None:
    for book in BOOKS:
        if not any((root / book.package / "data" / "Rdata.rdx").is_file() for root in r_library_dirs()):
            pytest.skip(f"{book.debian} is not installed: scripts/setup_books.sh installs it (./dev setup)")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    _installed()
    folder = tmp_path_factory.mktemp("library")
    results = import_corpus("gutenberg-classics", library_dir=folder)
    assert [(r.book.data_set, r.status, r.reason) for r in results] == [
        (b.data_set, "imported", "") for b in BOOKS
    ]
    return folder


def test_seven_novels_with_their_real_chapter_counts_and_chapter_zero(library):
    books = {p.stem: read_library_book(p) for p in library.glob("*.md")}
    assert len(books) == 7
    by_title = {b.metadata.title: b for b in books.values()}
    for spec in BOOKS:
        book = by_title[spec.title]
        assert len(book.chapters) == REAL_CHAPTERS[spec.data_set], spec.title
        meta = book.metadata
        assert (meta.author, meta.date) == (spec.author, spec.year)
        assert meta.version.startswith("Public domain.") and spec.debian in meta.version
        assert meta.summary == spec.summary
        for chapter in book.chapters:
            assert "Project Gutenberg" not in chapter.text and "CONTENTS" not in chapter.text.split("\n", 1)[0]
    moby = by_title["Moby-Dick; or, The Whale"]
    assert moby.chapters[0].text.startswith("Call me Ishmael.") and moby.chapters[-1].title == "Epilogue"
    emma = by_title["Emma"]
    assert emma.chapters[0].text.startswith("Emma Woodhouse, handsome, clever, and rich")
    pride = by_title["Pride and Prejudice"]
    assert pride.chapters[0].text.startswith("It is a truth universally acknowledged")


def test_the_files_read_without_r_give_the_text_r_gives(library):
    for name in ("persuasion", "mobydick"):
        package = next(b.package for b in BOOKS if b.data_set == name)
        root = next(r for r in r_library_dirs() if (r / package / "data" / "Rdata.rdx").is_file())
        assert read_r_text(root / package, name) == public_domain_book(name).lstrip("\ufeff")


def test_build_dataset_gives_pairs_and_holds_out_whole_books(library, tmp_path):
    out = StringIO()
    call_command("build_dataset", "--books", str(library), "--out", str(tmp_path / "ds"), stdout=out)
    report = json.loads(out.getvalue())
    splits = {slug: b["split"] for slug, b in report["books"].items()}
    assert sorted(splits.values()).count("test") == 2 and len(splits) == 7  # 30 % of 7 books, whole
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (tmp_path / "ds" / f"{split}.jsonl").read_text().splitlines()]
        books = {row["book"] for row in rows}
        assert books == {slug for slug, s in splits.items() if s == split}
        assert len(rows) == sum(report["books"][slug]["pairs"] for slug in books)


def test_a_second_import_skips_overwrite_replaces_and_the_command_prints_json(library):
    again = import_corpus("gutenberg-classics", library_dir=library)
    assert {r.status for r in again} == {"skipped"} and "already has" in again[0].reason
    out = StringIO()
    call_command(
        "import_books", "--corpus", "gutenberg-classics", "--library", str(library), "--overwrite", stdout=out
    )
    printed = json.loads(out.getvalue())
    assert (printed["imported"], printed["skipped"], printed["failed"]) == (7, 0, 0)
    entry = next(b for b in printed["books"] if b["file"] == "r-cran-tokenizers:mobydick")
    assert entry["chapters"] == 136 and entry["replaced"] is True and entry["author"] == "Herman Melville"


def test_a_missing_or_damaged_package_fails_that_book_with_the_reason_and_the_rest_go_on(tmp_path):
    _installed()
    results = import_corpus("gutenberg-classics", library_dir=tmp_path / "lib", search=[tmp_path / "nowhere"])
    assert {r.status for r in results} == {"failed"}
    assert "r-cran-janeaustenr" in results[0].reason and "apt-get install" in results[0].reason
    assert "r-cran-tokenizers" in results[-1].reason
    assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").glob("*.md"))
    # Austen's package copied, its database cut short: her six fail, Moby-Dick (the real one) imports.
    source = next(r for r in r_library_dirs() if (r / "janeaustenr" / "data").is_dir())
    shutil.copytree(source / "janeaustenr", tmp_path / "r" / "janeaustenr")
    rdb = tmp_path / "r" / "janeaustenr" / "data" / "Rdata.rdb"
    rdb.write_bytes(rdb.read_bytes()[:5000])
    results = import_corpus("gutenberg-classics", library_dir=tmp_path / "lib", search=[tmp_path / "r", *r_library_dirs()])
    assert [r.status for r in results] == ["failed"] * 6 + ["imported"]
    assert all("Could not read the data set" in r.reason for r in results[:6])
    with pytest.raises(CommandError):
        call_command("import_books", "--corpus", "no-such-corpus", stdout=StringIO(), stderr=StringIO())


def test_a_book_that_splits_into_another_chapter_count_is_not_imported(tmp_path):
    text = "CHAPTER 1\n\n" + "Words here. " * 50 + "\n\nCHAPTER 2\n\n" + "More words. " * 50
    with pytest.raises(Exception, match="splits into 2 chapters, but the book has 3"):
        import_book_file(text.encode(), filename="two.txt", library_dir=tmp_path, expected_chapters=3)
    assert not list(tmp_path.glob("*.md"))
    assert len(import_book_file(text.encode(), filename="two.txt", library_dir=tmp_path, expected_chapters=2).chapters) == 2
