"""The training-book library: importing .txt/.md/.epub books as normalised markdown, reading them back
with the dataset's own reader, listing and deleting them, the import_books command, and bad input."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from tests.books import make_epub
from training import library as lib
from training.dataset import DEFAULT_MAX_ANSWER_CHARS, build_dataset, load_book_file, read_jsonl
from training.library import (
    BookExistsError,
    BookMetadata,
    book_files,
    delete_book,
    import_book_file,
    list_books,
    normalise_chapters,
    read_library_book,
    render_book,
)
from writer.prompting import ChapterText

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
LIGHTHOUSE = SAMPLES / "the_lighthouse_keepers_daughter.md"
NEON = SAMPLES / "neon_rain.txt"
BUDGET = 3552  # the writer's default prompt budget (as tests/training/test_dataset.py)


def words(text: str) -> int:
    return len(text.split())


def library_files(library: Path) -> list[str]:
    """Everything in the library folder, hidden work folders included."""
    return sorted(p.name for p in library.iterdir()) if library.exists() else []


def assert_reads_back(book) -> None:
    """The dataset's reader gives the imported book's title, author and chapters exactly."""
    meta, chapters = load_book_file(book.path)
    assert meta.title == book.metadata.title
    assert meta.author_name == book.metadata.author
    assert chapters == book.chapters
    assert [c.number for c in chapters] == list(range(1, len(chapters) + 1))
    again = read_library_book(book.path)
    assert again.metadata == book.metadata
    assert again.chapters == book.chapters


# ---------------------------------------------------------------------------------------------
# The shipped samples


@pytest.mark.parametrize(
    ("source", "slug", "title", "titles"),
    [
        (
            LIGHTHOUSE,
            "the-lighthouse-keepers-daughter",
            "The Lighthouse Keeper's Daughter",
            ["Salt in Everything", "The Boy with the Bucket", "Jas Has a Plan", "Storm Warning", "The Meeting",
             "Low Tide"],
        ),
        # "CHAPTER II" only repeats its number: it becomes "Chapter 2" (the prompt shows "Chapter 2").
        (NEON, "neon-rain", "NEON RAIN", ["Static", "Chapter 2", "The Glass Market", "Undertow", "Epilogue"]),
    ],
)  # fmt: skip
def test_a_sample_imports_as_one_markdown_file_that_reads_back_the_same(
    tmp_path, source, slug, title, titles
):
    library = tmp_path / "books"
    book = import_book_file(source, library_dir=library)

    assert book.slug == slug and book.path == library / f"{slug}.md"
    assert library_files(library) == [f"{slug}.md"]  # one file, no work folder left behind
    assert book.metadata.title == title
    assert book.metadata.summary.startswith("An original story for MeSu Studio's samples.")
    assert [c.title for c in book.chapters] == titles
    # The text of every chapter is the sample's own, as the dataset reads it from the original.
    _, original = load_book_file(source)
    assert [c.text for c in book.chapters] == [c.text for c in original]
    assert book.pairs == len(titles) - 1 and book.notes == []
    assert book.words == sum(len(c.text.split()) for c in original)
    assert_reads_back(book)

    text = book.path.read_text(encoding="utf-8")
    assert text.startswith(f"# {title}\n\nAn original story")
    assert "\n## Chapter 1: " in text and f"\n## Chapter {len(titles)}" in text


def test_front_matter_fields_are_chapter_zero_and_arguments_override_them(tmp_path):
    source = tmp_path / "the_glass_market.txt"
    source.write_text(
        "Title: The Glass Market\nAuthor: A. Writer\nDate: 2024-05-01\nVersion: 2\n\n"
        "A city where every stall sells something made of glass.\nIt rains there.\n\n"
        "Characters: Juno, a courier.\nStatic, her assistant.\n\nSetting: Meridian Stack.\n\n"
        "Intent: Keep it hopeful.\n\n"
        "Chapter 1\n\nOne.\n\nChapter 2: The Stall\n\nTwo.\n",
        encoding="utf-8",
    )
    book = import_book_file(source, library_dir=tmp_path / "lib")
    assert book.metadata == BookMetadata(
        title="The Glass Market",
        author="A. Writer",
        date="2024-05-01",
        version="2",
        summary="A city where every stall sells something made of glass.\nIt rains there.",
        characters="Juno, a courier.\nStatic, her assistant.",
        setting="Meridian Stack.",
        intent="Keep it hopeful.",
    )
    assert [(c.title, c.text) for c in book.chapters] == [("Chapter 1", "One."), ("The Stall", "Two.")]
    assert_reads_back(book)
    # Chapter 0 as the model will see it: the dataset's reader keeps date, version and the rest as text.
    meta, _ = load_book_file(book.path)
    assert meta.summary.startswith("Date: 2024-05-01\nVersion: 2\n\nA city where")
    assert "Setting: Meridian Stack." in meta.summary

    again = import_book_file(
        source, library_dir=tmp_path / "lib", author="B. Other", version="3", summary="New summary.",
        intent="", overwrite=True,
    )  # fmt: skip
    assert (again.metadata.author, again.metadata.version, again.metadata.summary) == (
        "B. Other",
        "3",
        "New summary.",
    )
    assert again.metadata.date == "2024-05-01" and again.metadata.intent == ""  # "" clears a field
    assert again.replaced
    assert_reads_back(again)


def test_title_argument_names_the_file_and_a_slug_can_be_given(tmp_path):
    book = import_book_file(NEON, library_dir=tmp_path, title="Neon Rain: Director's Cut")
    assert book.slug == "neon-rain-directors-cut" and book.metadata.title == "Neon Rain: Director's Cut"
    other = import_book_file(NEON, library_dir=tmp_path, slug="neon-2")
    assert other.path.name == "neon-2.md"
    with pytest.raises(ApplicationError, match="not a book name"):
        import_book_file(NEON, library_dir=tmp_path, slug="../escape")
    assert library_files(tmp_path) == ["neon-2.md", "neon-rain-directors-cut.md"]


def test_bytes_with_a_file_name_import_too(tmp_path):
    data = b"# Two Doors\n\n## Chapter 1\n\nLeft.\n\n## Chapter 2\n\nRight.\n"
    book = import_book_file(data, filename="doors.markdown", library_dir=tmp_path)
    assert (book.slug, len(book.chapters), book.source) == ("two-doors", 2, "doors.markdown")
    with pytest.raises(ApplicationError, match="needs its file name"):
        import_book_file(data, library_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# EPUB


def test_an_epub_imports_with_its_metadata_and_without_its_navigation_page(tmp_path):
    source = make_epub(
        tmp_path / "glass.epub",
        [
            ("Chapter 1: The Stall", "<p>Juno walked in.</p>\n  <p>Rain &amp; glass,<br/>everywhere.</p>"
             "<script>alert('x')</script><style>p {color: red}</style>"),
            ("Chapter 2", "<p>She paid.</p><p>~~~</p><p>## not a heading</p><p>The end.</p>"),
            ("", "<p>No heading on this page, but text.</p>"),
            ("Part Two", ""),  # a part title with nothing under it: no chapter
        ],
        authors=("A. Writer", "B. Writer"),
    )  # fmt: skip
    book = import_book_file(source, library_dir=tmp_path / "lib")

    assert book.metadata == BookMetadata(
        title="The Glass Market",
        author="A. Writer, B. Writer",
        date="2024-05-01",
        summary="A market made of glass & rain.",
    )
    assert [c.title for c in book.chapters] == ["The Stall", "Chapter 2", "Chapter 3"]
    first, second, third = (c.text for c in book.chapters)
    assert first == "Juno walked in.\n\nRain & glass,\neverywhere."  # one blank line between paragraphs
    assert "alert" not in first and "color" not in first
    # A fence and a heading inside the text are neutralised: they would hide or start chapters.
    assert second == "She paid.\n\n~ ~ ~\n\n### not a heading\n\nThe end."
    assert third == "No heading on this page, but text."
    assert any("left out" in note for note in book.notes)  # the navigation page and the empty part page
    assert_reads_back(book)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"Chapter 1\n\nThis is a text file with an .epub name.\n"), "not a complete ZIP"),
        (lambda p: p.write_bytes(make_epub(p, [("One", "<p>Text.</p>")]).read_bytes()[:300]), "not a complete ZIP"),
        (lambda p: _zip(p, {"hello.txt": "not an epub"}), "not a readable EPUB"),
        (lambda p: _zip(p, {"mimetype": "application/epub+zip", "META-INF/container.xml": "<broken"}), "not a readable EPUB"),
        (lambda p: make_epub(p, [("Cover", "")]), "no chapter text"),
    ],
    ids=["empty", "text", "truncated", "zip-not-epub", "broken-container", "no-text"],
)  # fmt: skip
def test_a_bad_epub_is_refused_with_its_reason_and_leaves_nothing(tmp_path, make, fragment):
    source = tmp_path / "bad.epub"
    make(source)
    library = tmp_path / "lib"
    with pytest.raises(ApplicationError, match=re.escape(fragment)) as info:
        import_book_file(source, library_dir=library)
    assert "bad.epub" in info.value.message
    assert library_files(library) == []


def _zip(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)


def test_an_epub_that_unpacks_over_the_limit_is_refused(tmp_path):
    source = tmp_path / "bomb.epub"
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr("OEBPS/big.xhtml", "a" * 500_000)  # compresses to ~1 KB
    with pytest.raises(ApplicationError, match="unpacks to"):
        import_book_file(source, library_dir=tmp_path / "lib", max_bytes=100_000)


# ---------------------------------------------------------------------------------------------
# Bad text input


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.txt", b"", "is empty"),
        ("blank.md", b"  \n\n\t\n", "is empty"),
        ("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "binary file (a PNG image)"),
        ("noise.txt", bytes(range(256)) * 8, "binary file"),
        ("shift_jis.txt", "雨の日の物語。".encode("shift_jis") * 20, "not UTF-8"),
        ("book.epub.txt", b"PK\x03\x04" + b"\x00" * 64, "ZIP archive or a Word/EPUB document"),
        ("report.pdf", b"%PDF-1.7", "is a .pdf file"),
        ("notes", b"Chapter 1\n\nText.", "without an extension"),
        ("title_only.md", b"# Only a Title\n", "no chapter text"),
    ],
)
def test_bad_text_books_are_refused_with_a_clear_reason(tmp_path, name, data, fragment):
    source = tmp_path / name
    source.write_bytes(data)
    library = tmp_path / "lib"
    with pytest.raises(ApplicationError, match=re.escape(fragment)):
        import_book_file(source, library_dir=library)
    assert library_files(library) == []


def test_a_missing_file_and_a_file_over_the_limit_are_refused_before_reading(tmp_path):
    with pytest.raises(ApplicationError, match="No such book file"):
        import_book_file(tmp_path / "nowhere.txt", library_dir=tmp_path / "lib")
    big = tmp_path / "big.txt"
    big.write_bytes(b"Chapter 1\n\n" + b"word " * 30_000)
    with pytest.raises(ApplicationError, match=r"big.txt' is .*; the limit is 100,000 bytes"):
        import_book_file(big, library_dir=tmp_path / "lib", max_bytes=100_000)
    with pytest.raises(ApplicationError, match="the limit is"):  # bytes are checked the same way
        import_book_file(
            big.read_bytes(), filename="big.txt", library_dir=tmp_path / "lib", max_bytes=100_000
        )
    assert library_files(tmp_path / "lib") == []


@pytest.mark.parametrize("codec", ["cp1252", "latin-1"])
def test_windows_1252_and_latin_1_books_are_decoded(tmp_path, codec):
    text = (
        "Café Noir\n\nChapter 1\n\nThe naïve garçon said « bonjour » and left.\n\nChapter 2\n\nÀ bientôt.\n"
    )
    if codec == "cp1252":
        text = text.replace("and left", "and left — quickly")  # an em dash exists in cp1252, not in Latin-1
    source = tmp_path / "cafe.txt"
    source.write_bytes(text.encode(codec))
    book = import_book_file(source, library_dir=tmp_path / "lib")
    assert book.metadata.title == "Café Noir" and book.slug == "cafe-noir"
    assert "naïve garçon" in book.chapters[0].text and book.chapters[1].text == "À bientôt."
    assert book.path.read_bytes().decode("utf-8")  # stored as UTF-8
    assert_reads_back(book)


def test_html_and_scripts_in_a_text_book_become_text(tmp_path):
    source = tmp_path / "web_export.txt"
    source.write_text(
        "<h1>Saved Page</h1>\n<p>By A. Writer</p>\n"
        "<h2>Chapter 1</h2>\n<p>Juno &amp; Static ran.</p><script>document.location='http://evil'</script>\n"
        "<h2>Chapter 2</h2>\n<p>They hid.<br>Rain fell.</p><!-- a comment -->\n<p>1 < 2 and <3 stay.</p>\n",
        encoding="utf-8",
    )
    book = import_book_file(source, library_dir=tmp_path / "lib")
    assert [c.text for c in book.chapters] == [
        "Juno & Static ran.",
        "They hid.\nRain fell.\n\n1 < 2 and <3 stay.",
    ]
    assert book.metadata.title == "Saved Page" and book.metadata.author == "A. Writer"
    stored = book.path.read_text(encoding="utf-8")
    assert "<script" not in stored and "evil" not in stored and "comment" not in stored
    assert any("HTML markup was turned into text" in n and "<script>" in n for n in book.notes)
    assert_reads_back(book)


# ---------------------------------------------------------------------------------------------
# One chapter, a 5 MB chapter, headings and fences inside chapters


def test_a_book_with_one_chapter_imports_with_a_note_and_gives_no_pairs(tmp_path):
    source = tmp_path / "short.md"
    source.write_text(
        "# Short\n\nOnly one chapter, and no heading for it at all, just prose. " * 3, encoding="utf-8"
    )
    book = import_book_file(source, library_dir=tmp_path / "lib")
    assert len(book.chapters) == 1 and book.pairs == 0
    assert "1 chapter: gives no training pairs" in book.notes[0]
    assert_reads_back(book)
    [summary] = list_books(tmp_path / "lib")
    assert (summary.chapters, summary.pairs) == (1, 0) and "gives no training pairs" in summary.notes[0]


def test_a_5_mb_chapter_imports_whole_and_its_pair_is_counted_out(tmp_path):
    sentence = "Rain ran down the glass of stack number {i}, and Juno counted the drops again. "
    huge = "".join(sentence.format(i=i) for i in range(5 * 1024 * 1024 // len(sentence) + 1))
    source = tmp_path / "flood.txt"
    source.write_text(
        f"Flood\n\nChapter 1\n\n{'Juno ran. ' * 50}\n\nChapter 2: The Flood\n\n{huge}\n\nChapter 3\n\n"
        f"{'The water went down. ' * 40}\n",
        encoding="utf-8",
    )
    assert source.stat().st_size > 5 * 1024 * 1024
    library = tmp_path / "lib"
    book = import_book_file(source, library_dir=library)
    assert [len(c.text) for c in book.chapters][1] == len(huge.strip())
    assert book.pairs == 1  # chapter 2 is over the answer limit; chapter 3 after it still pairs
    assert any(
        f"{len(huge.strip()):,} characters" in n and f"{DEFAULT_MAX_ANSWER_CHARS:,}" in n for n in book.notes
    )
    assert_reads_back(book)
    # The count is build_dataset's own.
    result = build_dataset(
        books_dir=library, out_dir=tmp_path / "ds", count_tokens=words, budget_tokens=BUDGET
    )
    assert result["train"] + result["test"] == book.pairs == 1


def test_headings_fences_and_titles_inside_chapters_round_trip(tmp_path):
    meta = BookMetadata(
        title="Odd Shapes #", summary="## Foreword\n*In italics*\n```\n\n\n\nSecond paragraph."
    )
    long_title = "A Title So Long That It Would Never Fit On One Heading Line Of The Book At All, Really"
    chapters = normalise_chapters(
        [
            ChapterText(
                1, "CHAPTER XIV", "# Part Two\n\nText.\n\n## Interlude\n\n### A scene\n\n~~~\n\nMore."
            ),
            ChapterText(2, long_title, "```python\nprint('x')\n```"),
            ChapterText(3, "And then...", "Three."),
            ChapterText(4, "Chapter 9: The Real Title.", "Four."),
            ChapterText(5, "Prologue", "Five."),
            ChapterText(6, "Empty", "   \n\n  "),  # nothing: no chapter
        ]
    )
    assert [c.title for c in chapters] == [
        "Chapter 1", chapters[1].title, "And then", "The Real Title", "Prologue"
    ]  # fmt: skip
    assert chapters[1].title.endswith("…") and len(f"Chapter 2: {chapters[1].title}") <= 80
    assert chapters[0].text == "### Part Two\n\nText.\n\n### Interlude\n\n### A scene\n\n~ ~ ~\n\nMore."
    assert chapters[1].text == "` ` `python\nprint('x')\n` ` `"

    book = import_book_file(
        render_book(BookMetadata(title="x"), chapters).encode(), filename="odd.md", library_dir=tmp_path,
        title=meta.title, summary=meta.summary,
    )  # fmt: skip
    assert book.metadata.title == "Odd Shapes"
    assert book.metadata.summary == "Foreword\nIn italics\n` ` `\n\nSecond paragraph."
    assert [(c.title, c.text) for c in book.chapters] == [(c.title, c.text) for c in chapters]
    assert_reads_back(book)


def test_a_long_chapter_zero_is_shortened_to_what_the_dataset_keeps(tmp_path):
    summary = "A sentence of the summary that goes on. " * 150  # 6,000 characters
    book = import_book_file(
        NEON, library_dir=tmp_path, summary=summary, date="2024", characters="Juno. " * 200
    )
    assert len(book.metadata.characters) <= lib.LONG_FIELD_MAX_CHARS
    assert book.metadata.summary.endswith("…") and len(book.metadata.summary) < 2000
    assert any("summary was shortened" in n for n in book.notes)
    assert_reads_back(book)


# ---------------------------------------------------------------------------------------------
# Never overwrite, never half-written


def test_an_existing_book_is_never_replaced_unless_asked(tmp_path):
    library = tmp_path / "lib"
    first = import_book_file(NEON, library_dir=library)
    before = first.path.read_bytes()
    with pytest.raises(BookExistsError, match=r"already has 'neon-rain.md'") as info:
        import_book_file(NEON, library_dir=library, author="Someone Else")
    assert info.value.path == first.path and "--overwrite" in info.value.message
    assert first.path.read_bytes() == before

    again = import_book_file(NEON, library_dir=library, author="Someone Else", overwrite=True)
    assert again.replaced and read_library_book(again.path).metadata.author == "Someone Else"
    assert library_files(library) == ["neon-rain.md"]


def test_a_failure_after_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(path):
        raise ApplicationError("disk trouble")

    monkeypatch.setattr(lib, "read_library_book", boom)
    with pytest.raises(ApplicationError, match="disk trouble"):
        import_book_file(NEON, library_dir=tmp_path / "lib")
    assert library_files(tmp_path / "lib") == []  # the work folder is gone and no book appeared


# ---------------------------------------------------------------------------------------------
# Listing, deleting, folders


def test_list_and_delete_books(tmp_path):
    library = tmp_path / "lib"
    assert list_books(library) == []
    for source in (LIGHTHOUSE, NEON):
        import_book_file(source, library_dir=library)
    (library / "broken.txt").write_bytes(b"\x00\x01\x02" * 100)  # a hand-placed file build_dataset would try

    listed = {b.slug: b for b in list_books(library)}
    assert set(listed) == {"broken", "neon-rain", "the-lighthouse-keepers-daughter"}
    neon = listed["neon-rain"]
    assert (neon.title, neon.chapters, neon.pairs, neon.error) == ("NEON RAIN", 5, 4, "")
    assert neon.words == 2361 and neon.bytes == (library / "neon-rain.md").stat().st_size
    assert "binary" in listed["broken"].error and listed["broken"].pairs == 0
    assert json.dumps([b.to_json() for b in listed.values()])

    assert delete_book(library, "neon-rain") == library / "neon-rain.md"
    assert not (library / "neon-rain.md").exists()
    with pytest.raises(ApplicationError, match="has no book 'neon-rain'"):
        delete_book(library, "neon-rain")
    with pytest.raises(ApplicationError, match="not a book name"):
        delete_book(library, "../mesu_web/settings")


def test_a_folder_gives_its_book_files_and_skips_the_readme(tmp_path):
    files, skipped = book_files([SAMPLES])
    assert files == [SAMPLES / "neon_rain.txt", SAMPLES / "the_lighthouse_keepers_daughter.md"]
    assert [(p.name, "describes the folder" in why) for p, why in skipped] == [("README.md", True)]

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.txt", "b.epub", ".hidden.md", "cover.jpg", "LICENSE.txt"):
        (folder / name).write_text("x")
    (folder / "sub").mkdir()
    files, skipped = book_files([folder, folder / "a.txt", SAMPLES / "README.md", tmp_path / "named.pdf"])
    # A named file is taken as given (once), and fails on import if it is no book; a README never is one.
    assert [p.name for p in files] == ["a.txt", "b.epub", "named.pdf"]
    assert sorted(p.name for p, _ in skipped) == [".hidden.md", "LICENSE.txt", "README.md", "cover.jpg"]


# ---------------------------------------------------------------------------------------------
# The command, end to end with build_dataset


def run_import(*args: str) -> tuple[dict, CommandError | None]:
    out = io.StringIO()
    error = None
    try:
        call_command("import_books", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        error = exc
    return json.loads(out.getvalue()), error


def test_import_books_then_build_dataset_gives_every_pair(tmp_path):
    from training.management.commands.build_dataset import serving_token_counter

    library = tmp_path / "books"
    result, error = run_import(str(SAMPLES), "--library", str(library), "--author", "MeSu Samples")
    assert error is None
    assert (result["imported"], result["skipped"], result["failed"]) == (2, 1, 0)
    by_file = {Path(r["file"]).name: r for r in result["books"]}
    assert by_file["README.md"]["status"] == "skipped"
    assert (
        by_file["neon_rain.txt"]["slug"] == "neon-rain"
        and by_file["neon_rain.txt"]["author"] == "MeSu Samples"
    )
    assert library_files(library) == ["neon-rain.md", "the-lighthouse-keepers-daughter.md"]

    counts = build_dataset(
        books_dir=library, out_dir=tmp_path / "ds", count_tokens=serving_token_counter(), budget_tokens=BUDGET
    )
    expected = sum(b.chapters - 1 for b in list_books(library))
    assert expected == 9 == sum(r["pairs"] for r in result["books"] if r["status"] == "imported")
    assert counts["train"] + counts["test"] == expected and counts["skipped"] == 0
    assert set(counts["books"]) == {"neon-rain", "the-lighthouse-keepers-daughter"}  # no README "book"

    # Again: both are already there, which is no failure.
    again, error = run_import(str(SAMPLES), "--library", str(library))
    assert error is None and (again["imported"], again["skipped"], again["failed"]) == (0, 3, 0)
    reasons = {Path(r["file"]).name: r["reason"] for r in again["books"]}
    assert "already has 'neon-rain.md'" in reasons["neon_rain.txt"]
    assert "already has 'the-lighthouse-keepers-daughter.md'" in reasons["the_lighthouse_keepers_daughter.md"]


def test_build_dataset_on_epubs_gives_the_chapters_import_books_gives(tmp_path):
    """One reader: build_dataset reads a folder of EPUBs as import_books imports them, the navigation
    page (a table of contents) no chapter of either."""
    folder = tmp_path / "epubs"
    folder.mkdir()
    make_epub(
        folder / "glass.epub",
        [
            ("Chapter 1: The Stall", "<p>Juno walked into the glass market at dawn.</p><p>Rain fell.</p>"),
            ("Chapter 2: Static", "<p>Her earpiece hissed.</p><p>Static had a plan, as always.</p>"),
            ("", "<p>No heading on this page, but the story goes on.</p>"),
        ],
    )  # fmt: skip
    make_epub(
        folder / "salt.epub",
        [("Salt", "<p>The sea took the pier.</p>"), ("Iron", "<p>They built it again, in iron.</p>")],
        title="Salt and Iron",
        authors=("B. Writer",),
    )
    library = tmp_path / "lib"
    result, error = run_import(str(folder), "--library", str(library))
    assert error is None and result["imported"] == 2

    def pairs_by_title(books_dir: Path, out: Path) -> dict[str, list[tuple[int, str]]]:
        counts = build_dataset(
            books_dir=books_dir, out_dir=out, count_tokens=words, budget_tokens=BUDGET, test_fraction=0
        )
        title_of = {book_id: info["title"] for book_id, info in counts["books"].items()}
        by_title: dict[str, list[tuple[int, str]]] = {}
        for pair in read_jsonl(out / "train.jsonl"):
            by_title.setdefault(title_of[pair.book], []).append((pair.k, pair.answer))
        return by_title

    from_epubs = pairs_by_title(folder, tmp_path / "ds-epub")
    assert from_epubs == pairs_by_title(library, tmp_path / "ds-lib")
    assert from_epubs["The Glass Market"] == [
        (1, "Her earpiece hissed.\n\nStatic had a plan, as always."),
        (2, "No heading on this page, but the story goes on."),
    ]
    for epub, slug in (("glass.epub", "the-glass-market"), ("salt.epub", "salt-and-iron")):
        _, chapters = load_book_file(folder / epub)
        assert [c.text for c in chapters] == [
            c.text for c in read_library_book(library / f"{slug}.md").chapters
        ]
    first = load_book_file(folder / "glass.epub")[1][0]
    assert first.text.startswith("Juno walked")  # chapter 1 is the story's, not the table of contents


def test_import_books_goes_on_past_a_bad_file_and_exits_non_zero(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(NEON, folder)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "broken.epub").write_bytes(b"PK\x03\x04 not really")
    result, error = run_import(str(folder), "--library", str(tmp_path / "lib"), "--version", "1.0")
    assert isinstance(error, CommandError) and "2 file(s) failed" in str(error)
    statuses = {Path(r["file"]).name: r["status"] for r in result["books"]}
    assert statuses == {"broken.epub": "failed", "empty.txt": "failed", "neon_rain.txt": "imported"}
    assert [r["version"] for r in result["books"] if r["status"] == "imported"] == ["1.0"]
    assert library_files(tmp_path / "lib") == ["neon-rain.md"]

    with pytest.raises(CommandError, match="describe one book, but 2 book files"):
        call_command(
            "import_books",
            str(SAMPLES),
            "--library",
            str(tmp_path / "lib"),
            "--title",
            "One",
            stdout=io.StringIO(),
        )


def test_import_books_with_only_a_readme_is_an_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(SAMPLES / "README.md", folder)
    result, error = run_import(str(folder), "--library", str(tmp_path / "lib"))
    assert isinstance(error, CommandError) and "no book file" in str(error)
    assert (result["imported"], result["skipped"]) == (0, 1)


def test_import_books_uses_the_settings_library_by_default(tmp_path, settings):
    settings.TRAINING_BOOKS_DIR = tmp_path / "default-books"
    result, error = run_import(str(NEON))
    assert error is None and result["library"] == str(tmp_path / "default-books")
    assert library_files(tmp_path / "default-books") == ["neon-rain.md"]
