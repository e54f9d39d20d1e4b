"""A reader's ratings of their personalised chapter and their "I prefer this one" (writer.preferences
does the work). Plain POST forms with the CSRF token: they work without JavaScript.

Who: only the reader who asked for the chapter. Others who may see the request (the story's author,
staff) get 403; everyone else 404, so nobody learns it exists; an author's request has no ratings (404).
A reader over the rate limit gets 429 with the ratings page and how long to wait.

The preference dataset's download is here too (staff only, linked from the training leaderboard): the
writer app owns the rows, and the training app imports none of its pages."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from mesu_web.errors import ApplicationError
from writer import preferences, selectors
from writer.models import GenerationOption, GenerationRequest, OptionRating


def _reader_request(request: GenerationRequest, user) -> GenerationRequest:  # noqa: ANN001
    if not selectors.request_can_view(request=request, user=user) or request.kind != GenerationRequest.Kind.READER:
        raise Http404("No such personalised chapter.")
    if request.requested_by_id != user.pk:
        raise PermissionDenied("Only the reader who asked for this chapter rates it.")
    return request


def _option(pk: int, user) -> GenerationOption:  # noqa: ANN001
    option = GenerationOption.objects.select_related("request", "request__story").filter(pk=pk).first()
    if option is None:
        raise Http404("No such option.")
    _reader_request(option.request, user)
    if not option.visible_to_requester:  # the reader was never shown it
        raise Http404("No such option.")
    return option


def _ratings_url(gen: GenerationRequest) -> str:
    return reverse("writer:request_ratings", args=[gen.pk])


def _back(request: HttpRequest, gen: GenerationRequest) -> HttpResponse:
    """Back where the form was: the ratings page when posted from there, else the request's page."""
    if request.POST.get("next") == "ratings":
        return redirect(_ratings_url(gen))
    return redirect(gen)


def _page(request: HttpRequest, gen: GenerationRequest, *, status: int = 200) -> HttpResponse:
    shown = [o for o in selectors.option_list(request=gen) if o.visible_to_requester]
    state = preferences.reader_state(request=gen, user=request.user)
    rows = [{"option": o, "stars": state.stars.get(o.pk), "preferred": state.preferred == o.pk} for o in shown]
    context = {
        "gen": gen,
        "story": gen.story,
        "rows": rows,
        "star_choices": range(OptionRating.MIN_STARS, OptionRating.MAX_STARS + 1),
        "can_prefer": len(shown) >= 2,
        "finished": gen.status == GenerationRequest.Status.SUCCEEDED,
    }
    return render(request, "writer/request_ratings.html", context, status=status)


def _limited(request: HttpRequest, gen: GenerationRequest, exc: preferences.PreferenceLimited) -> HttpResponse:
    messages.error(request, exc.message)
    response = _page(request, gen, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


@login_required
@require_GET
def request_ratings(request: HttpRequest, pk: int) -> HttpResponse:
    gen = selectors.request_get_for_user(pk=pk, user=request.user)
    _reader_request(gen, request.user)
    return _page(request, gen)


@login_required
@require_POST
def option_rate(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option(pk, request.user)
    gen = option.request
    try:
        rating = preferences.option_rate(option=option, user=request.user, stars=request.POST.get("stars"))
    except preferences.PreferenceLimited as exc:
        return _limited(request, gen, exc)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"You gave {option.label} {rating.stars} of {OptionRating.MAX_STARS} stars.")
    return _back(request, gen)


@login_required
@require_POST
def option_prefer(request: HttpRequest, pk: int) -> HttpResponse:
    option = _option(pk, request.user)
    gen = option.request
    try:
        pairs = preferences.option_prefer(option=option, user=request.user)
    except preferences.PreferenceLimited as exc:
        return _limited(request, gen, exc)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        others = len(pairs)
        messages.success(
            request, f"You prefer {option.label} to the other option{'s' if others != 1 else ''} you were shown."
        )
    return _back(request, gen)


@staff_member_required
@require_GET
def preferences_download(request: HttpRequest) -> HttpResponse:
    """The preference dataset (preferences.preference_pairs) as JSONL, streamed, one pair a line:
    {"prompt", "chosen", "rejected", "source", "writer"}; `?source=reader|author|all`. Staff only: the
    training leaderboard links it (`export_preferences` writes the same rows to a file)."""
    source = request.GET.get("source") or "all"
    try:
        preferences.parse_source(source)
    except ApplicationError as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    rows = (json.dumps(row, ensure_ascii=False) + "\n" for row in preferences.preference_pairs(source=source))
    response = StreamingHttpResponse(rows, content_type="application/x-ndjson; charset=utf-8")
    name = f"mesu-preferences-{source.strip().lower()}-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
