"""Reads. Each `_for_user` getter 404s on what the user may not see, so nobody learns it exists."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery, Window
from django.db.models.expressions import RawSQL
from django.http import Http404

from mesu_web import paging
from mesu_web.jobs.models import JobRow
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


def story_get_for_page(*, slug: str, user: AnyUser) -> Story:
    """`story_get_for_viewer` with, in the same query, what the story page needs besides: `chapter_count`
    (the pager's length), `chapters_changed` (when one of its chapters last changed: with the story's
    `updated_at`, which every service that adds, edits, moves or deletes a chapter touches, the key of the
    page's cached list of chapters) and `has_branches` (whether to look for them)."""
    # Plain SQL subqueries: the ORM's Subquery/Exists took 1.1 ms of CPU to build and compile, a third of
    # the page's own work; these ~0.1 ms. Table names from the models.
    chapters, stories = Chapter._meta.db_table, Story._meta.db_table
    story = (
        Story.objects.select_related("owner")
        .filter(slug=slug)
        .annotate(
            chapter_count=RawSQL(f"SELECT count(*) FROM {chapters} c WHERE c.story_id = {stories}.id", ()),
            chapters_changed=RawSQL(f"SELECT max(c.updated_at) FROM {chapters} c WHERE c.story_id = {stories}.id", ()),
            has_branches=RawSQL(f"EXISTS (SELECT 1 FROM {stories} b WHERE b.branch_of_id = {stories}.id)", ()),
        )
        .first()
    )
    if story is None or not story_can_view(story=story, user=user):
        raise Http404("No such story.")
    return story


def chapter_titles(*, story: Story) -> QuerySet:
    """The story's chapters as (number, title) rows, in reading order: what a list of them shows."""
    return Chapter.objects.filter(story=story).order_by("number").values_list("number", "title", named=True)


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


def option_sees_everything(*, option: GenerationOption, user: AnyUser) -> bool:
    """The story's author and staff see every option of its requests and every version, with its review
    state."""
    return option.request.story.owner_id == user.pk or user.is_staff


def option_get_for_viewer(
    *, pk: int, user: AnyUser, queryset: QuerySet[GenerationOption] | None = None
) -> GenerationOption:
    """The option (from `queryset`, default every option), for who may see its request; 404 for everyone
    else, and for a reader who was never shown it (a placement waiting for its brand)."""
    rows = GenerationOption.objects.all() if queryset is None else queryset
    option = rows.select_related("request__story", "request__requested_by").filter(pk=pk).first()
    if option is None or not request_can_view(request=option.request, user=user):
        raise Http404("No such option.")
    if not option.visible_to_requester and not option_sees_everything(option=option, user=user):
        raise Http404("No such option.")
    return option


def _requests_visible(*, story: Story, user: AnyUser) -> QuerySet[GenerationRequest]:
    if not user.is_authenticated:
        return GenerationRequest.objects.none()
    if story.owner_id != user.pk and not user.is_staff:
        return GenerationRequest.objects.filter(story=story, requested_by=user)
    return GenerationRequest.objects.filter(story=story)


def request_list_for_story(*, story: Story, user: AnyUser) -> QuerySet[GenerationRequest]:
    """The story's requests the user may see, newest first: all for the author and staff, a reader's own.

    Only the columns the list shows (a request's prompt report and notes stay in the database); the
    caller paginates: a story can have thousands."""
    return (
        _requests_visible(story=story, user=user)
        .select_related("requested_by")
        .only(
            "id", "story_id", "kind", "status", "next_number", "created_at", "requested_by", "requested_by__username"
        )
        .order_by("-created_at", "-pk")
    )


@dataclass(frozen=True)
class RequestRow:
    """A request as the story page lists it, read with `values_list` (no model instances)."""

    pk: int
    next_number: int
    kind: str
    status: str
    created_at: dt.datetime
    requested_by_id: int
    requested_by_username: str

    RUNNING_LABEL: ClassVar[str] = GenerationRequest.RUNNING_LABEL
    status_label = JobRow.status_label  # the job row's own words for its status

    def get_status_display(self) -> str:
        return GenerationRequest.Status(self.status).label

    def get_kind_display(self) -> str:
        return GenerationRequest.Kind(self.kind).label


def request_page_for_story(*, story: Story, user: AnyUser, number: object, per_page: int) -> Page:
    """One page of `request_list_for_story` as `RequestRow`s, and the list's length, in one query (a window
    count; `number` clamped as `mesu_web.paging` says: past the end, the last page)."""
    requests = _requests_visible(story=story, user=user).order_by("-created_at", "-pk")
    return paging.page_from_window(
        number=number, per_page=per_page, rows=lambda start, stop: _request_rows(requests, start, stop),
        count=requests.count,
    )


def _request_rows(requests: QuerySet, start: int, stop: int) -> tuple[list[RequestRow], int]:
    found = list(
        requests.annotate(total=Window(Count("pk"))).values_list(
            "pk", "next_number", "kind", "status", "created_at", "requested_by_id", "requested_by__username", "total"
        )[start:stop]
    )
    return [RequestRow(*row[:-1]) for row in found], (found[0][-1] if found else 0)


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
