"""Exports of a story (its author's) and of a reader's personalised copy as EPUB, DOCX and Markdown, each
read back with its own library: chapter 0 as the title page, the chapters in order, the disclosure label
on a sponsored chapter, user text escaped, only what the user may see; the command; the pages; a
2,000-chapter story in bounded memory."""

from __future__ import annotations

import io
import json
import re
import time
import tracemalloc
import zipfile
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import docx
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from ebooklib import ITEM_DOCUMENT, epub
from lxml import etree

from tests.factories import ChapterFactory, StoryFactory, approved_brand
from writer import exports
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

XHTML = "{http://www.w3.org/1999/xhtml}"
HOSTILE = "Before <script>alert('x')</script> after.\x0b\x07 *Softly* & **loudly**, she said."
LABEL = "Includes a paid placement by Tidewave"


# --- The world -------------------------------------------------------------------------------------


def _request(story, user, kind, next_number, *, n=1, status=GenerationRequest.Status.SUCCEEDED):  # noqa: ANN001, ANN202
    return GenerationRequest.objects.create(
        story=story, requested_by=user, kind=kind, engine="vllm", max_new_tokens=24, next_number=next_number,
        n=n, status=status,
    )


def _option(request, index, text, *, brand=None, status=ReviewStatus.NONE, chapter=None):  # noqa: ANN001, ANN202
    return GenerationOption.objects.create(
        request=request, index=index, text=text, format_ok=True, brand=brand, review_status=status,
        accepted_chapter=chapter,
    )


@pytest.fixture
def library(users):
    """alice's published story: chapter 1 plain, chapter 2 sponsored (an approved Tidewave placement),
    chapter 3 full of markup and control characters. rita asked for two personalised chapters (one
    plain option shown, one waiting for review, one approved placement), one failed request; ross asked
    for one; alice has an option she never accepted."""
    alice, rita, ross = users["alice"], users["rita"], users["ross"]
    story = StoryFactory(
        owner=alice, title="Salt & <Static>", slug="salt-static", summary="Two friends run a stall.",
        characters="Lou (baker); Pip (loud).", setting="Porthwen, rainy.", intent_notes="Cosy, no villains.",
    )
    ChapterFactory(story=story, number=1, title="The Stall", text="Lou opened the stall at dusk.")
    sponsored = ChapterFactory(story=story, number=2, title="", text="Lou waxed her Tidewave board at noon.")
    ChapterFactory(story=story, number=3, title="Odd <b>title</b>\x07", text=HOSTILE)
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    author_request = _request(story, alice, GenerationRequest.Kind.AUTHOR, 2, n=2)
    _option(author_request, 0, "Lou waxed her Tidewave board at noon.", brand=brand, status=ReviewStatus.APPROVED,
            chapter=sponsored)
    _option(author_request, 1, "An option alice never accepted.")
    reader = GenerationRequest.Kind.READER
    first = _request(story, rita, reader, 3, n=2)
    _option(first, 0, "Rita's gentle chapter, just for her.")
    _option(first, 1, "Rita rides a Tidewave board (waiting).", brand=brand, status=ReviewStatus.PENDING)
    second = _request(story, rita, reader, 4)
    _option(second, 0, "Rita buys a Tidewave board at last.", brand=brand, status=ReviewStatus.APPROVED)
    failed = _request(story, rita, reader, 4, status=GenerationRequest.Status.FAILED)
    _option(failed, 0, "A chapter from a failed request.")
    held = _request(story, rita, reader, 4)
    _option(held, 0, "A held chapter naming two brands.", brand=brand, status=ReviewStatus.HELD)
    _option(_request(story, ross, reader, 2), 0, "Ross's secret chapter.")
    draft = StoryFactory(owner=alice, title="Draft", slug="draft-story", is_published=False)
    ChapterFactory(story=draft, number=1, text="A draft chapter.")
    return SimpleNamespace(story=story, draft=draft, brand=brand, **users)


NOT_FOR_ANYONE = ("An option alice never accepted.", "(waiting)", "failed request", "held chapter")


