"""The request page's live body: htmx polls it about once a second while the request is written
(writer/live.py keeps the text; `live.live_options_for` decides who sees it).

Who: as the request page (who asked, the story's author, staff; anyone else 404). While the request is
queued or written: the progress card, and to those who may see the draft the options' text so far.
Once it ends: the final body (the options, or the failure's reason) with 286, which stops htmx's
polling, exactly as `views.request_progress` answers it. Without JavaScript the page reloads itself
instead (`_live_options.html`)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from writer import selectors
from writer.live import live_options_for
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
