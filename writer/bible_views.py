"""The story bible's pages (writer.bible does the work). Only the story's author: others get 404 when
they may not see the story, 403 when they may (selectors.story_get_for_owner, as every author page)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from mesu_web.errors import ApplicationError
from mesu_web.fragments import numbered_url
from writer import bible, selectors
from writer.forms import BibleEntryForm
from writer.models import BibleProposalRun, Story, StoryBibleEntry

Status = StoryBibleEntry.Status


def _bible_url(story: Story) -> str:
    return reverse("writer:bible", args=[story.slug])


def _entry(story: Story, pk: int) -> StoryBibleEntry:
    entry = StoryBibleEntry.objects.filter(story=story, pk=pk).first()
    if entry is None:
        raise Http404("No such story bible entry.")
    entry.story = story  # the services read it; no second query
    return entry


def _latest_run(story: Story) -> BibleProposalRun | None:
    return BibleProposalRun.objects.filter(story=story).order_by("-created_at", "-pk").first()


def _form_error(form: BibleEntryForm, exc: ApplicationError) -> None:
    """The service's message on the field it is about (a duplicate name on `name`), else on the form."""
    field = exc.extra.get("field")
    form.add_error(field if field in form.fields else None, exc.message)


def _entry_fields(form: BibleEntryForm) -> dict[str, object]:
    data = form.cleaned_data
    return {
        "kind": data["kind"],
        "name": data["name"],
        "aliases": data["aliases"],
        "description": data["description"],
        "from_chapter": data["from_chapter"],
        "until_chapter": data["until_chapter"],
    }


BIBLE_ENTRY_LINKS = ("edit", "accept", "reject", "delete")  # writer:bible_entry_<name>, the entry's pk last


@login_required
@require_GET
def bible_page(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    entries = list(StoryBibleEntry.objects.filter(story=story).order_by("name", "pk"))
    # Each entry's links, one `reverse` per kind of link rather than per entry (a 60-entry bible paid 135).
    links = {name: numbered_url(f"writer:bible_entry_{name}", story.slug) for name in BIBLE_ENTRY_LINKS}
    for entry in entries:
        entry.links = {name: link(entry.pk) for name, link in links.items()}
    accepted = [e for e in entries if e.status == Status.ACCEPTED]
    groups = [
        (label, [e for e in accepted if e.kind == kind]) for kind, label in StoryBibleEntry.Kind.choices
    ]
    return render(
        request,
        "writer/bible.html",
        {
            "story": story,
            "groups": [(label, items) for label, items in groups if items],
            "accepted_count": len(accepted),
            "proposals": [e for e in entries if e.status == Status.PROPOSED],
            "rejected": [e for e in entries if e.status == Status.REJECTED],
            "run": _latest_run(story),
            "has_chapters": story.chapters.exists(),
        },
    )


@login_required
@require_GET
def bible_proposals_status(request: HttpRequest, slug: str) -> HttpResponse:
    """The htmx-polled fragment of the latest proposal run; 286 (stop polling) once it has finished."""
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    run = _latest_run(story)
    response = render(request, "writer/bible_run.html", {"story": story, "run": run})
    if run is None or run.is_finished:
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@require_http_methods(["GET", "POST"])
def bible_entry_add(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    initial = {"kind": request.GET.get("kind")} if request.GET.get("kind") in StoryBibleEntry.Kind.values else {}
    form = BibleEntryForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            entry = bible.entry_create(story=story, **_entry_fields(form))
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"“{entry.name}” is in the story bible.")
            return redirect(_bible_url(story))
    return render(request, "writer/bible_form.html", {"story": story, "form": form, "entry": None})


@login_required
@require_http_methods(["GET", "POST"])
def bible_entry_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    entry = _entry(story, pk)
    initial = {
        "kind": entry.kind,
        "name": entry.name,
        "aliases": ", ".join(entry.aliases),
        "description": entry.description,
        "from_chapter": entry.from_chapter,
        "until_chapter": entry.until_chapter,
    }
    form = BibleEntryForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        accept = request.POST.get("accept") == "1" and entry.status != Status.ACCEPTED
        try:
            entry = bible.entry_update(entry=entry, **_entry_fields(form))
            if accept:
                entry = bible.entry_accept(entry=entry)
        except ApplicationError as exc:
            _form_error(form, exc)
        else:
            done = "saved and accepted into the story bible" if accept else "saved"
            messages.success(request, f"“{entry.name}” {done}.")
            return redirect(_bible_url(story))
    return render(request, "writer/bible_form.html", {"story": story, "form": form, "entry": entry})


@login_required
@require_POST
def bible_entry_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    entry = _entry(story, pk)
    bible.entry_delete(entry=entry)
    messages.success(request, f"“{entry.name}” deleted from the story bible.")
    return redirect(_bible_url(story))


@login_required
@require_POST
def bible_entry_accept(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    entry = _entry(story, pk)
    try:
        bible.entry_accept(entry=entry)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"“{entry.name}” accepted into the story bible.")
    return redirect(_bible_url(story))


@login_required
@require_POST
def bible_entry_reject(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    entry = _entry(story, pk)
    try:
        bible.entry_reject(entry=entry)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"“{entry.name}” rejected: later proposals will leave it out.")
    return redirect(_bible_url(story))


@login_required
@require_POST
def bible_propose(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    try:
        bible.bible_proposals_request(story=story, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The writer is reading the newest chapters for names; proposals appear below.")
    return redirect(_bible_url(story))
