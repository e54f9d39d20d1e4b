"""Thin views: parse the request, call a selector or service, render. Errors become messages."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page
from django.db import transaction
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from brands.measurement import chapter_reading, disclosures_attach
from mesu_web import paging
from mesu_web.errors import ApplicationError
from mesu_web.fragments import Fragment, cached_fragments, numbered_url, this_minute
from mesu_web.ratelimit import client_ip
from writer import quotas, selectors, services
from writer.forms import (
    AcceptOptionForm,
    BookImportForm,
    ChapterForm,
    GenerateForm,
    PreferenceForm,
    SignupForm,
    StoryForm,
)
from writer.live import live_options_for
from writer.models import Chapter, GenerationRequest, Story
from writer.roles import is_author, user_roles
from writer.selectors import AnyUser
from writer.versions import option_versions_annotated


def _require_author(request: HttpRequest) -> None:
    if not is_author(request.user):
        raise PermissionDenied("Only authors can write stories. Sign up as an author to start one.")


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "writer/home.html",
        {
            "published": selectors.story_list_published()[:50],
            "mine": selectors.story_list_for_owner(user=request.user),
        },
    )


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("writer:home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():  # the account and the age it gave, together
                user = services.user_signup(
                    username=form.cleaned_data["username"],
                    password=form.cleaned_data["password1"],
                    role=form.cleaned_data["role"],
                )
                if form.age_said() is not None:
                    from brands.suitability import reader_age_set  # see ALLOWED_EDGES: the sign-up's age

                    reader_age_set(user=user, adult=form.age_said())
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome to MeSu Studio, {user.username}!")
            return redirect("writer:home")
    return render(request, "registration/signup.html", {"form": form})


# --- Stories ---------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def story_create(request: HttpRequest) -> HttpResponse:
    _require_author(request)
    form = StoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            story = services.story_create(owner=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Story created. Add its first chapter.")
            return redirect("writer:chapter_add", slug=story.slug)
    return render(request, "writer/story_form.html", {"form": form, "creating": True})


# The story page lists chapters and requests a page at a time (?chapters=2, ?requests=2): a long web
# novel has hundreds of chapters (a row costs ~0.1 ms to render as a link, ~0.4 ms with its author's
# three forms: 300 chapters made a 125 ms page) and a popular story thousands of requests.
CHAPTERS_PER_PAGE = 50
REQUESTS_PER_PAGE = 20


@dataclass(frozen=True)
class _ChapterLine:
    number: int
    title: str
    url: str
    edit_url: str = ""  # the author's tools (empty for everyone else)
    move_url: str = ""
    delete_url: str = ""


@dataclass(frozen=True)
class _RequestLine:
    url: str
    title: str
    status: str
    status_label: str
    created_at: dt.datetime
    by: str  # who asked, when not the viewer


def _chapter_lines(story: Story, page: Page, is_owner: bool) -> list[_ChapterLine]:
    """The page's chapters with their links (one `reverse` per kind of link, not per row)."""
    detail = numbered_url("writer:chapter_detail", story.slug)
    if not is_owner:
        return [_ChapterLine(c.number, c.title or f"Chapter {c.number}", detail(c.number)) for c in page]
    edit, move, delete = (numbered_url(f"writer:chapter_{name}", story.slug) for name in ("edit", "move", "delete"))
    return [
        _ChapterLine(c.number, c.title or f"Chapter {c.number}", detail(c.number), edit(c.number), move(c.number),
                     delete(c.number))
        for c in page
    ]


def _request_lines(page: Page, user: AnyUser) -> list[_RequestLine]:
    url = numbered_url("writer:request_detail")
    return [
        _RequestLine(
            url(r.pk), f"Chapter {r.next_number} · {r.get_kind_display()}", r.status, r.status_label, r.created_at,
            "" if r.requested_by_id == user.pk else r.requested_by_username,
        )
        for r in page
    ]


@functools.cache
def _blank_form_html(form_class: type[Form]) -> SafeString:
    """An unbound form's fields as HTML (`as_p`): the same for every viewer while this process runs the same
    code, and ~0.4 ms of widget templates a page to render."""
    return form_class().as_p()


