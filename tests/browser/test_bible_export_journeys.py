"""Browser journeys for the story bible and the exports (issue 16), in real Chromium against the live app
on the demo data (`seed_demo`: ava's two published stories, the reader remy).

1. The author builds story bible entries from the pages: a character with an alias, true from chapter 1,
   then edited; and a character whose name is a common word ("Will"), accepted and listed as any other.
2. The author exports the story as EPUB from the story page; the download is read back with ebooklib.
3. A reader exports their copy of a published story as Markdown; the file holds the story's chapters,
   and the chapter written for them after the chapter it follows.

None of them asks the writer for text, so the vLLM server is not started for them: `vllm_settings` is
overridden below with the plain test settings (the Celery worker still runs, as `open_journey` starts
it, so the pages show their queues as listened to, as they do under `./dev up`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from ebooklib import epub
from lxml import etree
from playwright.sync_api import expect

from writer.bible import is_common_word
from writer.demo import DEMO_USERS, seed_demo
from writer.exports import CHAPTER_ZERO
from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story, StoryBibleEntry

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIGHTHOUSE = "The Lighthouse Keeper's Daughter"
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture
def vllm_settings(settings):
    """These journeys never generate: no model server (it takes ~60-90 s and ~5 GB to start)."""
    return settings


@pytest.fixture
def demo() -> dict[str, str]:
    """The demo users and stories; {username: password}."""
    seed_demo()
    return {user.username: user.password for user in DEMO_USERS}


def _open_story(j, title: str) -> None:  # noqa: ANN001 (a Journey)
    """From the home page to the story's page, as a user finds it."""
    page = j.page
    page.locator(".brand").click()
    page.get_by_role("link", name=title).first.click()
    expect(page.locator("h1").first).to_have_text(title)


def _download(page, link, folder: Path) -> Path:  # noqa: ANN001 (a Page, a Locator)
    """Click a download link; the file as the browser received it, saved under its suggested name."""
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.failure() is None, download.failure()
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


def _chapter_titles(story: Story) -> list[str]:
    return [chapter.display_title for chapter in story.chapters.order_by("number")]


# --- 1. The author builds the story bible -----------------------------------------------------------


def test_author_adds_and_edits_story_bible_entries(open_journey, demo):
    story = Story.objects.get(title=LIGHTHOUSE)
    assert not StoryBibleEntry.objects.filter(story=story).exists()

    j = open_journey("bible")
    page = j.page
    j.log_in("ava", demo["ava"])
    _open_story(j, LIGHTHOUSE)
    page.get_by_role("link", name="Story bible").click()
    expect(page.locator("h1")).to_contain_text("Story bible")
    expect(page.locator("#entries")).to_contain_text("No entries yet.")
    j.shot("bible-empty")

    # A character with an alias, true from chapter 1.
    page.get_by_role("link", name="Add an entry").click()
    expect(page.locator("#id_kind")).to_have_value(StoryBibleEntry.Kind.CHARACTER)
    expect(page.locator("#id_from_chapter")).to_have_value("1")
    page.fill("#id_name", "Wren Calloway")
    page.fill("#id_aliases", "Wren")
    page.fill("#id_description", "Sixteen; films the sunrise from the gallery rail every morning.")
    page.fill("#id_from_chapter", "1")
    j.shot("new-entry")
    page.get_by_role("button", name="Add to the story bible").click()
    expect(page.locator(".messages")).to_contain_text("“Wren Calloway” is in the story bible.")
    entries = page.locator("#entries li.bible-entry")
    expect(entries).to_have_count(1)
    wren = entries.filter(has=page.locator("strong.name", has_text="Wren Calloway"))
    expect(wren.locator(".aliases")).to_have_text("also Wren")
    expect(wren).to_contain_text("from chapter 1")
    expect(wren.locator(".description")).to_contain_text("films the sunrise")
    expect(page.locator("#entries h3")).to_have_text(["Characters"])
    j.shot("bible-one-entry")

    # Edit it: the form holds what was saved; a second alias, a new description, an end chapter.
    wren.get_by_role("link", name="edit").click()
    expect(page.locator("h1")).to_contain_text("Edit “Wren Calloway”")
    expect(page.locator("#id_name")).to_have_value("Wren Calloway")
    expect(page.locator("#id_aliases")).to_have_value("Wren")
    expect(page.locator("#id_from_chapter")).to_have_value("1")
    page.fill("#id_aliases", "Wren, Wrennie")
    page.fill("#id_description", "Sixteen; films sunrises; secretly applying to art school.")
    page.fill("#id_until_chapter", "6")
    j.shot("edit-entry")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("“Wren Calloway” saved.")
    expect(entries).to_have_count(1)
    expect(wren.locator(".aliases")).to_have_text("also Wren, Wrennie")
    expect(wren).to_contain_text("chapters 1–6")
    expect(wren.locator(".description")).to_contain_text("secretly applying to art school")
    j.shot("bible-edited")

    # A name that is a common word is a name like any other on the pages.
    assert is_common_word("Will")
    page.get_by_role("link", name="Add an entry").click()
    page.fill("#id_name", "Will")
    page.fill("#id_description", "The harbourmaster's son; rows the ferry when the sea allows.")
    page.fill("#id_from_chapter", "2")
    page.get_by_role("button", name="Add to the story bible").click()
    expect(page.locator(".messages")).to_contain_text("“Will” is in the story bible.")
    expect(entries).to_have_count(2)
    expect(page.locator("#entries h2")).to_contain_text("(2)")
    will = entries.filter(has=page.locator("strong.name", has_text=re.compile(r"^Will$")))
    expect(will).to_have_count(1)
    expect(will).to_contain_text("from chapter 2")
    expect(will.locator(".aliases")).to_have_count(0)
    expect(page.locator("#entries strong.name")).to_have_text(["Will", "Wren Calloway"])  # by name
    j.shot("bible-two-entries")

    rows = StoryBibleEntry.objects.filter(story=story).order_by("name")
    assert [
        (e.name, e.kind, e.aliases, e.from_chapter, e.until_chapter, e.status, e.source) for e in rows
    ] == [
        ("Will", "character", [], 2, None, "accepted", "author"),
        ("Wren Calloway", "character", ["Wren", "Wrennie"], 1, 6, "accepted", "author"),
    ]


