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
from tests.books import make_epub, public_domain_book
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
BOOK_DATA = Path(__file__).resolve().parents[1] / "data" / "books"


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
        # A title may end with a full stop when it reads as one (title case), as Moby-Dick's do.
        ("CHAPTER 1. Loomings.", "Loomings"),
        ("CHAPTER 9. The Sermon.", "The Sermon"),
        ("CHAPTER 73. Stubb and Flask Kill a Right Whale; and Then Have a Talk Over Him.",
         "Stubb and Flask Kill a Right Whale; and Then Have a Talk Over Him"),
        ("CHAPTER 57. Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars.",
         "Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars"),
        ("CHAPTER 105. Does the Whale's Magnitude Diminish?--Will He Perish?",
         "Does the Whale's Magnitude Diminish?--Will He Perish?"),
        ("CHAPTER I.", "CHAPTER I"),
        ("Chapter Twenty-One", "Chapter Twenty-One"),
        ("CHAPTER THE FIRST", "CHAPTER THE FIRST"),
        ("Chapter the Twenty-First: Fog", "Fog"),
        ("Chapter Forty-Second", "Chapter Forty-Second"),
        ("CHAPTER THE LAST", "CHAPTER THE LAST"),
        ("CHAPTER MMMCMXCIX", "CHAPTER MMMCMXCIX"),
        ("Chapter 123456789012345678901234567890", "Chapter 123456789012345678901234567890"),
        ("Chapter 100000000000000000000: The Last Word", "The Last Word"),
    ],
)  # fmt: skip
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
        "Chapter 7: " + "A Long Title That Goes On " * 5,  # too long even for a title
        "The prologue was short.",
        "Chapter 3. It Was Late, he said.",
        "Chapter 9: the storm came in the night.",
        "CHAPTER MMMM",  # no Roman numeral
        "CHAPTER and verse.",
        "Chapter the end of it all",
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


def test_a_title_on_the_line_under_a_bare_heading():
    text = (
        "CHAPTER I.\nDown the Rabbit-Hole\n\n\nAlice was tired.\n\n"
        "CHAPTER II\n\nTHE POOL OF TEARS\n\nCuriouser.\n\n"
        "Chapter Three\n\nWho Stole the Tarts?\n\nThe King sat."
    )
    assert split_book(text).chapters == [
        DetectedChapter("Down the Rabbit-Hole", "Alice was tired."),
        DetectedChapter("THE POOL OF TEARS", "Curiouser."),
        DetectedChapter("Who Stole the Tarts?", "The King sat."),
    ]


@pytest.mark.parametrize(
    "first", ["It rained.", "“TOM!”", "[Illustration]", "Silence fell\nover the town.", "No answer", "Help!"]
)
def test_a_first_sentence_under_a_bare_heading_is_no_title(first):
    book = split_book(f"CHAPTER I\n\n{first}\n\nThe door opened.")
    assert book.chapters == [DetectedChapter("CHAPTER I", f"{first}\n\nThe door opened.")]