def _export(story, fmt, reader=None) -> bytes:  # noqa: ANN001
    out = io.BytesIO()
    exports.story_export(story=story, fmt=fmt, out=out, reader=reader)
    return out.getvalue()


# --- Reading the files back ---------------------------------------------------------------------------


def _epub_pages(data: bytes, tmp_path: Path) -> tuple[epub.EpubBook, list[etree._Element]]:
    """The book, and each spine document parsed as XML (a parse error fails the test: well-formed XHTML)."""
    path = tmp_path / "read.epub"
    path.write_bytes(data)
    book = epub.read_epub(str(path), {"ignore_ncx": True})
    pages = []
    for idref, _linear in book.spine:
        item = book.get_item_with_id(idref)
        if item.get_type() == ITEM_DOCUMENT and not isinstance(item, epub.EpubNav) and idref != "nav":
            pages.append(etree.fromstring(item.get_content()))
    return book, pages


def _text(element: etree._Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _docx_chapters(data: bytes) -> tuple[docx.document.Document, list[list[str]]]:
    """The document, and its paragraphs grouped by chapter (a "Heading 1" starts one; [0] is the title page)."""
    document = docx.Document(io.BytesIO(data))
    groups: list[list[str]] = [[]]
    for paragraph in document.paragraphs:
        if paragraph.style.name == "Heading 1":
            groups.append([])
        groups[-1].append(paragraph.text)
    return document, groups


def _md_chapters(data: bytes) -> list[str]:
    return data.decode("utf-8").split("\n---\n")


# --- The author's export ----------------------------------------------------------------------------------


def test_epub_title_page_chapters_label_and_escaping(library, tmp_path):
    data = _export(library.story, "epub")
    book, pages = _epub_pages(data, tmp_path)
    assert book.get_metadata("DC", "title")[0][0] == "Salt & <Static>"
    assert len(pages) == 4  # chapter 0 and three chapters
    cover = _text(pages[0])
    for expected in ("Salt & <Static>", "Two friends run a stall.", "Chapter 0", "Lou (baker); Pip (loud).",
                     "Porthwen, rainy.", "Cosy, no villains."):
        assert expected in cover
    headings = [_text(page.find(f".//{XHTML}h1")) for page in pages[1:]]
    assert headings == ["The Stall", "Chapter 2", "Odd <b>title</b>"]
    assert "Lou opened the stall at dusk." in _text(pages[1])
    # The sponsored chapter keeps the label, as the chapter page shows it; the others have none.
    label = pages[2].find(f".//{XHTML}p[@class='disclosure']")
    assert label is not None and _text(label) == LABEL
    assert all(page.find(f".//{XHTML}p[@class='disclosure']") is None for page in (pages[1], pages[3]))
    # User markup is text, never markup: no script element, no <b> in the title; markdown still renders.
    hostile = pages[3]
    assert not hostile.findall(f".//{XHTML}script") and not hostile.findall(f".//{XHTML}b")
    assert "Before <script>alert('x')</script> after." in _text(hostile)
    assert _text(hostile.find(f".//{XHTML}em")) == "Softly"
    assert _text(hostile.find(f".//{XHTML}strong")) == "loudly"
    raw = zipfile.ZipFile(io.BytesIO(data)).read("EPUB/chapter-0003.xhtml")
    assert b"&lt;script&gt;" in raw and b"\x0b" not in raw and b"\x07" not in raw
    assert not any(text in data.decode("latin-1") for text in NOT_FOR_ANYONE)


def test_docx_title_page_chapters_label_and_text(library):
    document, groups = _docx_chapters(_export(library.story, "docx"))
    assert document.core_properties.title == "Salt & <Static>"
    assert document.paragraphs[0].style.name == "Title" and document.paragraphs[0].text == "Salt & <Static>"
    cover = "\n".join(groups[0])
    for expected in ("Two friends run a stall.", "Chapter 0", "Lou (baker); Pip (loud).", "Porthwen, rainy.",
                     "Cosy, no villains."):
        assert expected in cover
    assert [group[0] for group in groups[1:]] == ["The Stall", "Chapter 2", "Odd <b>title</b>"]
    assert groups[1][1:] == ["Lou opened the stall at dusk."]
    assert groups[2][1:] == [LABEL, "Lou waxed her Tidewave board at noon."]
    assert groups[3][1:] == ["Before <script>alert('x')</script> after. Softly & loudly, she said."]
    hostile = document.paragraphs[-1]
    assert [run.text for run in hostile.runs if run.italic] == ["Softly"]
    assert [run.text for run in hostile.runs if run.bold] == ["loudly"]
    assert not any(text in "\n".join(sum(groups, [])) for text in NOT_FOR_ANYONE)


def test_docx_keeps_the_chapter_pages_formatting(users):
    """Quotes, scene breaks, headings inside a chapter and line breaks, as the chapter page renders them."""
    story = StoryFactory(owner=users["alice"])
    text = "> Dear Lou,\n> come home.\n\n***\n\n# The Letter\n\nLine one\nLine ~~two~~ *three*"
    ChapterFactory(story=story, number=1, title="Letters", text=text)
    document = docx.Document(io.BytesIO(_export(story, "docx")))
    paragraphs = document.paragraphs[-5:]
    assert [(p.style.name, p.text) for p in paragraphs] == [
        ("Heading 1", "Letters"),
        ("Quote", "Dear Lou,\ncome home."),
        ("Normal", "* * *"),
        ("Heading 2", "The Letter"),
        ("Normal", "Line one\nLine two three"),
    ]
    runs = paragraphs[-1].runs
    assert [r.text for r in runs if r.font.strike] == ["two"] and [r.text for r in runs if r.italic] == ["three"]


def test_markdown_title_page_chapters_label_and_escaping(library):
    data = _export(library.story, "md")
    parts = _md_chapters(data)
    assert parts[0].startswith("# Salt & \\<Static>\n")
    for expected in ("Two friends run a stall.", "## Chapter 0", "Lou (baker); Pip (loud).", "Porthwen, rainy.",
                     "Cosy, no villains."):
        assert expected in parts[0]
    assert [part.split("\n")[1] for part in parts[1:]] == ["## The Stall", "## Chapter 2", "## Odd \\<b>title\\</b>"]
    assert f"> {LABEL}\n\nLou waxed her Tidewave board at noon." in parts[2]
    assert "Before \\<script>alert('x')\\</script> after. *Softly* & **loudly**" in parts[3]
    assert not re.search(rb"(?<!\\)<[A-Za-z/!?]", data)  # every "<" that could open a tag is escaped
    assert b"\x0b" not in data and b"\x07" not in data
    assert not any(text in data.decode() for text in NOT_FOR_ANYONE)


# --- A reader's copy ---------------------------------------------------------------------------------------

RITA_ORDER = ["The Stall", "Chapter 2", "Chapter 3 — your chapter (option 1)", "Odd <b>title</b>",
              "Chapter 4 — your chapter"]


def test_a_readers_copy_holds_the_story_and_only_what_the_reader_was_served(library, tmp_path):
    rita = library.rita
    _, pages = _epub_pages(_export(library.story, "epub", reader=rita), tmp_path)
    assert "A personalised copy for rita" in _text(pages[0])
    assert [_text(page.find(f".//{XHTML}h1")) for page in pages[1:]] == RITA_ORDER
    assert "Rita's gentle chapter, just for her." in _text(pages[3])
    # Her approved placement carries the label; the story's sponsored chapter too.
    assert _text(pages[5].find(f".//{XHTML}p[@class='disclosure']")) == LABEL
    assert _text(pages[2].find(f".//{XHTML}p[@class='disclosure']")) == LABEL
    everything = " ".join(_text(page) for page in pages)
    assert "Ross's secret chapter." not in everything
    assert not any(text in everything for text in NOT_FOR_ANYONE)

    _, groups = _docx_chapters(_export(library.story, "docx", reader=rita))
    assert [group[0] for group in groups[1:]] == RITA_ORDER
    assert groups[5][1:] == [LABEL, "Rita buys a Tidewave board at last."]

    markdown = _export(library.story, "md", reader=rita).decode()
    assert [part.split("\n")[1][3:] for part in _md_chapters(markdown.encode())[1:]] == [
        "The Stall", "Chapter 2", "Chapter 3 — your chapter (option 1)", "Odd \\<b>title\\</b>", "Chapter 4 — your chapter"
    ]
    assert "Ross's secret chapter." not in markdown and "(waiting)" not in markdown

    # Another reader's copy: the story and their own chapter, none of rita's.
    ross_copy = _export(library.story, "md", reader=library.ross).decode()
    assert "Ross's secret chapter." in ross_copy and "Rita" not in ross_copy


def test_a_reader_under_18_gets_the_chapter_as_written_without_the_brand(library):
    """Issue 17: no placement ever reaches a reader who said they are under 18, in a copy as on the page: the
    sponsored chapter as its option was written before the brand was placed, unlabelled; with no such draft,
    the withheld notice. The author's own export keeps the chapter and its label."""
    from brands.models import AgeBracket, ReaderSponsorshipPreference

    ReaderSponsorshipPreference.objects.create(user=library.rita, age_bracket=AgeBracket.UNDER_18)
    option = GenerationOption.objects.get(accepted_chapter__number=2, accepted_chapter__story=library.story)
    option.draft = "Lou waxed her old board at noon."
    option.save(update_fields=["draft"])
    chapters = _md_chapters(_export(library.story, "md", reader=library.rita))
    second = next(part for part in chapters if "Chapter 2\n" in part or "## Chapter 2" in part)
    assert "Lou waxed her old board at noon." in second
    assert "Tidewave" not in second and LABEL not in second
    GenerationOption.objects.filter(pk=option.pk).update(draft="")
    copy = _export(library.story, "md", reader=library.rita).decode()
    assert exports.WITHHELD_NOTICE in copy and "Lou waxed her Tidewave board" not in copy
    authors = _export(library.story, "md").decode()
    assert "Lou waxed her Tidewave board at noon." in authors and LABEL in authors


def test_a_reader_gets_the_notice_for_a_chapter_withheld_for_review(library, monkeypatch):
    """A chapter the page withholds from readers (edited to name a brand without approval) is the same
    notice in a reader's copy; its author still exports the text."""
    from brands.matching import ChapterPlacement

    def check(*, chapter, sponsor_name):  # noqa: ANN001, ANN202
        return ChapterPlacement(withheld=chapter.number == 1, note="edited")

    monkeypatch.setattr(exports, "chapter_placement_check", check)
    reader_copy = _export(library.story, "md", reader=library.rita).decode()
    assert exports.WITHHELD_NOTICE in reader_copy and "Lou opened the stall" not in reader_copy
    authors = _export(library.story, "md").decode()
    assert "Lou opened the stall" in authors and exports.WITHHELD_NOTICE not in authors


def test_odd_titles_make_safe_file_names():
    assert exports.safe_filename('Salt & <Static> / "..\\x"\x07', "epub") == "salt-static-x.epub"
    assert exports.safe_filename("../../etc/passwd", "md") == "etc-passwd.md"
    assert exports.safe_filename("雨の街", "docx") == "雨の街.docx"
    assert exports.safe_filename("<>?*", "md") == "story.md"
    assert exports.xml_safe("a\x00b\x0bc\ufffed\r\ne") == "abcd\ne"


# --- The command ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["epub", "docx", "md"])
def test_export_story_command_writes_the_file_and_prints_json(library, tmp_path, fmt):
    out_file, stdout = tmp_path / f"out.{fmt}", StringIO()
    call_command("export_story", "--story", "salt-static", "--format", fmt, "--out", str(out_file), stdout=stdout)
    payload = json.loads(stdout.getvalue())
    assert payload == {"story": "salt-static", "format": fmt, "chapters": 3, "path": str(out_file)}
    assert out_file.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_export_story_command_by_id_and_a_readers_copy(library, tmp_path):
    stdout = StringIO()
    out_file = tmp_path / "copy.md"
    call_command("export_story", "--story", str(library.story.pk), "--format", "MD", "--out", str(out_file),
                 "--reader", "rita", stdout=stdout)
    assert json.loads(stdout.getvalue())["chapters"] == 5
    assert "Rita's gentle chapter" in out_file.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--story", "no-such-story", "--format", "md"], "No story with the slug or id 'no-such-story'"),
        (["--story", "salt-static", "--format", "pdf"], "Unknown export format 'pdf': choose epub, docx, md"),
        (["--story", "draft-story", "--format", "md", "--reader", "rita"], "rita cannot read 'draft-story'"),
        (["--story", "salt-static", "--format", "md", "--reader", "mia"], "mia is not a reader"),
        (["--story", "salt-static", "--format", "md", "--reader", "nobody"], "No user named 'nobody'"),
    ],
)
def test_export_story_command_errors(library, tmp_path, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command("export_story", *args, "--out", str(tmp_path / "x.md"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["missing dir", "a directory", "proc"])
def test_export_story_command_refuses_an_unwritable_path(library, tmp_path, where):
    out = {"missing dir": tmp_path / "nope" / "x.md", "a directory": tmp_path, "proc": Path("/proc/mesu.md")}[where]
    with pytest.raises(CommandError, match=f"Cannot write {out}"):
        call_command("export_story", "--story", "salt-static", "--format", "md", "--out", str(out))


# --- The pages ---------------------------------------------------------------------------------------------


def _download(client, name: str, slug: str, fmt: str):  # noqa: ANN001, ANN202
    return client.get(reverse(name, args=[slug, fmt]))


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("epub", "application/epub+zip"),
     ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
     ("md", "text/markdown; charset=utf-8")],
)
def test_the_author_downloads_the_story(library, client_for, fmt, content_type):
    response = _download(client_for("alice"), "writer:story_export", "salt-static", fmt)
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["Content-Disposition"] == f'attachment; filename="salt-static.{fmt}"'
    assert "no-store" in response["Cache-Control"]
    body = b"".join(response.streaming_content)
    if fmt == "md":
        assert LABEL.encode() in body
    else:
        assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None


