"""Versions, swipes and branches: the pages (writer.versions, writer.swipes and writer.branches do the work).

Options: who may see the request (who asked, the story's author, staff) sees an option's versions and
compares two; a reader never learns of an option a brand has not let through (404), and a version that
names a brand without its approval is not shown to them. Only who asked for the chapter writes an option
again or restores one of its versions; the others who may see it get 403, everyone else 404.

Chapters: only the story's author sees, compares and restores a chapter's versions and branches the
story from a chapter: others get 403 on a published story and 404 on a draft, as on every author page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from brands.matching import OptionPlan, option_placement
from mesu_web.errors import ApplicationError
from writer import branches, selectors, swipes, versions
from writer.models import Chapter, GenerationOption, OptionRating, OptionVersion, ReviewStatus, Story

CLEAN = (ReviewStatus.NONE, ReviewStatus.NOT_SENT)  # a text that names no brand


def _option(pk: int, user) -> GenerationOption:  # noqa: ANN001
    return selectors.option_get_for_viewer(
        pk=pk,
        user=user,
        queryset=GenerationOption.objects.select_related("accepted_chapter__story", "brand", "asset"),
    )


def _option_owner(pk: int, user) -> GenerationOption:  # noqa: ANN001
    option = _option(pk, user)
    if option.request.requested_by_id != user.pk:
        raise PermissionDenied("Only who asked for this chapter changes its options.")
    return option


def _shown_versions(option: GenerationOption, user) -> list[tuple[OptionVersion, bool]]:  # noqa: ANN001
    """(version, withheld) of every version: a reader is not shown one that names a brand, unless it is
    the current text of an option its brand approved."""
    listed = versions.option_version_list(option=option)
    if selectors.option_sees_everything(option=option, user=user):
        return [(v, False) for v in listed]
    plan = OptionPlan(brand_id=option.brand_id, asset_id=option.asset_id)
    current = listed[-1].number
    shown = []
    for version in listed:
        if version.number == current and option.visible_to_requester:
            shown.append((version, False))
            continue
        placement = option_placement(
            request=option.request, plan=plan, text=version.text, reasoning=version.reasoning
        )
        shown.append((version, placement.review_status not in CLEAN))
    return shown


def _option_back(option: GenerationOption) -> HttpResponse:
    return redirect(f"{option.request.get_absolute_url()}#option-{option.index}")


def _versions_url(option: GenerationOption) -> str:
    return reverse("writer:option_versions", args=[option.pk])


@login_required
@require_GET
def option_versions(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option(pk, request.user)
    gen = option.request
    can_restore = gen.requested_by_id == request.user.pk and not option.accepted_chapter_id
    rows = [
        {
            "version": version,
            "withheld": withheld,
            "restore_url": reverse("writer:option_version_restore", args=[option.pk, version.number]),
            # A reader sees the reasoning of plain options only (GenerationOption.shows_reasoning).
            "reasoning": version.reasoning if option.shows_reasoning and not withheld else "",
        }
        for version, withheld in _shown_versions(option, request.user)
    ]
    return render(
        request,
        "writer/versions.html",
        {
            "subject": f"{option.label} of chapter {gen.next_number}",
            "story": gen.story,
            "back_url": f"{gen.get_absolute_url()}#option-{option.index}",
            "back_label": f"Chapter {gen.next_number} of {gen.story.title}",
            "rows": rows,
            "current": rows[-1]["version"].number,
            "compare_url": reverse("writer:option_version_compare", args=[option.pk]),
            "can_restore": can_restore,
            "accepted_chapter": option.accepted_chapter,
        },
    )


def _compare_page(
    request: HttpRequest,
    *,
    listed: list,
    withheld: set[int],
    back: str,
    subject: str,
    versions_url: str,
    story: Story,
) -> HttpResponse:
    """Two versions side by side (`a` and `b` from the query; the previous and the current one without);
    a bad choice goes back to the versions with the reason."""
    try:
        a, b = versions.compare_numbers(listed, request.GET.get("a"), request.GET.get("b"))
        if a in withheld or b in withheld:
            raise ApplicationError("That version is waiting for a brand's review; it cannot be shown.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(versions_url)
    by_number = {v.number: v for v in listed}
    left, right = by_number[a], by_number[b]
    return render(
        request,
        "writer/versions_compare.html",
        {
            "subject": subject,
            "story": story,
            "back_url": back,
            "versions_url": versions_url,
            "left": left,
            "right": right,
            "numbers": [v.number for v in listed if v.number not in withheld],
            "comparison": versions.compare_texts(left.text, right.text),
            "titles_differ": getattr(left, "title", "") != getattr(right, "title", ""),
        },
    )


@login_required
@require_GET
def option_version_compare(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option(pk, request.user)
    shown = _shown_versions(option, request.user)
    return _compare_page(
        request,
        listed=[v for v, _ in shown],
        withheld={v.number for v, hidden in shown if hidden},
        back=f"{option.request.get_absolute_url()}#option-{option.index}",
        subject=f"{option.label} of chapter {option.request.next_number}",
        versions_url=_versions_url(option),
        story=option.request.story,
    )


@login_required
@require_POST
def option_version_restore(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    option = _option_owner(pk, request.user)
    version = versions.option_version_get(option=option, number=number)
    try:
        new = versions.option_version_restore(option=option, version=version, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(_versions_url(option))
    note = ""
    if new.judgements_forgotten:
        note = " Your ratings and choices of the text before were about that text, so they were cleared."
    if option.brand_id:
        note += " It waits for its brand's review again."
    messages.success(
        request, f"Version {version.number} of {option.label} restored as version {new.number}.{note}"
    )
    return _option_back(option)


@login_required
@require_POST
def option_swipe(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option_owner(pk, request.user)
    try:
        swipes.option_swipe_request(option=option, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _option_back(option)
    rated = OptionRating.objects.filter(option=option).exists()
    note = " Your rating of it is about the text it has now, so it will be cleared." if rated else ""
    messages.success(
        request,
        f"Writing {option.label} again; the other options stay as they are, and its text now stays among its "
        f"versions.{note}",
    )
    return _option_back(option)


@login_required
@require_GET
def option_swipe_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx-polled swipe control of one option: 286 (stop polling) once no swipe runs, and then the
    page reloads (HX-Refresh) to show the option's new text, or why it could not be written."""
    option = _option(pk, request.user)
    running = swipes.option_swipe_in_progress(option=option)
    [option] = versions.option_versions_annotated(
        GenerationOption.objects.filter(pk=option.pk)
    ).select_related("request__story", "accepted_chapter")
    response = render(
        request,
        "writer/_swipe_control.html",
        {"option": option, "gen": option.request, "user": request.user},
    )
    if running is not None:
        return response
    stopped = HttpResponseStopPolling(response.content)
    stopped["HX-Refresh"] = "true"
    return stopped