def test_a_long_title_wrapped_onto_the_next_line_is_one_title():
    # As the 2008 Gutenberg Moby-Dick prints chapter 57, wrapped at 70 characters.
    text = (
        "CHAPTER 57. Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in\nStone; in Mountains; in Stars."
        "\n\n\nOn Tower-hill, as you go down.\n\n"
        "Chapter 58: The Long Night of the Lanterns and the Drowned Men\nShe woke at dawn.\n\nShe rose."
    )
    assert split_book(text).chapters == [
        DetectedChapter(
            "Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars",
            "On Tower-hill, as you go down.",
        ),
        # A sentence under a long title is the chapter's, not the title's.
        DetectedChapter(
            "The Long Night of the Lanterns and the Drowned Men", "She woke at dawn.\n\nShe rose."
        ),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_several_heading_styles_in_one_book(newline):
    text = (
        "THE STORM KEEPER\nby A. Writer\n\nPrologue\n\nThe sea was grey.\n\nCHAPTER I.\nSalt\n\nWren woke.\n\n"
        "Chapter Two: Fog\n\nFog came.\n\nCHAPTER THE THIRD\n\nRain.\n\nChapter 4. Low Tide.\n\nThe tide went out."
        "\n\n**Chapter V**\n\nGulls.\n\nCh. 6 - Home\n\nShe came home.\n\nEpilogue\n\nYears later.\n"
    )
    book = split_book(text.replace("\n", newline))
    assert book.front_matter == "THE STORM KEEPER\nby A. Writer"
    assert [(c.title, c.text) for c in book.chapters] == [
        ("Prologue", "The sea was grey."),
        ("Salt", "Wren woke."),
        ("Fog", "Fog came."),
        ("CHAPTER THE THIRD", "Rain."),
        ("Low Tide", "The tide went out."),
        ("Chapter V", "Gulls."),
        ("Home", "She came home."),
        ("Epilogue", "Years later."),
    ]


def test_a_heading_inside_a_wrapped_sentence_is_prose():
    text = (
        "Chapter 1\n\nHe found the poem, as his teacher had promised, in the book called\n"
        "Chapter 3 The Storm\nand he read it twice. In chapter 3 of his life, Oki opened a stall.\n"
        "CHAPTER and verse, he said.\n"
    )
    book = split_book(text)
    assert _titles(book) == ["Chapter 1"] and "called\nChapter 3 The Storm\nand" in book.chapters[0].text


@pytest.mark.parametrize(
    "text", ["", "\r\n\r\n", "\ufeff", "Chapter 1", "*** START OF THE PROJECT GUTENBERG EBOOK X ***"]
)
def test_a_book_with_no_text_has_no_chapters(text):
    book = split_book(text)
    assert (book.front_matter, book.chapters) == ("", [])


def test_a_heading_on_the_last_line_is_no_chapter():
    assert split_book("Chapter 1\n\nWren woke.\n\nChapter 2") == DetectedBook(
        "", [DetectedChapter("Chapter 1", "Wren woke.")]
    )
    assert split_book("Chapter 1\n\nWren woke.\n\nCHAPTER II.\nThe End\n").chapters == [
        DetectedChapter("Chapter 1", "Wren woke.")
    ]


def test_a_table_of_contents_is_never_a_chapter():
    # Its entries have nothing under them, or another entry; its last one has the foreword under it.
    text = (
        "THE STORM KEEPER\n\nContents\n\nPrologue\nChapter 1: Salt\nChapter 2: Fog\nEpilogue\n\n"
        "A foreword about the sea, which is long.\n\nPrologue\n\nThe sea was grey.\n\nChapter 1: Salt\n\n"
        "Wren woke.\n\nChapter 2: Fog\n\nFog came.\n\nEpilogue\n\nYears later."
    )
    book = split_book(text)
    assert book.front_matter == "THE STORM KEEPER\n\nContents\n\nA foreword about the sea, which is long."
    assert _titles(book) == ["Prologue", "Salt", "Fog", "Epilogue"]
    assert book.chapters[0].text == "The sea was grey."


def test_a_table_of_contents_alone_or_over_chapters_headed_another_way():
    assert split_book("Contents\n\nChapter 1: Salt\nChapter 2: Fog\nChapter 3: Rain\n") == DetectedBook(
        "Contents", []
    )
    # The book's own headings are no chapter headings ("SALT"): the contents' last entry ("Rain") does
    # not take the whole book; the book is one chapter, as a book without headings is.
    text = "Contents\n\nChapter 1: Salt\nChapter 2: Fog\nChapter 3: Rain\n\nA foreword.\n\nSALT\n\nWren woke."
    assert split_book(text) == DetectedBook(
        "", [DetectedChapter("Chapter 1", "Contents\n\nA foreword.\n\nSALT\n\nWren woke.")]
    )


def test_short_chapters_with_repeated_numbers_are_no_table_of_contents():
    # Volumes that number their chapters again, with chapters of a line or two.
    text = "VOLUME I\n\nCHAPTER I\n\nEmma woke.\n\nCHAPTER II\n\nEmma slept.\n\nVOLUME II\n\nCHAPTER I\n\nEmma ran."
    book = split_book(text)
    assert [c.text for c in book.chapters] == ["Emma woke.", "Emma slept.", "Emma ran."]


def test_a_markdown_contents_heading_is_no_chapter():
    text = "# Gull Point\n\n## Contents\n\n- Salt\n- Storm\n\n## Chapter 1: Salt\n\nWren woke.\n\n## Chapter 2: Storm\n\nRain."
    book = split_book(text)
    assert book.front_matter == "# Gull Point\n\n## Contents\n\n- Salt\n- Storm"
    assert _titles(book) == ["Salt", "Storm"]


def test_part_headings_between_chapters_belong_to_no_chapter():
    text = (
        "EMMA\n\nVOLUME I\n\nCHAPTER I\n\nEmma woke.\n\nVOLUME II\n\nCHAPTER I\n\nEmma slept.\n\n"
        "Book the Third--the Track of a Storm\n\nCHAPTER I\n\nEmma ran.\n\nPart Two was her favourite.\n"
    )
    book = split_book(text)
    assert book.front_matter == "EMMA\n\nVOLUME I"  # front matter stays front matter
    assert [c.text for c in book.chapters] == [
        "Emma woke.",
        "Emma slept.",
        "Emma ran.\n\nPart Two was her favourite.",
    ]
    assert book.notes == [
        "2 part heading(s) between chapters (VOLUME II, Book the Third--the Track of a Storm) were left out of "
        "the chapters' text."
    ]


GUTENBERG_HEADER = (
    "The Project Gutenberg EBook of The Storm Keeper, by A. Writer\n\nThis eBook is for the use of anyone "
    "anywhere at no cost.\n\nTitle: The Storm Keeper\n\nAuthor: A. Writer\n\nRelease Date: May 1, 2024\n\n"
)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("*** START OF THE PROJECT GUTENBERG EBOOK THE STORM KEEPER ***",
         "*** END OF THE PROJECT GUTENBERG EBOOK THE STORM KEEPER ***"),
        ("*** START OF THIS PROJECT GUTENBERG EBOOK THE STORM KEEPER ***",
         "End of the Project Gutenberg EBook of The Storm Keeper, by A. Writer"),
        ("*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*",
         "End of Project Gutenberg's The Storm Keeper, by A. Writer"),
    ],
)  # fmt: skip
def test_a_gutenberg_header_and_licence_are_no_part_of_the_book(start, end):
    licence = "\n\nSection 1. General Terms of Use\n\nChapter 3\n\nYou may copy it.\n"
    text = (
        f"{GUTENBERG_HEADER}{start}\nProduced by A. Volunteer and the Online\nProofreading Team\n\n\n"
        f"THE STORM KEEPER\n\nChapter 1\n\nWren woke.\n\nChapter 2\n\nRain.\n\n{end}{licence}"
    )
    book = split_book(text)
    # The header's title and author stay, as front matter reads them ("Title: ...", "Author: ...").
    assert book.front_matter == "Title: The Storm Keeper\nAuthor: A. Writer\n\nTHE STORM KEEPER"
    assert book.chapters == [
        DetectedChapter("Chapter 1", "Wren woke."),
        DetectedChapter("Chapter 2", "Rain."),
    ]
    assert book.notes == ["The Project Gutenberg header and licence were left out."]
    # Without chapter headings the book is still one chapter, without the licence.
    no_headings = split_book(f"{GUTENBERG_HEADER}{start}\n\nWren woke.\n\n{end}{licence}")
    assert no_headings.chapters == [DetectedChapter("Chapter 1", "Wren woke.")]
    assert no_headings.front_matter == "Title: The Storm Keeper\nAuthor: A. Writer"