def test_a_reader_downloads_their_copy_and_no_one_elses(library, client_for):
    response = _download(client_for("rita"), "writer:copy_export", "salt-static", "md")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="salt-static-copy-rita.md"'
    body = b"".join(response.streaming_content).decode()
    assert "Rita's gentle chapter" in body and "Ross's secret" not in body
    body = b"".join(_download(client_for("ross"), "writer:copy_export", "salt-static", "md").streaming_content)
    assert b"Ross's secret chapter." in body and b"Rita" not in body


def test_who_gets_what(library, client_for, client):
    story, copy = "writer:story_export", "writer:copy_export"
    cases = [
        ("rita", story, "salt-static", 403),  # the author's export: the author only
        ("bob", story, "salt-static", 403),
        ("root", story, "salt-static", 403),
        ("rita", story, "draft-story", 404),  # a draft: others must not learn it exists
        ("rita", copy, "draft-story", 404),
        ("mia", copy, "salt-static", 403),  # brand managers get nothing here
        ("mia", story, "salt-static", 403),
        ("mia", copy, "draft-story", 404),
        ("bob", copy, "salt-static", 200),  # an author reads others' published stories
        ("root", copy, "draft-story", 200),  # staff read drafts
        ("alice", story, "no-such-story", 404),
        ("alice", story, "salt-static", 200),
    ]
    for user, name, slug, expected in cases:
        assert _download(client_for(user), name, slug, "epub").status_code == expected, (user, name, slug)
    assert _download(client_for("alice"), story, "salt-static", "pdf").status_code == 404
    assert _download(client_for("rita"), copy, "salt-static", "pdf").status_code == 404
    anonymous = _download(client, copy, "salt-static", "md")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert client_for("alice").post(reverse(story, args=["salt-static", "md"])).status_code == 405


