"""Branches: continue a story from any chapter while the original keeps every chapter after it.

A branch is a new story of the same author: the original's chapter 0 (title, metadata, the author's
note), its chapters 1..N (each with its version 1) and its accepted story bible entries that hold from
one of those chapters, with `branch_of` and `branch_point` = N. It starts as a draft without brand
placements (the author opts it in as any story). The original is not changed. The writer then continues
the branch from chapter N as it continues any story.

A chapter that carries a brand's placement (accepted from a branded option and still naming a brand) is
not copied: the brand approved it for the original story, and a copy would show it without its
disclosure label. The author is told which chapter, to branch before it or take the brand out first.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from brands.matching import brand_catalogue
from mesu_web.errors import ApplicationError
from writer import services
from writer.models import (
    Chapter,
    ChapterVersion,
    GenerationOption,
    ReviewStatus,
    Story,
    StoryBibleEntry,
    VersionCause,
)

BRANCH_TITLE_CHARS = 200  # Story.title's max_length


def branch_title(story: Story, number: int) -> str:
    suffix = f" (branch from chapter {number})"
    return story.title[: BRANCH_TITLE_CHARS - len(suffix)] + suffix


def _placement_chapter(chapters: list[Chapter]) -> tuple[Chapter, str] | None:
    """The first of `chapters` that carries a brand's placement, with the brand's name."""
    generated = {c.pk: c for c in chapters if c.source == Chapter.Source.GENERATED}
    if not generated:
        return None
    placed = (
        GenerationOption.objects.filter(accepted_chapter__in=list(generated), brand__isnull=False)
        .exclude(review_status__in=[ReviewStatus.NONE, ReviewStatus.NOT_SENT])
        .select_related("brand")
        .order_by("accepted_chapter__number")
    )
    names = brand_catalogue().names
    for option in placed:
        chapter = generated[option.accepted_chapter_id]
        [hits] = names.scan(chapter.text)
        if hits:
            return chapter, option.brand.name
    return None


def story_branch(*, story: Story, user: AbstractBaseUser, chapter_number: object) -> Story:
    """A branch of `story` from chapter `chapter_number` (see the module's docstring); ApplicationError,
    with nothing made, for another author's story, a chapter that does not exist, or a chapter that
    carries a brand's placement."""
    if story.owner_id != user.pk:
        raise ApplicationError("Only the story's author can continue it from one of its chapters.")
    try:
        number = int(str(chapter_number).strip())
    except (TypeError, ValueError):
        number = 0
    chapters = list(
        Chapter.objects.filter(story=story, number__gte=1, number__lte=max(number, 0)).order_by("number")
    )
    if number < 1 or not chapters or chapters[-1].number != number:
        last = (
            Chapter.objects.filter(story=story).order_by("-number").values_list("number", flat=True).first()
        )
        which = f"chapters 1 to {last}" if last and last > 1 else ("chapter 1" if last else "no chapters yet")
        raise ApplicationError(
            f"“{story.title}” has no chapter {chapter_number}: it has {which}. Continue from one of those."
        )
    placement = _placement_chapter(chapters)
    if placement is not None:
        chapter, brand = placement
        raise ApplicationError(
            f"Chapter {chapter.number} carries a placement by {brand}, approved for “{story.title}” only, so a "
            f"branch cannot copy it. Continue from chapter {chapter.number - 1} or earlier, or take the brand "
            f"out of chapter {chapter.number} first."
            if chapter.number > 1
            else f"Chapter 1 carries a placement by {brand}, approved for “{story.title}” only, so a branch cannot "
            "copy it. Take the brand out of chapter 1 first."
        )
    metadata = {name: getattr(story, name) for name in services.STORY_FIELDS if name != "title"}
    with transaction.atomic():
        branch = services.story_create(owner=user, title=branch_title(story, number), **metadata)
        branch.branch_of, branch.branch_point = story, number
        branch.save(update_fields=["branch_of", "branch_point", "updated_at"])
        copies = Chapter.objects.bulk_create(
            Chapter(story=branch, number=c.number, title=c.title, text=c.text, source=c.source)
            for c in chapters
        )
        ChapterVersion.objects.bulk_create(
            ChapterVersion(
                chapter=copy,
                number=1,
                cause=VersionCause.ACCEPTED
                if copy.source == Chapter.Source.GENERATED
                else VersionCause.EDITED,
                title=copy.title,
                text=copy.text,
                created_by=user,
            )
            for copy in copies
        )
        StoryBibleEntry.objects.bulk_create(
            StoryBibleEntry(
                story=branch,
                kind=e.kind,
                name=e.name,
                description=e.description,
                aliases=e.aliases,
                from_chapter=e.from_chapter,
                until_chapter=e.until_chapter,
                status=e.status,
                source=e.source,
            )
            for e in StoryBibleEntry.objects.filter(
                story=story, status=StoryBibleEntry.Status.ACCEPTED, from_chapter__lte=number
            )
        )
    return branch


def story_branch_info(*, story: Story, user: object) -> dict[str, object]:
    """What the story page says about branches: the original this one branches (when the viewer may see
    it) and its own branches (all for its author, the published ones for everyone else). One query, two
    for a branch."""
    from writer.selectors import story_can_view

    original = None
    if story.branch_of_id:
        original = (
            Story.objects.filter(pk=story.branch_of_id)
            .only("id", "slug", "title", "is_published", "owner")
            .first()
        )
        if original is not None and not story_can_view(story=original, user=user):
            original = None
    branches = [
        b
        for b in Story.objects.filter(branch_of=story)
        .only("id", "slug", "title", "is_published", "owner", "branch_point", "branch_of")
        .order_by("created_at", "pk")
        if story_can_view(story=b, user=user)
    ]
    return {"original": original, "branches": branches}