def test_a_book_without_gutenberg_lines_has_no_notes():
    assert split_book("Title: Gull Point\n\nChapter 1\n\nWren woke.").notes == []


# ---------------------------------------------------------------------------------------------
# Public-domain books as they are printed: excerpts in tests/data/books/ (always) and whole novels
# from Debian's R packages (tests.books.public_domain_book; skipped, saying why, where not installed)


def _read_excerpt(name: str) -> DetectedBook:
    data = (BOOK_DATA / name).read_bytes()
    return read_book(data, name, max_bytes=len(data))


def _assert_no_gutenberg_text(book: DetectedBook) -> None:
    for chapter in book.chapters:
        assert "Project Gutenberg" not in chapter.text and "*** END" not in chapter.text, chapter.title
    assert "*** START" not in book.front_matter and "This eBook is for the use" not in book.front_matter


def test_alice_contents_then_chapters_with_titles_under_their_headings():
    book = _read_excerpt("alice_gutenberg_excerpt.txt")
    assert _titles(book) == [
        "Down the Rabbit-Hole", "The Pool of Tears", "A Caucus-Race and a Long Tale",
        "The Rabbit Sends in a Little Bill", "Advice from a Caterpillar", "Pig and Pepper", "A Mad Tea-Party",
        "The Queen’s Croquet-Ground", "The Mock Turtle’s Story", "The Lobster Quadrille", "Who Stole the Tarts?",
        "Alice’s Evidence",
    ]  # fmt: skip
    assert book.front_matter.startswith("Title: Alice's Adventures in Wonderland\nAuthor: Lewis Carroll\n\n")
    assert book.front_matter.endswith("THE MILLENNIUM FULCRUM EDITION 3.0\n\nContents")
    assert book.chapters[0].text.startswith("Alice was beginning to get very tired")
    assert book.chapters[-1].text.endswith("in the last few minutes.\n\nTHE END")
    _assert_no_gutenberg_text(book)
    assert book.notes == ["The Project Gutenberg header and licence were left out."]


