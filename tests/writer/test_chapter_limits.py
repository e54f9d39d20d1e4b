"""Chapters per story and per import are capped (issue 18, item 5): a 54 KB file of 5,000 headings made
5,000 chapters in one request. Now an import is refused whole above MESU_MAX_CHAPTERS_PER_IMPORT (500) and a
story takes no chapter past MESU_MAX_CHAPTERS_PER_STORY (2,000), with messages that say the numbers, before
any row is written."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from mesu_web.errors import ApplicationError
from tests.factories import StoryFactory
from writer import services
from writer.book_import import check_chapter_count, split_book
from writer.models import Chapter, ChapterVersion, GenerationOption, GenerationRequest, Story


def _book(chapters: int) -> str:
    """A markdown book of `chapters` one-word chapters: 5,000 of them are ~54 KB, as the probe's file."""
    return "\n".join(f"# {i}\nOn." for i in range(1, chapters + 1))


def _full_story(owner, chapters: int) -> Story:  # noqa: ANN001
    story = StoryFactory(owner=owner)
    Chapter.objects.bulk_create(
        Chapter(story=story, number=i, title=f"Mile {i}", text=f"Mile {i}.") for i in range(1, chapters + 1)
    )
    return story


def test_the_defaults(settings):
    assert settings.MESU_MAX_CHAPTERS_PER_STORY == 2000 and settings.MESU_MAX_CHAPTERS_PER_IMPORT == 500


def test_a_file_of_5000_headings_is_refused_whole_through_the_page(client_for, users):
    data = _book(5000).encode()
    assert 50_000 < len(data) < 58_000 and len(split_book(_book(5000)).chapters) == 5000
    stories, chapters = Story.objects.count(), Chapter.objects.count()
    response = client_for("alice").post(
        reverse("writer:book_import"),
        {"title": "Five Thousand", "file": SimpleUploadedFile("many.md", data)},
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "The book splits into 5,000 chapters; an import takes at most 500." in html
    assert Story.objects.count() == stories and Chapter.objects.count() == chapters  # nothing half-imported
    assert not Story.objects.filter(title="Five Thousand").exists()


def test_the_import_cap_is_the_setting_and_the_story_cap_bounds_it_too(settings, users):
    alice = users["alice"]
    settings.MESU_MAX_CHAPTERS_PER_IMPORT = 4
    story = services.book_import(owner=alice, title="Four", text=_book(4))
    assert list(story.chapters.values_list("number", flat=True)) == [1, 2, 3, 4]
    with pytest.raises(ApplicationError, match="splits into 5 chapters; an import takes at most 4") as caught:
        services.book_import(owner=alice, title="Five", text=_book(5))
    assert caught.value.extra == {"max_chapters": 4, "chapters": 5}
    settings.MESU_MAX_CHAPTERS_PER_STORY = 3  # an import is a new story: the smaller cap applies
    with pytest.raises(ApplicationError, match="splits into 4 chapters; an import takes at most 3"):
        services.book_import(owner=alice, title="Four again", text=_book(4))
    assert not Story.objects.filter(title__in=["Five", "Four again"]).exists()


def test_the_import_command_says_why(settings, users, tmp_path):
    settings.MESU_MAX_CHAPTERS_PER_IMPORT = 2
    path = tmp_path / "three.md"
    path.write_text(_book(3), encoding="utf-8")
    with pytest.raises(CommandError, match="splits into 3 chapters; an import takes at most 2"):
        call_command("import_book", str(path), "--title", "Three", stdout=StringIO())
    assert not Story.objects.filter(title="Three").exists()


def test_check_chapter_count_needs_no_database():
    book = split_book(_book(3))
    check_chapter_count(book, max_chapters=3)
    with pytest.raises(ApplicationError, match="3 chapters; an import takes at most 2"):
        check_chapter_count(book, max_chapters=2)


def test_a_story_of_2000_chapters_takes_no_more(client_for, users):
    story = _full_story(users["alice"], 2000)
    versions = ChapterVersion.objects.count()
    with pytest.raises(ApplicationError, match="at most 2,000 chapters and this one has 2,000") as caught:
        services.chapter_add(story=story, text="One more.")
    assert caught.value.extra == {"max_chapters": 2000, "chapters": 2000}
    response = client_for("alice").post(
        reverse("writer:chapter_add", args=[story.slug]), {"text": "One more."}
    )
    assert response.status_code == 200
    assert "A story holds at most 2,000 chapters and this one has 2,000" in response.content.decode()
    assert story.chapters.count() == 2000 and ChapterVersion.objects.count() == versions


def test_the_story_cap_is_the_setting(settings, users):
    settings.MESU_MAX_CHAPTERS_PER_STORY = 2
    story = _full_story(users["alice"], 1)
    assert services.chapter_add(story=story, text="Two.").number == 2
    with pytest.raises(ApplicationError, match="at most 2 chapters and this one has 2"):
        services.chapter_add(story=story, text="Three.")
    services.chapter_delete(chapter=story.chapters.get(number=1))  # room again
    assert services.chapter_add(story=story, text="Three.").number == 2


def test_an_accepted_option_does_not_pass_the_cap(settings, users):
    settings.MESU_MAX_CHAPTERS_PER_STORY = 2
    alice = users["alice"]
    story = _full_story(alice, 2)
    request = GenerationRequest.objects.create(
        story=story, requested_by=alice, n=1, engine="local", max_new_tokens=24, next_number=3,
        status=GenerationRequest.Status.SUCCEEDED,
    )  # fmt: skip
    option = GenerationOption.objects.create(request=request, index=0, text="Lou locked up.", format_ok=True)
    with pytest.raises(ApplicationError, match="at most 2 chapters"):
        services.option_accept(option=option, user=alice)
    option.refresh_from_db()
    assert option.accepted_chapter_id is None and story.chapters.count() == 2
