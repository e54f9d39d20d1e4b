"""Thin views: parse the request, call a selector or service, render. Errors become messages."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from brands.matching import chapter_placement_check, placement_view_record
from mesu_web.errors import ApplicationError
from writer import selectors, services
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
from writer.models import Chapter, GenerationRequest
from writer.roles import is_author
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
            user = services.user_signup(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                role=form.cleaned_data["role"],
            )
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


@require_GET
def story_detail(request: HttpRequest, slug: str) -> HttpResponse:
    story = selectors.story_get_for_viewer(slug=slug, user=request.user)
    is_owner = request.user.is_authenticated and story.owner_id == request.user.pk
    chapters = Paginator(
        selectors.chapter_list(story=story).only("id", "number", "title", "source", "story_id"), CHAPTERS_PER_PAGE
    )
    requests = Paginator(selectors.request_list_for_story(story=story, user=request.user), REQUESTS_PER_PAGE)
    return render(
        request,
        "writer/story_detail.html",
        {
            "story": story,
            "is_owner": is_owner,
            "chapters": chapters.get_page(request.GET.get("chapters")),
            "requests": requests.get_page(request.GET.get("requests")),
            "generate_form": GenerateForm(),
            "preference_form": PreferenceForm(),
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
    # The label shows only over text its brand approved; a chapter edited since then is checked again.
    placement = chapter_placement_check(chapter=chapter, sponsor_name=chapter.sponsor_name)
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
            "sponsor": placement.sponsor,
            # Readers get a notice instead of text that names a brand without its approval.
            "withheld": placement.withheld and not (is_owner or request.user.is_staff),
            "placement_note": placement.note if is_owner else "",
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
                story=story, text=form.cleaned_data["text"], title=form.cleaned_data["title"], source=source
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
    form = ChapterForm(request.POST or None, initial={"title": chapter.title, "text": chapter.text}, allow_file=False)
    if request.method == "POST" and form.is_valid():
        try:
            services.chapter_update(chapter=chapter, text=form.cleaned_data["text"], title=form.cleaned_data["title"])
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
        gen = services.generation_request_create(story=story, user=request.user, n=form.cleaned_data["n"])
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
    for option in shown:
        if option.is_sponsored and request.user.pk == gen.requested_by_id and not is_owner:
            placement_view_record(option=option, user=request.user)
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

