from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from mesu_web.notifications import selectors, services


@login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    items = selectors.notification_list(user=request.user)
    services.notifications_mark_read(user=request.user)
    return render(request, "notifications/notification_list.html", {"items": items})