def test_the_story_page_offers_the_exports(library, client_for):
    url = reverse("writer:story_detail", args=["salt-static"])
    story_links = [reverse("writer:story_export", args=["salt-static", fmt]) for fmt in ("epub", "docx", "md")]
    copy_links = [reverse("writer:copy_export", args=["salt-static", fmt]) for fmt in ("epub", "docx", "md")]
    expected = {"alice": story_links, "rita": copy_links, "bob": copy_links, "mia": []}
    for user, links in expected.items():
        page = client_for(user).get(url).content.decode()
        assert [link for link in story_links + copy_links if link in page] == links, user


# --- A 2,000-chapter story -----------------------------------------------------------------------------------

LONG_CHAPTERS = 2000
PARAGRAPH = "Lou counted the crates by lamplight while Pip sang to the gulls. " * 32  # ~2.1 KB
CHAPTER_TEXT = f"{PARAGRAPH}\n\n{PARAGRAPH}"  # ~4.2 KB a chapter: 8.4 MB for the story


@pytest.fixture
def long_story(users):
    story = StoryFactory(owner=users["alice"], title="The Long Road", slug="the-long-road")
    Chapter.objects.bulk_create(
        Chapter(story=story, number=i, title=f"Mile {i}", text=f"Mile {i}.\n\n{CHAPTER_TEXT}")
        for i in range(1, LONG_CHAPTERS + 1)
    )
    return story