@require_GET
def story_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """The story page. What viewers of a kind see alike comes from the fragment cache (mesu_web.fragments):
    the story's details, keyed on its `updated_at`; a page of chapters, keyed on that, their count and their
    latest change; a page of requests, keyed on the viewer and the rows it shows. What is this viewer's alone
    (the CSRF token of the forms) is rendered each time."""
    user = request.user
    story = selectors.story_get_for_page(slug=slug, user=user)
    is_owner = user.is_authenticated and story.owner_id == user.pk
    if is_owner:
        export = "story"
    elif user.is_staff or user_roles(user) & {"reader", "author"}:
        export = "copy"
    else:
        export = ""
    chapters = paging.page_get(  # the count read with the story: no COUNT; the rows only on a cache miss
        selectors.chapter_titles(story=story), number=request.GET.get("chapters"), per_page=CHAPTERS_PER_PAGE,
        count=story.chapter_count,
    )
    requests = selectors.request_page_for_story(
        story=story, user=user, number=request.GET.get("requests"), per_page=REQUESTS_PER_PAGE
    )
    details = (story.pk, story.updated_at, story.is_published, story.owner.username)
    chapter_key = (story.chapter_count, story.chapters_changed, chapters.number, CHAPTERS_PER_PAGE, is_owner)
    parts = [
        Fragment(
            "about", "writer/_story_about.html", (*details, is_owner, export),
            lambda: {"story": story, "is_owner": is_owner, "export": export},
        ),
        Fragment(
            "chapters", "writer/_story_chapters.html", (*details, *chapter_key),
            lambda: {"chapters": chapters, "lines": _chapter_lines(story, chapters, is_owner), "is_owner": is_owner},
        ),
    ]
    if requests:  # ages in the list ("3 minutes ago"): the minute is in the key
        request_key = (story.pk, user.pk, is_owner, requests.number, requests.paginator.count, this_minute())
        parts.append(
            Fragment(
                "requests", "writer/_story_requests.html", (*request_key, *requests),
                lambda: {"requests": requests, "lines": _request_lines(requests, user), "is_owner": is_owner},
            )
        )
    fragments = cached_fragments(*parts)
    return render(
        request,
        "writer/story_detail.html",
        {
            "story": story,
            "is_owner": is_owner,
            "chapters": chapters,
            "requests": requests,
            "fragments": fragments,
            "generate_fields": _blank_form_html(GenerateForm) if is_owner else "",
            "preference_fields": _blank_form_html(PreferenceForm) if not is_owner else "",
            # What the viewer may still ask for, beside the button (one query; only where the form shows).
            "allowance": quotas.allowance_for(user=user, own_story=is_owner)
            if is_owner or story.is_published else None,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def story_edit(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    form = StoryForm(request.POST or None, instance=story)
    if request.method == "POST" and form.is_valid():
        try:
            services.story_update(story=story, **form.cleaned_data)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Story details saved.")
            return redirect(story)
    return render(request, "writer/story_form.html", {"form": form, "story": story, "creating": False})


@login_required
@require_POST
def story_publish(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    publish = request.POST.get("publish") == "1"
    services.story_set_published(story=story, published=publish)
    messages.success(request, "Story published: readers can find it." if publish else "Story unpublished.")
    return redirect(story)


@login_required
@require_http_methods(["GET", "POST"])
def book_import(request: HttpRequest) -> HttpResponse:
    _require_author(request)
    form = BookImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            story = services.book_import(
                owner=request.user,
                text=form.cleaned_data["file"],
                title=form.cleaned_data["title"],
                author_name=form.cleaned_data["author_name"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            count = story.chapters.count()
            messages.success(request, f"Imported {count} chapter{'s' if count != 1 else ''}. Check the chapter breaks.")
            return redirect(story)
    return render(request, "writer/book_import.html", {"form": form})


# --- Chapters --------------------------------------------------------------------------------------


@require_GET
def chapter_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_viewer(slug=slug, user=request.user)
    chapter = selectors.chapter_get_for_reading(story=story, number=number)
    last = chapter.last_number
    # The label and "Why am I seeing this?" show only over text its brand approved (a chapter edited since
    # is checked again); a reader under 18 gets the chapter as written without the brand, or a notice.
    reading = chapter_reading(chapter=chapter, story=story, user=request.user)
    is_owner = request.user.is_authenticated and story.owner_id == request.user.pk
    return render(
        request,
        "writer/chapter_detail.html",
        {
            "story": story,
            "chapter": chapter,
            "is_owner": is_owner,
            "previous_number": number - 1 if number > 1 else None,
            "next_number": number + 1 if number < last else None,
            "reading": reading,
            "disclosure": reading.disclosure,
            # Readers get a notice instead of text that names a brand without its approval.
            "withheld": reading.withheld and not (is_owner or request.user.is_staff),
            "placement_note": reading.placement_note,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def chapter_add(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    form = ChapterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        source = Chapter.Source.UPLOADED if form.cleaned_data.get("from_file") else Chapter.Source.PASTED
        try:
            chapter = services.chapter_add(
                story=story,
                text=form.cleaned_data["text"],
                title=form.cleaned_data["title"],
                source=source,
                commercial_note=form.cleaned_data["commercial_note"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Chapter {chapter.number} added.")
            return redirect(story)
    return render(request, "writer/chapter_form.html", {"form": form, "story": story, "creating": True})


@login_required
@require_http_methods(["GET", "POST"])
def chapter_edit(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    chapter = selectors.chapter_get(story=story, number=number)
    form = ChapterForm(
        request.POST or None,
        initial={"title": chapter.title, "text": chapter.text, "commercial_note": chapter.commercial_note},
        allow_file=False,
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.chapter_update(
                chapter=chapter,
                text=form.cleaned_data["text"],
                title=form.cleaned_data["title"],
                commercial_note=form.cleaned_data["commercial_note"],
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Chapter {chapter.number} saved.")
            return redirect(chapter)
    return render(
        request, "writer/chapter_form.html", {"form": form, "story": story, "chapter": chapter, "creating": False}
    )


@login_required
@require_POST
def chapter_move(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    chapter = selectors.chapter_get(story=story, number=number)
    try:
        services.chapter_move(chapter=chapter, direction=request.POST.get("direction", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(story)


@login_required
@require_POST
def chapter_delete(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    chapter = selectors.chapter_get(story=story, number=number)
    services.chapter_delete(chapter=chapter)
    messages.success(request, f"Chapter {number} deleted; the chapters after it moved up.")
    return redirect(story)


# --- Generation ------------------------------------------------------------------------------------


@login_required
@require_POST
def generate(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_owner(slug=slug, user=request.user)
    form = GenerateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose between 1 and 4 options.")
        return redirect(story)
    try:
        gen = services.generation_request_create(
            story=story, user=request.user, n=form.cleaned_data["n"], client_address=client_ip(request)
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(story)
    return redirect(gen)


@login_required
@require_POST
def personalise(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_viewer(slug=slug, user=request.user)
    form = PreferenceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Tell the writer what you would like, in under 1,000 characters.")
        return redirect(story)
    try:
        gen = services.generation_request_create(
            story=story,
            user=request.user,
            kind=GenerationRequest.Kind.READER,
            preference=form.cleaned_data["preference"],
            client_address=client_ip(request),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(story)
    return redirect(gen)


def _request_context(request: HttpRequest, gen: GenerationRequest) -> dict:
    is_owner = gen.story.owner_id == request.user.pk
    succeeded = gen.status == GenerationRequest.Status.SUCCEEDED  # with versions and swipes (writer.versions)
    options = list(option_versions_annotated(selectors.option_list(request=gen))) if succeeded else []
    # The author sees every option with its review state; a reader only what a brand has let through.
    shown = options if is_owner or request.user.is_staff else [o for o in options if o.visible_to_requester]
    # The disclosure of each sponsored option; its impression is posted by impressions.js, never on a GET.
    disclosures_attach(options=shown, story=gen.story, user=request.user)
    return {
        "gen": gen,
        "story": gen.story,
        "options": shown,
        "hidden_count": len(options) - len(shown),
        "is_owner": is_owner,
        "can_accept": is_owner
        and gen.kind == GenerationRequest.Kind.AUTHOR
        and not any(o.accepted_chapter_id for o in options),
        "live": live_options_for(gen=gen, user=request.user),  # the text so far, while it is written
    }


@login_required
@require_GET
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    gen = selectors.request_get_for_user(pk=pk, user=request.user)
    return render(request, "writer/request_detail.html", _request_context(request, gen))


@login_required
@require_GET
def request_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx-polled fragment; answers 286 (stop polling) with the final content once the job ends."""
    gen = selectors.request_get_for_user(pk=pk, user=request.user)
    response = render(request, "writer/_request_body.html", _request_context(request, gen))
    if gen.is_finished:
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@require_POST
def request_retry(request: HttpRequest, pk: int) -> HttpResponse:
    gen = selectors.request_get_for_user(pk=pk, user=request.user)
    try:
        services.generation_request_retry(request=gen, user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(gen)


@login_required
@require_POST
def option_accept(request: HttpRequest, pk: int) -> HttpResponse:
    option = selectors.option_get_for_author(pk=pk, user=request.user)
    form = AcceptOptionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The chapter text is empty: write something or keep the option's text.")
        return redirect(option.request)
    try:
        chapter = services.option_accept(
            option=option, user=request.user, text=form.cleaned_data["text"], title=form.cleaned_data["title"]
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(option.request)
    messages.success(request, f"{option.label} is now chapter {chapter.number}.")
    return redirect(chapter)