# --- Chapters --------------------------------------------------------------------------------------


def _chapter(request: HttpRequest, slug: str, number: int) -> Chapter:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    chapter = selectors.chapter_get(story=story, number=number)
    chapter.story = story
    return chapter


@login_required
@require_GET
def chapter_versions(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    chapter = _chapter(request, slug, number)
    story = chapter.story
    listed = versions.chapter_version_list(chapter=chapter)
    rows = [
        {
            "version": version,
            "withheld": False,
            "restore_url": reverse(
                "writer:chapter_version_restore", args=[story.slug, chapter.number, version.number]
            ),
            "reasoning": "",
        }
        for version in listed
    ]
    return render(
        request,
        "writer/versions.html",
        {
            "subject": f"Chapter {chapter.number}" + (f": {chapter.title}" if chapter.title else ""),
            "story": story,
            "back_url": chapter.get_absolute_url(),
            "back_label": chapter.display_title,
            "rows": rows,
            "current": listed[-1].number,
            "compare_url": reverse("writer:chapter_version_compare", args=[story.slug, chapter.number]),
            "can_restore": True,
            "chapter": chapter,
        },
    )


@login_required
@require_GET
def chapter_version_compare(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    chapter = _chapter(request, slug, number)
    return _compare_page(
        request,
        listed=versions.chapter_version_list(chapter=chapter),
        withheld=set(),
        back=chapter.get_absolute_url(),
        subject=f"Chapter {chapter.number}",
        versions_url=reverse("writer:chapter_versions", args=[slug, chapter.number]),
        story=chapter.story,
    )


@login_required
@require_POST
def chapter_version_restore(request: HttpRequest, slug: str, number: int, version: int) -> HttpResponse:
    chapter = _chapter(request, slug, number)
    found = versions.chapter_version_get(chapter=chapter, number=version)
    try:
        new = versions.chapter_version_restore(chapter=chapter, version=found, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("writer:chapter_versions", slug=slug, number=chapter.number)
    messages.success(
        request, f"Version {found.number} of chapter {chapter.number} restored as version {new.number}."
    )
    return redirect(chapter)


@login_required
@require_POST
def chapter_branch(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    try:
        branch = branches.story_branch(story=story, user=request.user, chapter_number=number)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(story)
    messages.success(
        request,
        f"A branch from chapter {number}: "
        + (f"its chapters 1 to {number} are copies" if number > 1 else "its chapter 1 is a copy")
        + f", and the writer continues it from there. “{story.title}” keeps all its chapters.",
    )
    return redirect(branch)