# --- 2. The author exports the story as EPUB --------------------------------------------------------


def _xhtml_heading(item) -> str:  # noqa: ANN001 (an ebooklib item)
    root = etree.fromstring(item.get_content())
    return "".join(root.find(f".//{XHTML}h1").itertext())


def test_author_exports_the_story_as_epub(open_journey, demo, tmp_path):
    story = Story.objects.get(title=LIGHTHOUSE)
    titles = _chapter_titles(story)
    assert len(titles) == 6

    j = open_journey("export-epub")
    page = j.page
    j.log_in("ava", demo["ava"])
    _open_story(j, LIGHTHOUSE)
    export = page.locator("p.export")
    expect(export).to_contain_text("Export the story:")
    j.shot("story")
    path = _download(page, export.get_by_role("link", name="EPUB"), tmp_path)
    assert path.suffix == ".epub" and path.stat().st_size > 0
    j.shot("after-download")  # still the story page, and no error in the browser

    book = epub.read_epub(str(path))
    assert book.get_metadata("DC", "title")[0][0] == LIGHTHOUSE
    assert book.get_metadata("DC", "creator")[0][0] == "Ava Demo"
    documents = [book.get_item_with_id(idref) for idref, _ in book.spine if idref != "nav"]
    # Chapter 0 is the title page: the title, then the story's metadata under its heading.
    cover, *chapters = documents
    assert _xhtml_heading(cover) == LIGHTHOUSE
    cover_text = cover.get_content().decode()
    assert CHAPTER_ZERO in cover_text and "Wren Calloway (16, films sunrises" in cover_text
    # Then the chapters, in order, with their text.
    assert [_xhtml_heading(item) for item in chapters] == titles
    assert "There is salt in everything at Gull Point." in chapters[0].get_content().decode()
    assert [entry.title for entry in book.toc] == [LIGHTHOUSE, *titles]


# --- 3. A reader exports their copy as Markdown -----------------------------------------------------


def _personal_chapter(*, story: Story, reader, number: int, text: str) -> GenerationOption:  # noqa: ANN001
    """A chapter the writer wrote for `reader` to follow chapter `number - 1`, stored as the worker stores
    one (a succeeded reader request, one plain option)."""
    request = GenerationRequest.objects.create(
        story=story,
        requested_by=reader,
        kind=GenerationRequest.Kind.READER,
        n=1,
        preference="Ravi shows Wren the rock pool at low tide.",
        engine="vllm",
        max_new_tokens=16,
        next_number=number,
        status=GenerationRequest.Status.SUCCEEDED,
        stage="Done",
        prompt_tokens=1200,
        model_name="smollm2",
        finished_at=timezone.now(),
    )
    return GenerationOption.objects.create(
        request=request, index=0, text=text, format_ok=True, tokens=16, review_status=ReviewStatus.NONE
    )


def test_reader_exports_their_copy_as_markdown(open_journey, demo, tmp_path):
    story = Story.objects.get(title=LIGHTHOUSE)
    assert story.is_published
    titles = _chapter_titles(story)
    remy = get_user_model().objects.get(username="remy")
    mine = "Ravi knelt by the rock pool under the tower wall and named every crab out loud."
    _personal_chapter(story=story, reader=remy, number=3, text=mine)

    j = open_journey("export-markdown")
    page = j.page
    j.log_in("remy", demo["remy"])
    _open_story(j, LIGHTHOUSE)
    export = page.locator("p.export")
    expect(export).to_contain_text("Export your copy")
    expect(page.get_by_role("link", name="Story bible")).to_have_count(0)  # the author's page only
    j.shot("story")
    path = _download(page, export.get_by_role("link", name="Markdown"), tmp_path)
    assert path.suffix == ".md"
    j.shot("after-download")

    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# {LIGHTHOUSE}\n")
    assert "*A personalised copy for remy*" in text
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    # The title page's chapter 0, the story's chapters in order, and remy's chapter 3 before the story's.
    assert headings == [CHAPTER_ZERO, *titles[:2], "Chapter 3 — your chapter", *titles[2:]]
    assert "There is salt in everything at Gull Point." in text
    assert mine in text
    assert text.index(mine) < text.index(f"## {titles[2]}")
