"""The one book reader: splitting a book into chapters at its headings, and only at its headings, and
reading .txt/.md/.epub files (the writer's import_book command reads them the same way)."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from mesu_web.errors import ApplicationError
from tests.books import make_epub
from writer.book_import import (
    DetectedBook,
    DetectedChapter,
    markdown_heading_title,
    read_book,
    read_book_file,
    split_book,
)
from writer.models import Story
from writer.text_input import clean_text

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _titles(book: DetectedBook) -> list[str]:
    return [c.title for c in book.chapters]


@pytest.mark.parametrize(
    ("heading", "title"),
    [
        ("Chapter 1", "Chapter 1"),
        ("Chapter 12: The Storm", "The Storm"),
        ("Chapter 12 - The Storm", "The Storm"),
        ("Chapter 12 — The Storm", "The Storm"),
        ("Chapter 12. The Storm", "The Storm"),
        ("Chapter 12 The Storm", "The Storm"),
        ("Chapter 4.", "Chapter 4"),
        ("CHAPTER I", "CHAPTER I"),
        ("CHAPTER XIV", "CHAPTER XIV"),
        ("chapter iv: ash", "ash"),
        ("Chapter One", "Chapter One"),
        ("Chapter Twenty-Three", "Chapter Twenty-Three"),
        ("Chapter twenty three: Fog", "Fog"),
        ("CHAPTER ONE HUNDRED AND TWO", "CHAPTER ONE HUNDRED AND TWO"),
        ("Ch. 3", "Ch. 3"),
        ("Ch 3: Fog", "Fog"),
        ("Prologue", "Prologue"),
        ("Epilogue: After the Rain", "After the Rain"),
        ("**Chapter 9**", "Chapter 9"),
        ("   Chapter 5   ", "Chapter 5"),
    ],
)
def test_each_plain_heading_style(heading, title):
    book = split_book(f"Front matter.\n\n{heading}\n\nThe rain fell.\n\nChapter 99\n\nIt stopped.")
    assert book.front_matter == "Front matter."
    assert book.chapters == [
        DetectedChapter(title, "The rain fell."),
        DetectedChapter("Chapter 99", "It stopped."),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "In chapter 3 of his life, Oki opened a stall.",
        "Chapter 3 was the worst year of his life.",
        "Chapter 3. He never came back.",
        "Chapter and verse, Static liked to say.",
        "Chapters 3 and 4 were lost in the flood.",
        "Chapter DIM",
        "Chapter 7: " + "a very long subtitle that goes on and on " * 3,
        "The prologue was short.",
    ],
)
def test_prose_that_mentions_chapters_is_not_a_heading(line):
    text = f"Chapter 1\n\nJuno ran.\n{line}\nShe stopped."
    book = split_book(text)
    assert _titles(book) == ["Chapter 1"]
    assert line in book.chapters[0].text


def test_markdown_title_then_chapters():
    text = (
        "# Gull Point\n\n*A story.*\n\n## Chapter 1: Salt\n\nWren woke.\n\n### Morning\n\nGulls.\n\n"
        "## The Boy with the Bucket\n\nRavi counted crabs.\n"
    )
    book = split_book(text)
    assert book.front_matter == "# Gull Point\n\n*A story.*"
    assert _titles(book) == ["Salt", "The Boy with the Bucket"]
    # Deeper headings are scenes inside the chapter, kept as text.
    assert book.chapters[0].text == "Wren woke.\n\n### Morning\n\nGulls."


def test_markdown_chapters_at_the_top_level():
    book = split_book("# Chapter 1\n\nOne.\n\n# Chapter 2: Two\n\nTwo.\n")
    assert book.front_matter == ""
    assert book.chapters == [DetectedChapter("Chapter 1", "One."), DetectedChapter("Two", "Two.")]


def test_markdown_parts_above_chapters_are_not_chapters():
    text = "# Book\n\n## Part One\n\n### Chapter 1\n\nA.\n\n### Chapter 2\n\nB.\n\n## Part Two\n\n### Chapter 3\n\nC."
    book = split_book(text)
    assert _titles(book) == ["Chapter 1", "Chapter 2", "Chapter 3"]
    assert book.chapters[1].text == "B.\n\n## Part Two"  # the part heading stays, as text


def test_hash_lines_inside_code_fences_are_not_headings():
    book = split_book("# T\n\n## Chapter 1\n\nCode:\n```\n# not a heading\n## nor this\n```\nEnd.")
    assert _titles(book) == ["Chapter 1"] and "## nor this" in book.chapters[0].text


def test_a_lone_markdown_title_with_plain_chapter_lines():
    book = split_book("# Neon\n\nChapter 1\n\nA.\n\nChapter 2\n\nB.")
    assert book.front_matter == "# Neon" and _titles(book) == ["Chapter 1", "Chapter 2"]


def test_no_headings_is_one_chapter():
    assert split_book("Juno ran.\n\nThe rain fell.") == DetectedBook(
        "", [DetectedChapter("Chapter 1", "Juno ran.\n\nThe rain fell.")]
    )
    assert split_book("# Neon\n\nJuno ran.") == DetectedBook(
        "# Neon", [DetectedChapter("Chapter 1", "Juno ran.")]
    )
    assert split_book("  \n\n ") == DetectedBook("", [])


def test_empty_chapters_are_dropped_like_a_table_of_contents():
    text = "Contents\nChapter 1: Salt\nChapter 2: Storm\n\nChapter 1: Salt\n\nWren woke.\n\nChapter 2: Storm\n\nRain.\n\nEpilogue\n"
    book = split_book(text)
    assert book.front_matter == "Contents"
    assert book.chapters == [DetectedChapter("Salt", "Wren woke."), DetectedChapter("Storm", "Rain.")]


def test_windows_newlines():
    book = split_book("Chapter 1\r\n\r\nA.\r\nChapter 2\r\nB.")
    assert book.chapters == [DetectedChapter("Chapter 1", "A."), DetectedChapter("Chapter 2", "B.")]


def test_the_lighthouse_sample():
    book = split_book((SAMPLES / "the_lighthouse_keepers_daughter.md").read_text(encoding="utf-8"))
    assert book.front_matter.startswith("# The Lighthouse Keeper's Daughter\n")
    assert _titles(book) == [
        "Salt in Everything",
        "The Boy with the Bucket",
        "Jas Has a Plan",
        "Storm Warning",
        "The Meeting",
        "Low Tide",
    ]
    assert book.chapters[0].text.startswith("There is salt in everything at Gull Point.")
    assert book.chapters[-1].text.endswith("*this is my house. it's not for sale. and it has a secret.*")
    for chapter in book.chapters:
        assert 300 <= len(chapter.text.split()) <= 600, chapter.title
        assert "## " not in chapter.text


def test_the_neon_rain_sample():
    book = split_book((SAMPLES / "neon_rain.txt").read_text(encoding="utf-8"))
    assert book.front_matter.startswith("NEON RAIN\n")
    assert _titles(book) == ["Static", "CHAPTER II", "The Glass Market", "Undertow", "Epilogue"]
    assert book.chapters[0].text.startswith("It had been raining in Meridian Stack")
    assert book.chapters[-1].text.endswith('"Goodnight," Juno said to the morning, just in case.')
    # The sample's traps stay prose.
    assert "Chapter and verse, Static liked to say" in book.chapters[0].text
    assert '"In chapter three of the Runner\'s Code,"' in book.chapters[2].text
    for chapter in book.chapters:
        assert 300 <= len(chapter.text.split()) <= 600, chapter.title


def test_a_heading_line_reads_as_split_book_reads_it():
    assert markdown_heading_title("## Chapter 3: The Storm") == "The Storm"
    assert markdown_heading_title("### The Storm ###") == "The Storm"
    assert markdown_heading_title("Chapter 3: The Storm") is None  # not a markdown heading


# ---------------------------------------------------------------------------------------------
# Reading book files


def test_a_text_book_file_is_decoded_cleaned_and_split():
    data = (SAMPLES / "neon_rain.txt").read_bytes()
    book = read_book(data, "neon_rain.txt", max_bytes=len(data))
    assert book == split_book(clean_text(data.decode("utf-8")))
    assert book.notes == [] and book.title == ""  # a text book's title is in its front matter


def test_html_in_a_text_book_is_turned_into_text_only_when_asked():
    data = b"Chapter 1\n\n<p>Juno <b>ran</b>.</p>\n\nChapter 2\n\n<p>Rain fell.</p><script>x()</script>\n"
    as_written = read_book(data, "markup.md", max_bytes=1000)
    assert as_written.chapters[0].text == "<p>Juno <b>ran</b>.</p>" and as_written.notes == []
    converted = read_book(data, "markup.md", max_bytes=1000, markup_to_text=True)
    assert [c.text for c in converted.chapters] == ["Juno ran.", "Rain fell."]
    assert "HTML markup was turned into text" in converted.notes[0]


def test_an_epub_is_read_in_reading_order_without_its_navigation_page(tmp_path):
    path = make_epub(
        tmp_path / "glass.epub",
        [
            ("Chapter 1: The Stall", "<p>Juno walked in.</p><p>Rain &amp; glass.</p>"),
            ("", "<p>No heading.</p>"),
        ],
        authors=("A. Writer", "B. Writer"),
    )
    book = read_book_file(path, max_bytes=10**6)
    assert book.chapters == [
        DetectedChapter("Chapter 1: The Stall", "Juno walked in.\n\nRain & glass."),
        DetectedChapter("Chapter 2", "No heading."),  # numbered, as a text book without headings is
    ]
    assert (book.front_matter, book.title, book.author, book.date, book.description) == (
        "",
        "The Glass Market",
        "A. Writer, B. Writer",
        "2024-05-01",
        "A market made of glass & rain.",
    )
    assert book.notes == ["1 EPUB page(s) without story text (navigation, cover, blank) were left out."]


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        (
            "report.pdf",
            b"%PDF-1.7",
            "'report.pdf' is a .pdf file; a book is one of .txt, .md, .markdown, .epub",
        ),
        ("big.txt", b"Chapter 1\n\n" + b"word " * 300, "'big.txt' is 1,511 bytes; the limit is 1,000 bytes"),
        ("big.epub", b"PK" + b"\x00" * 1200, "'big.epub' is 1,202 bytes; the limit is 1,000 bytes"),
        ("bad.epub", b"PK\x03\x04 not really", "not a complete ZIP archive"),
        ("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "binary file (a PNG image)"),
    ],
)
def test_what_is_not_a_readable_book_is_refused_with_its_reason(tmp_path, name, data, fragment):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ApplicationError, match=re.escape(fragment)):
        read_book_file(tmp_path / name, max_bytes=1000)
    with pytest.raises(ApplicationError, match="No such book file"):
        read_book_file(tmp_path / "missing.txt", max_bytes=1000)


def test_the_import_book_command_reads_an_epub_with_the_same_reader(users, tmp_path):
    path = make_epub(
        tmp_path / "glass.epub",
        [("Chapter 1: The Stall", "<p>Juno walked in.</p>"), ("Chapter 2: Static", "<p>It hissed.</p>")],
    )
    out = StringIO()
    call_command("import_book", str(path), "--title", "Glass", stdout=out)
    story = Story.objects.get(slug=json.loads(out.getvalue())["story"])
    chapters = read_book_file(path, max_bytes=10**6).chapters
    assert [(c.title, c.text) for c in story.chapters.order_by("number")] == [
        (c.title, c.text) for c in chapters
    ]
    assert story.summary == "A market made of glass & rain."  # the EPUB's description