# Python's peak while exporting the 2,000-chapter story, whatever the chapters' length: Markdown holds
# one chunk of chapters; DOCX one chunk and one chapter's paragraphs (plus python-docx's template); EPUB
# also a small stub per chapter (its file name and title, for the table of contents) and the zip's
# directory entry, ~1.8 KB a chapter, never a chapter's text.
PEAK_LIMIT = {"md": 1_000_000, "docx": 4_000_000, "epub": 2_000 * LONG_CHAPTERS}


@pytest.mark.parametrize("fmt", ["md", "epub", "docx"])
def test_a_2000_chapter_story_exports_in_bounded_memory(long_story, tmp_path, fmt):
    """The story's text is 8.4 MB; the export's peak stays under half of it, and under its format's limit.
    tracemalloc sees Python's allocations only: DOCX's paragraphs are lxml (C) objects, which leave the
    document as each chapter is spooled (the next test)."""
    story_bytes = LONG_CHAPTERS * len(f"Mile 1.\n\n{CHAPTER_TEXT}")
    path = tmp_path / f"long.{fmt}"
    exports.story_export(story=StoryFactory(), fmt=fmt, out=io.BytesIO())  # imports and caches warm
    started = time.monotonic()
    tracemalloc.start()
    try:
        with path.open("wb") as out:
            result = exports.story_export(story=long_story, fmt=fmt, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert result.chapters == LONG_CHAPTERS
    assert peak < min(story_bytes / 2, PEAK_LIMIT[fmt]), (
        f"{fmt}: peak {peak / 1e6:.2f} MB for a {story_bytes / 1e6:.1f} MB story"
    )
    assert elapsed < 120, elapsed
    # And it is all there, in order.
    if fmt == "md":
        parts = _md_chapters(path.read_bytes())
        assert len(parts) == LONG_CHAPTERS + 1 and parts[-1].startswith("\n## Mile 2000\n")
    elif fmt == "docx":
        _, groups = _docx_chapters(path.read_bytes())
        assert [g[0] for g in groups[1:]] == [f"Mile {i}" for i in range(1, LONG_CHAPTERS + 1)]
        assert groups[-1][1] == "Mile 2000."
    else:
        archive = zipfile.ZipFile(path)
        assert len([n for n in archive.namelist() if n.startswith("EPUB/chapter-")]) == LONG_CHAPTERS + 1
        last = etree.fromstring(archive.read(f"EPUB/chapter-{LONG_CHAPTERS:04d}.xhtml"))
        assert _text(last.find(f".//{XHTML}h1")) == "Mile 2000"


def test_the_docx_body_never_holds_more_than_one_chapter(long_story, monkeypatch):
    """DOCX's C-side memory: the document's body holds the title page and at most one chapter at a time."""
    sizes: list[int] = []
    made = exports._docx_chapter

    def spy(doc, chapter):  # noqa: ANN001, ANN202
        made(doc, chapter)
        sizes.append(len(doc.document.element.body))

    monkeypatch.setattr(exports, "_docx_chapter", spy)
    _export(long_story, "docx")
    assert len(sizes) == LONG_CHAPTERS and max(sizes) == sizes[0] <= 30, max(sizes)