def test_moby_dick_2021_edition_contents_front_matter_and_long_titles():
    book = _read_excerpt("moby_dick_2021_excerpt.txt")
    assert _titles(book) == [
        "Loomings",
        "The Carpet-Bag",
        "Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars",
        "Brit",
        "Epilogue",
    ]
    # Etymology and Extracts come before chapter 1: front matter, not part of the contents' "Epilogue".
    front = book.front_matter
    assert front.startswith("Title: Moby-Dick; or The Whale\nAuthor: Herman Melville\n\nMOBY-DICK;")
    assert "CONTENTS\n\nETYMOLOGY.\n\nEXTRACTS (Supplied by a Sub-Sub-Librarian).\n\nOriginal" in front
    assert front.endswith("sacred or profane.") and "CHAPTER" not in front and "Epilogue" not in front
    assert book.chapters[0].text.startswith("Call me Ishmael.")
    assert book.chapters[-1].text.endswith("did survive the wreck.")
    _assert_no_gutenberg_text(book)


def test_a_tale_of_two_cities_books_and_chapters():
    book = _read_excerpt("tale_of_two_cities_excerpt.txt")
    assert _titles(book) == ["The Period", "The Mail", "The Night Shadows", "Five Years Later", "A Sight"]
    assert book.front_matter.endswith(
        "Book the Second--the Golden Thread\n\nBook the First--Recalled to Life"
    )
    assert all("Book the" not in c.text for c in book.chapters)
    assert book.notes == [
        "The Project Gutenberg header was left out.",
        "1 part heading(s) between chapters (Book the Second--the Golden Thread) were left out of the "
        "chapters' text.",
    ]


def test_little_women_spelled_out_numbers_and_titles_in_capitals():
    book = _read_excerpt("little_women_excerpt.txt")
    assert book.front_matter == "LITTLE WOMEN\n\nby Louisa May Alcott\n\n\nPART 1"
    assert _titles(book) == ["PLAYING PILGRIMS", "A MERRY CHRISTMAS", "THE LAURENCE BOY"]
    assert book.chapters[0].text.startswith("“Christmas won’t be Christmas without any presents,”")


def _read_text(text: str, name: str = "book.txt") -> DetectedBook:
    data = text.encode("utf-8")
    return read_book(data, name, max_bytes=len(data))


# The 2008 Gutenberg edition (EBook #2701) in r-cran-tokenizers.
MOBY_DICK_TITLES = {
    1: "Loomings",
    32: "Cetology",
    42: "The Whiteness of The Whale",
    56: "Of the Less Erroneous Pictures of Whales, and the True Pictures of Whaling Scenes",  # wrapped
    57: "Of Whales in Paint; in Teeth; in Wood; in Sheet-Iron; in Stone; in Mountains; in Stars",  # wrapped
    73: "Stubb and Flask Kill a Right Whale; and Then Have a Talk Over Him",  # wrapped
    105: "Does the Whale's Magnitude Diminish?--Will He Perish?",
    135: "The Chase.--Third Day",
    136: "Epilogue",
}


