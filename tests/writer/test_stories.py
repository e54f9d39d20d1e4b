"""Authors create stories, add, upload, import, edit and reorder chapters; bad input loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import story_with_chapters
from writer import services
from writer.models import Chapter, Story

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _numbers_and_titles(story: Story) -> list[tuple[int, str]]:
    return list(story.chapters.order_by("number").values_list("number", "title"))


def test_signup_as_author_then_create_a_story_with_metadata(client, db):
    response = client.post(
        reverse("writer:signup"),
        {"username": "zoe", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase", "role": "author"},
    )
    assert response.status_code == 302
    response = client.post(
        reverse("writer:story_create"),
        {
            "title": "Salt & Static",
            "author_name": "Zoe",
            "summary": "A radio pirate on a ferry.",
            "genre": "romcom",
            "tags": "ferry, Radio , ferry",
            "characters": "Zoe; Sam",
            "setting": "A night ferry",
            "intent_notes": "Keep it light.",
        },
    )
    story = Story.objects.get(title="Salt & Static")
    assert response.status_code == 302 and response["Location"] == reverse("writer:chapter_add", args=[story.slug])
    assert story.owner.username == "zoe"
    assert story.tags == ["ferry", "radio"]
    assert story.intent_notes == "Keep it light."


def test_a_reader_cannot_create_stories(client_for):
    response = client_for("rita").post(reverse("writer:story_create"), {"title": "Nope"})
    assert response.status_code == 403
    assert not Story.objects.filter(title="Nope").exists()


def test_paste_and_upload_chapters(client_for, users):
    story = services.story_create(owner=users["alice"], title="Paste test")
    c = client_for("alice")
    url = reverse("writer:chapter_add", args=[story.slug])
    assert c.post(url, {"title": "Arrival", "text": "She came by the night bus.\r\nIt rained."}).status_code == 302
    upload = SimpleUploadedFile("two.md", b"The second day was sunny.", content_type="text/markdown")
    assert c.post(url, {"title": "", "text": "", "file": upload}).status_code == 302
    chapters = list(story.chapters.order_by("number"))
    assert [(ch.number, ch.source) for ch in chapters] == [(1, "pasted"), (2, "uploaded")]
    assert chapters[0].text == "She came by the night bus.\nIt rained."


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"text": ""}, "The chapter is empty"),
        ({"text": "   \n\t  "}, "The chapter is empty"),
    ],
)
def test_empty_chapters_are_refused_with_a_message(client_for, users, payload, message):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    before = _numbers_and_titles(story)
    response = client_for("alice").post(reverse("writer:chapter_add", args=[story.slug]), {"title": "x", **payload})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert _numbers_and_titles(story) == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("huge.txt", b"a" * (20 * 1024 * 1024), "20.0 MB; the limit is 5.0 MB"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00" + bytes(range(256)) * 4, "binary"),
        ("story.pdf", b"%PDF-1.4 some text", ".txt"),
        ("empty.txt", b"", "empty"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_lost(client_for, users, name, content, message):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    before = _numbers_and_titles(story)
    upload = SimpleUploadedFile(name, content)
    response = client_for("alice").post(reverse("writer:chapter_add", args=[story.slug]), {"title": "t", "file": upload})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert _numbers_and_titles(story) == before


def test_non_utf8_upload_gets_a_clear_answer(client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    raw = "Café au lait — naïve façade".encode("cp1252") + b"\x81\x8d\x90"  # not UTF-8, not clean cp1252
    response = client_for("alice").post(
        reverse("writer:chapter_add", args=[story.slug]), {"file": SimpleUploadedFile("latin.txt", raw)}
    )
    body = response.content.decode()
    # Either decoded (a clean legacy encoding) or refused with a message naming UTF-8; never a 500.
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert "UTF-8" in body
        assert story.chapters.count() == 1


def test_html_and_script_in_chapters_render_escaped(client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=0)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> and <b>bold</b>'
    services.chapter_add(story=story, text=evil, title="<i>Title</i>")
    html = client_for("alice").get(reverse("writer:chapter_detail", args=[story.slug, 1])).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    # The text goes through the markdown sanitiser (nh3), which leaves quotes literal in text, where they are inert.
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in html
    assert "&lt;i&gt;Title&lt;/i&gt;" in html
    assert Chapter.objects.get(story=story).text == evil  # stored as written, escaped only on output


def test_edit_a_chapter_and_an_empty_edit_keeps_the_old_text(client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=2)
    c = client_for("alice")
    url = reverse("writer:chapter_edit", args=[story.slug, 2])
    assert c.post(url, {"title": "Renamed", "text": "New words."}).status_code == 302
    assert story.chapters.get(number=2).text == "New words."
    response = c.post(url, {"title": "Renamed", "text": "  "})
    assert response.status_code == 200 and "empty" in response.content.decode()
    assert story.chapters.get(number=2).text == "New words."


def test_reorder_and_delete_keep_numbers_contiguous(client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=3)
    c = client_for("alice")
    c.post(reverse("writer:chapter_move", args=[story.slug, 3]), {"direction": "up"})
    assert _numbers_and_titles(story) == [(1, "Chapter 1"), (2, "Chapter 3"), (3, "Chapter 2")]
    response = c.post(reverse("writer:chapter_move", args=[story.slug, 1]), {"direction": "up"}, follow=True)
    assert "cannot move up" in response.content.decode()
    c.post(reverse("writer:chapter_delete", args=[story.slug, 1]))
    assert _numbers_and_titles(story) == [(1, "Chapter 3"), (2, "Chapter 2")]


def test_reorder_must_name_every_chapter_once(users):
    story = story_with_chapters(owner=users["alice"], chapters=3)
    ids = list(story.chapters.order_by("number").values_list("pk", flat=True))
    with pytest.raises(ApplicationError, match="exactly once"):
        services.chapters_reorder(story=story, chapter_ids=[ids[0], ids[0], ids[1]])
    services.chapters_reorder(story=story, chapter_ids=list(reversed(ids)))
    assert list(story.chapters.order_by("number").values_list("pk", flat=True)) == list(reversed(ids))


def test_import_a_book_through_the_page(client_for, users):
    data = (SAMPLES / "neon_rain.txt").read_bytes()
    response = client_for("alice").post(
        reverse("writer:book_import"),
        {"title": "Neon Rain", "author_name": "A.", "file": SimpleUploadedFile("neon_rain.txt", data)},
    )
    story = Story.objects.get(title="Neon Rain")
    assert response.status_code == 302 and response["Location"] == story.get_absolute_url()
    assert story.chapters.count() == 5
    assert set(story.chapters.values_list("source", flat=True)) == {"imported"}


def test_only_the_author_edits_their_story(client_for, users):
    story = story_with_chapters(owner=users["alice"], chapters=1)
    for who in ("bob", "rita"):
        c = client_for(who)
        assert c.post(reverse("writer:story_edit", args=[story.slug]), {"title": "Hijack"}).status_code == 403
        assert c.post(reverse("writer:chapter_edit", args=[story.slug, 1]), {"text": "x"}).status_code == 403
        assert c.post(reverse("writer:chapter_delete", args=[story.slug, 1])).status_code == 403
        assert c.post(reverse("writer:chapter_add", args=[story.slug]), {"text": "x"}).status_code == 403
    story.refresh_from_db()
    assert story.title != "Hijack" and story.chapters.count() == 1


def test_unpublished_stories_are_invisible_to_others(client_for, client, users):
    story = story_with_chapters(owner=users["alice"], chapters=1, is_published=False)
    for c in (client_for("rita"), client_for("bob"), client):
        assert c.get(story.get_absolute_url()).status_code == 404
        assert c.get(reverse("writer:chapter_detail", args=[story.slug, 1])).status_code == 404
    assert client_for("alice").get(story.get_absolute_url()).status_code == 200
    assert story.title not in client_for("rita").get(reverse("writer:home")).content.decode()
