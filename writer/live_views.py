"""The live text's pollers (writer/live.py keeps the text and decides who sees it).

`request_live`, the request page's live body: htmx polls it about once a second while the request is
written. Who: as the request page (who asked, the story's author, staff; anyone else 404). While the
request is queued or written: the progress card, and to those who may see the draft the options' text
so far. Once it ends: the final body (the options, or the failure's reason) with 286, which stops htmx's
polling, exactly as `views.request_progress` answers it. Without JavaScript the page reloads itself
instead (`_live_options.html`).

`option_swipe_live`, one option's swipe control (`_swipe_control.html`) while the option is written
again (writer.swipes): polled every second. Who: who may see the option's request (anyone else 404).
While the swipe is queued or written: its progress, and to those who may see the draft
(`live.may_see_live`) its text so far. Once no swipe runs: the request's final body, as
`views.request_progress` renders it (the option's new text, its versions, the forms that take the text),
in place of the page's `#request-body` (HX-Retarget) with 286: no page load. Without JavaScript the
page shows the swipe as it was when loaded, and a reload shows the rest, as before."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling, reswap, retarget

from writer import selectors, swipes
from writer.live import live_options_for, swipe_live_for
from writer.models import GenerationOption
from writer.versions import option_versions_annotated
from writer.views import request_progress


@login_required
@require_GET
def request_live(request: HttpRequest, pk: int) -> HttpResponse:
    gen = selectors.request_get_for_user(pk=pk, user=request.user)
    if gen.is_finished:
        return request_progress(request, pk)  # the final body, 286
    # Nothing is stored yet: the body's progress branch reads only the row and the live text.
    context = {"gen": gen, "story": gen.story, "live": live_options_for(gen=gen, user=request.user)}
    return render(request, "writer/_request_body.html", context)


@login_required
@require_GET
def option_swipe_live(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    # With its latest swipe's state (`option_versions_annotated`), which the control shows.
    # A reader never learns of an option its brand has not let through: 404, as for everyone else.
    option = selectors.option_get_for_viewer(
        pk=pk, user=user, queryset=option_versions_annotated(GenerationOption.objects.all())
    )
    gen = option.request
    swipe = swipes.option_swipe_in_progress(option=option)
    if swipe is None:  # it ended (or never ran): the request's body as it is now, and polling stops
        final = HttpResponseStopPolling(request_progress(request, gen.pk).content)
        return reswap(retarget(final, "#request-body"), "innerHTML")
    context = {
        "option": option,
        "gen": gen,
        "user": user,
        "swipe_live": swipe_live_for(option=option, swipe=swipe, user=user),
    }
    return render(request, "writer/_swipe_control.html", context)