def test_moby_dick_splits_into_its_135_chapters_and_the_epilogue():
    text = public_domain_book("mobydick")
    # The book's own headings, counted without the reader: "CHAPTER 1. Loomings." ... "CHAPTER 135. ...".
    assert [int(n) for n in re.findall(r"(?m)^CHAPTER (\d+)\. ", text)] == list(range(1, 136))
    assert "\r\n" in text  # as Gutenberg wrote it
    book = _read_text(text, "moby_dick.txt")
    assert len(book.chapters) == 136
    assert {n: book.chapters[n - 1].title for n in MOBY_DICK_TITLES} == MOBY_DICK_TITLES
    assert book.chapters[0].text.startswith("Call me Ishmael. Some years ago--never mind how long precisely")
    assert book.chapters[-1].text.startswith('"AND I ONLY AM ESCAPED ALONE TO TELL THEE" Job.')
    assert book.chapters[-1].text.endswith("only found another\norphan.")
    assert book.front_matter.startswith(
        "Title: Moby Dick; or The Whale\nAuthor: Herman Melville\n\nMOBY DICK;"
    )
    assert (
        "ETYMOLOGY." in book.front_matter
        and "EXTRACTS (Supplied by a Sub-Sub-Librarian)." in book.front_matter
    )
    _assert_no_gutenberg_text(book)
    # No heading is left inside a chapter, and every word between chapter 1 and the licence is in one
    # chapter or one heading ("CHAPTER 1." and its title; "Epilogue").
    for chapter in book.chapters:
        assert chapter.text and not re.search(r"(?m)^CHAPTER \d+\.", chapter.text), chapter.title
    body = text[text.index("CHAPTER 1. Loomings.") : text.index("End of Project Gutenberg's")]
    headings = sum(2 + len(c.title.split()) for c in book.chapters[:-1]) + 1
    assert sum(len(c.text.split()) for c in book.chapters) + headings == len(body.split())


def test_moby_dick_with_a_contents_page_as_the_2021_edition_prints_one():
    text = public_domain_book("mobydick").replace("\r\n", "\n")
    headings = re.findall(r"(?m)^CHAPTER \d+\. .*$", text)
    contents = "CONTENTS\n\nETYMOLOGY.\n\nEXTRACTS (Supplied by a Sub-Sub-Librarian).\n\n"
    contents += "\n\n".join(headings) + "\n\nEpilogue\n\n\n\n"
    at = text.index("Original Transcriber's Notes:")
    with_contents = _read_text(text[:at] + contents + text[at:])
    without = _read_text(text)
    assert with_contents.chapters == without.chapters and len(with_contents.chapters) == 136
    assert "CONTENTS\n\nETYMOLOGY." in with_contents.front_matter


# Each novel's chapters, counted from its own "CHAPTER 1"/"Chapter 1"/"CHAPTER I" lines below.
AUSTEN = [
    ("emma", 55, "EMMA\n\nBy Jane Austen"),  # 18 + 18 + 19 in three volumes, numbered again in each
    ("mansfieldpark", 48, "MANSFIELD PARK\n\n(1814)"),
    ("northangerabbey", 31, "NORTHANGER ABBEY\n\n\nby\n\nJane Austen (1803)"),
    ("persuasion", 24, "Persuasion\n\n\nby\n\nJane Austen"),
    ("prideprejudice", 61, "PRIDE AND PREJUDICE\n\nBy Jane Austen"),
    ("sensesensibility", 50, "SENSE AND SENSIBILITY\n\nby Jane Austen"),
]


@pytest.mark.parametrize(("name", "count", "front"), AUSTEN)
def test_each_austen_novel_splits_into_its_chapters(name, count, front):
    text = public_domain_book(name)
    own = re.findall(r"(?mi)^chapter [0-9ivxl]+$", text)
    assert len(own) == count
    book = _read_text(text)
    assert _titles(book) == own
    assert book.front_matter.startswith(front)
    for chapter in book.chapters:
        assert not re.search(r"(?mi)^(chapter|volume) [0-9ivxl]+$", chapter.text), chapter.title
        assert len(chapter.text.split()) >= 500, chapter.title
    if name == "emma":  # its volumes are no chapters' text; the first one is front matter
        assert book.front_matter.endswith("VOLUME I")
        assert "VOLUME II, VOLUME III" in book.notes[0]
    else:
        assert book.notes == []


def test_emma_with_a_contents_page_and_windows_line_endings():
    text = public_domain_book("emma")
    listing = "\n".join(re.findall(r"(?m)^(?:CHAPTER|VOLUME) [IVXL]+$", text))
    at = text.index("VOLUME I\n")
    book = _read_text((text[:at] + "CONTENTS\n\n" + listing + "\n\n\n\n" + text[at:]).replace("\n", "\r\n"))
    plain = _read_text(text)
    assert book.chapters == plain.chapters and len(book.chapters) == 55
    assert "CONTENTS" in book.front_matter


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
