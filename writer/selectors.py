"""Reads. Each `_for_user` getter 404s on what the user may not see, so nobody learns it exists."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import Http404

from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus, Story

AnyUser = AbstractBaseUser | AnonymousUser


def story_list_published() -> QuerySet[Story]:
    return (
        Story.objects.filter(is_published=True)
        .select_related("owner")
        .annotate(chapter_count=Count("chapters"))
        .order_by("-updated_at")
    )


def story_list_for_owner(*, user: AnyUser) -> QuerySet[Story]:
    if not user.is_authenticated:
        return Story.objects.none()
    return Story.objects.filter(owner=user).annotate(chapter_count=Count("chapters")).order_by("-updated_at")


def story_can_view(*, story: Story, user: AnyUser) -> bool:
    return story.is_published or (user.is_authenticated and (story.owner_id == user.pk or user.is_staff))


def story_get_for_viewer(*, slug: str, user: AnyUser) -> Story:
    story = Story.objects.select_related("owner").filter(slug=slug).first()
    if story is None or not story_can_view(story=story, user=user):
        raise Http404("No such story.")
    return story


def story_get_for_owner(*, slug: str, user: AnyUser) -> Story:
    """Only the author edits their story: others get 404 if they can't see it, 403 if they can."""
    story = story_get_for_viewer(slug=slug, user=user)
    if story.owner_id != user.pk:
        raise PermissionDenied("Only the story's author can change it.")
    return story


def chapter_list(*, story: Story) -> QuerySet[Chapter]:
    return Chapter.objects.filter(story=story).order_by("number")


def chapter_get(*, story: Story, number: int) -> Chapter:
    chapter = Chapter.objects.filter(story=story, number=number).first()
    if chapter is None:
        raise Http404("No such chapter.")
    return chapter


def chapter_get_for_reading(*, story: Story, number: int) -> Chapter:
    """The chapter a reader opens, and in the same query what its page shows around it: `last_number`,
    the story's last chapter (for the "next" link), and `sponsor_name`, the brand of the approved paid
    placement it carries or None (the disclosure label)."""
    last = Chapter.objects.filter(story=OuterRef("story")).order_by("-number").values("number")[:1]
    sponsor = GenerationOption.objects.filter(
        accepted_chapter=OuterRef("pk"), review_status=ReviewStatus.APPROVED
    ).values("brand__name")[:1]
    chapter = (
        Chapter.objects.filter(story=story, number=number)
        .annotate(last_number=Subquery(last), sponsor_name=Subquery(sponsor))
        .first()
    )
    if chapter is None:
        raise Http404("No such chapter.")
    return chapter


def chapter_count(*, story: Story) -> int:
    return Chapter.objects.filter(story=story).aggregate(last=Max("number"))["last"] or 0


def request_can_view(*, request: GenerationRequest, user: AnyUser) -> bool:
    """A request is seen by who asked, the story's author, and staff. Nobody else."""
    if not user.is_authenticated:
        return False
    return user.pk in (request.requested_by_id, request.story.owner_id) or user.is_staff


def request_get_for_user(*, pk: int, user: AnyUser) -> GenerationRequest:
    request = GenerationRequest.objects.select_related("story", "story__owner", "requested_by").filter(pk=pk).first()
    if request is None or not request_can_view(request=request, user=user):
        raise Http404("No such request.")
    return request


def request_list_for_story(*, story: Story, user: AnyUser) -> QuerySet[GenerationRequest]:
    """The story's requests the user may see, newest first: all for the author and staff, a reader's own.

    Only the columns the list shows (a request's prompt report and notes stay in the database); the
    caller paginates: a story can have thousands."""
    if not user.is_authenticated:
        return GenerationRequest.objects.none()
    qs = GenerationRequest.objects.filter(story=story)
    if story.owner_id != user.pk and not user.is_staff:
        qs = qs.filter(requested_by=user)
    return (
        qs.select_related("requested_by")
        .only(
            "id", "story_id", "kind", "status", "next_number", "created_at", "requested_by", "requested_by__username"
        )
        .order_by("-created_at", "-pk")
    )


def option_list(*, request: GenerationRequest) -> QuerySet[GenerationOption]:
    return (
        GenerationOption.objects.filter(request=request)
        # The accepted chapter's story too: its link needs the story's slug.
        .select_related("accepted_chapter__story", "brand", "asset")
        .order_by("index")
    )


def option_get_for_author(*, pk: int, user: AnyUser) -> GenerationOption:
    option = GenerationOption.objects.select_related("request", "request__story").filter(pk=pk).first()
    if option is None or not request_can_view(request=option.request, user=user):
        raise Http404("No such option.")
    if option.request.story.owner_id != user.pk:
        raise PermissionDenied("Only the story's author can accept a chapter into the story.")
    return option
