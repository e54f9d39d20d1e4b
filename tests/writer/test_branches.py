"""Branches (writer.branches): continue a story from any chapter; the original keeps every chapter after
it intact; the ugly cases refused with a clear message and nothing made."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse

from brands import services as brand_services
from brands.placements import find_mentions, mention_spans
from mesu_web.errors import ApplicationError
from tests.factories import approved_brand, story_with_chapters
from writer import branches, services
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    GenerationRequest,
    ReviewStatus,
    Story,
    StoryBibleEntry,
)

pytestmark = pytest.mark.django_db


def _state(story: Story) -> list[dict]:
    """Every chapter of `story` as stored, with its versions."""
    return [
        model_to_dict(c) | {"updated_at": c.updated_at, "versions": list(c.versions.values_list("number", "text"))}
        for c in Chapter.objects.filter(story=story).order_by("number")
    ]


def test_a_branch_copies_chapter_0_and_chapters_1_to_n_and_leaves_the_original_intact(users, client_for):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=4, is_published=True, title="Salt and Sugar")
    story.author_note = "Keep it cosy."
    story.save()
    services.chapter_update(chapter=story.chapters.get(number=2), text="Chapter 2, edited once.", title="Two")
    StoryBibleEntry.objects.create(story=story, name="Lou", description="The baker.", from_chapter=1)
    StoryBibleEntry.objects.create(story=story, name="Juno", description="Arrives late.", from_chapter=4)
    StoryBibleEntry.objects.create(story=story, name="Static", status="proposed", from_chapter=1)
    original = _state(story)

    c = client_for("alice")
    response = c.post(reverse("writer:chapter_branch", args=[story.slug, 2]))
    branch = Story.objects.get(branch_of=story)
    assert response.status_code == 302 and response["Location"] == branch.get_absolute_url()
    assert (branch.owner, branch.branch_point, branch.is_published) == (alice, 2, False)
    assert branch.slug != story.slug and branch.title == "Salt and Sugar (branch from chapter 2)"
    for name in ("author_name", "summary", "genre", "tags", "characters", "setting", "intent_notes", "author_note"):
        assert getattr(branch, name) == getattr(story, name), name
    copies = list(branch.chapters.order_by("number"))
    assert [(c.number, c.title, c.text) for c in copies] == [
        (c["number"], c["title"], c["text"]) for c in original[:2]
    ]
    # Each copy starts its own history with its text as version 1.
    assert [list(c.versions.values_list("number", "text")) for c in copies] == [[(1, c.text)] for c in copies]
    assert list(StoryBibleEntry.objects.filter(story=branch).values_list("name", flat=True)) == ["Lou"]
    # The original is untouched: its four chapters, their texts and versions as they were.
    story.refresh_from_db()
    assert _state(story) == original and story.branch_of is None

    # The branch's page names its original; the original lists its branch (for its author).
    html = c.get(branch.get_absolute_url()).content.decode()
    assert "Branch of" in html and story.get_absolute_url() in html and "from chapter 2" in html
    html = c.get(story.get_absolute_url()).content.decode()
    assert "Branches" in html and branch.get_absolute_url() in html
    # Readers of the published original do not see the author's draft branch.
    assert branch.get_absolute_url() not in client_for("rita").get(story.get_absolute_url()).content.decode()

    # The writer continues the branch from chapter 2; the original keeps chapters 3 and 4.
    gen = services.generation_request_create(story=branch, user=alice, n=1, enqueue=False)
    assert gen.next_number == 3
    services.chapter_add(story=branch, text="Another third chapter.")
    assert story.chapters.get(number=3).text == original[2]["text"]
    assert _state(story) == original


def test_branching_the_last_chapter_or_a_branch_works_too(users):
    alice = users["alice"]
    story = story_with_chapters(owner=alice, chapters=2)
    first = branches.story_branch(story=story, user=alice, chapter_number=2)
    second = branches.story_branch(story=story, user=alice, chapter_number=2)
    assert first.slug != second.slug and first.chapters.count() == second.chapters.count() == 2
    deeper = branches.story_branch(story=first, user=alice, chapter_number=1)
    assert (deeper.branch_of, deeper.branch_point, deeper.chapters.count()) == (first, 1, 1)


def test_the_ugly_cases_make_nothing_and_say_why(users, client_for):
    alice, bob = users["alice"], users["bob"]
    story = story_with_chapters(owner=alice, chapters=3, is_published=True)
    before = Story.objects.count()
    c = client_for("alice")
    # A chapter that does not exist: the message says which there are.
    response = c.post(reverse("writer:chapter_branch", args=[story.slug, 7]), follow=True)
    assert "has no chapter 7: it has chapters 1 to 3" in response.content.decode()
    for number in (0, -1, "x", None):
        with pytest.raises(ApplicationError, match="has no chapter"):
            branches.story_branch(story=story, user=alice, chapter_number=number)
    empty = story_with_chapters(owner=alice, chapters=0)
    with pytest.raises(ApplicationError, match="it has no chapters yet"):
        branches.story_branch(story=empty, user=alice, chapter_number=1)
    # A story of another author: the page refuses (403 on a published story, 404 on a draft), the
    # service too.
    assert client_for("bob").post(reverse("writer:chapter_branch", args=[story.slug, 1])).status_code == 403
    draft = story_with_chapters(owner=alice, chapters=1, is_published=False)
    assert client_for("bob").post(reverse("writer:chapter_branch", args=[draft.slug, 1])).status_code == 404
    with pytest.raises(ApplicationError, match="Only the story's author"):
        branches.story_branch(story=story, user=bob, chapter_number=1)
    assert Story.objects.count() == before + 2  # `empty` and `draft`, nothing else


def test_a_chapter_carrying_a_brand_s_placement_is_not_copied(users, client_for):
    alice, mia = users["alice"], users["mia"]
    story = story_with_chapters(owner=alice, chapters=1)
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    brand = approved_brand(name="Tidewave", managers=[mia], description="Surfboards.")
    asset = brand_services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    gen = GenerationRequest.objects.create(
        story=story, requested_by=alice, n=1, engine="local", max_new_tokens=24, next_number=2,
        status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
    )
    text = "Lou waxed her Tidewave board."
    option = GenerationOption.objects.create(
        request=gen, index=0, text=text, format_ok=True, brand=brand, asset=asset, placement_found=True,
        mentions=mention_spans(find_mentions(text, asset.terms)), review_status=ReviewStatus.PENDING,
    )
    brand_services.option_approve(option=option, reviewer=mia)
    option.refresh_from_db()
    chapter = services.option_accept(option=option, user=alice)
    services.chapter_add(story=story, text="Chapter 3, plain.")
    before = Story.objects.count()
    response = client_for("alice").post(reverse("writer:chapter_branch", args=[story.slug, 3]), follow=True)
    assert f"Chapter {chapter.number} carries a placement by Tidewave" in response.content.decode()
    assert Story.objects.count() == before
    # Before it, the story branches.
    branch = branches.story_branch(story=story, user=alice, chapter_number=1)
    assert branch.chapters.count() == 1
    # Once the author takes the brand out of the chapter, it is a plain chapter and is copied.
    services.chapter_update(chapter=chapter, text="Lou waxed her board.", title=chapter.title)
    branch = branches.story_branch(story=story, user=alice, chapter_number=3)
    assert list(branch.chapters.values_list("text", flat=True))[1] == "Lou waxed her board."
    assert ChapterVersion.objects.filter(chapter__story=branch).count() == 3
