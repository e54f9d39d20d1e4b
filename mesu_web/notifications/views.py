"""The notifications page. A GET only reads; marking read is a POST (issue 18): htmx swaps the row or the
list and the header's count in place, and without JavaScript the form posts and comes back to the page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from mesu_web import paging
from mesu_web.notifications import selectors, services

PER_PAGE = 50


@login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    page = selectors.notification_page(user=request.user, number=request.GET.get("page"), per_page=PER_PAGE)
    return render(request, "notifications/notification_list.html", {"page": page})


@login_required
@require_POST
def notification_read(request: HttpRequest, pk: int) -> HttpResponse:
    notification = selectors.notification_get_for_user(user=request.user, pk=pk)
    services.notification_mark_read(notification=notification)
    if request.htmx:
        return render(request, "notifications/_read.html", {"n": notification, "with_count": True})
    return _back_to_page(request)


@login_required
@require_POST
def notifications_read_all(request: HttpRequest) -> HttpResponse:
    marked = services.notifications_mark_read(user=request.user)
    if request.htmx:
        page = selectors.notification_page(user=request.user, number=request.POST.get("page"), per_page=PER_PAGE)
        return render(request, "notifications/_list.html", {"page": page, "with_count": True})
    messages.success(request, f"{marked} notification{'' if marked == 1 else 's'} marked read.")
    return _back_to_page(request)


def _back_to_page(request: HttpRequest) -> HttpResponse:
    """The no-JavaScript form's way back: the page it was posted from (a clamped number, never a URL)."""
    number = paging.page_number(request.POST.get("page"))
    url = reverse("notifications:list")
    return redirect(f"{url}?page={number}" if number > 1 else url)
