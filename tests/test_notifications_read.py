"""Issue 18, item 3: reads do not write. Opening /notifications/ marked everything read; now a GET marks
nothing, and "Mark read" (one row) and "Mark all read" are POSTs: htmx swaps the row or the list and the
header's count, a form without JavaScript posts and comes back, CSRF-protected, the owner's rows only."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from mesu_web.notifications.models import Notification
from mesu_web.notifications.services import notification_create

LIST = reverse("notifications:list")
READ_ALL = reverse("notifications:read_all")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def inbox(users):  # noqa: ANN201
    alice, bob = users["alice"], users["bob"]
    mine = [notification_create(user_id=alice.pk, message=f"Alice {i}", url="/") for i in range(3)]
    theirs = notification_create(user_id=bob.pk, message="Bob's own")
    return mine, theirs


def _unread(user) -> int:  # noqa: ANN001
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def _header_count(html: str) -> int:
    found = re.search(r'href="/notifications/">Notifications(?: <span class="count">(\d+)</span>)?</a>', html)
    assert found, "the header's link to the notifications is missing"
    return int(found[1] or 0)


def test_opening_the_list_marks_nothing_read(users, inbox, client_for):
    alice = client_for("alice")
    for _ in range(2):
        response = alice.get(LIST)
        assert response.status_code == 200
        assert _header_count(response.content.decode()) == 3  # the header still counts them, every time
    assert _unread(users["alice"]) == 3
    html = response.content.decode()
    assert html.count('class="unread"') == 3
    # Each row offers a form that works without JavaScript (action) and with htmx (hx-post).
    mine, _ = inbox
    for n in mine:
        url = reverse("notifications:read", args=[n.pk])
        assert f'action="{url}"' in html and f'hx-post="{url}"' in html
    assert f'action="{READ_ALL}"' in html and "Mark all read" in html


def test_marking_one_read_is_a_post_of_the_owner_only(users, inbox, client_for):
    mine, theirs = inbox
    alice, bob = client_for("alice"), client_for("bob")
    url = reverse("notifications:read", args=[mine[0].pk])
    assert alice.get(url).status_code == 405  # a GET never writes
    assert bob.post(url).status_code == 404  # another's row: no hint it exists
    assert client_for("root").post(url).status_code == 404  # staff too: the inbox is its owner's
    assert _unread(users["alice"]) == 3
    response = alice.post(url)  # no JavaScript: back to the list
    assert response.status_code == 302 and response["Location"] == LIST
    mine[0].refresh_from_db()
    assert mine[0].read_at is not None and _unread(users["alice"]) == 2
    first_read = mine[0].read_at
    assert alice.post(url).status_code == 302  # again: nothing changes, the first time is kept
    mine[0].refresh_from_db()
    assert mine[0].read_at == first_read
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_marking_one_read_with_htmx_swaps_the_row_and_the_header_count(users, inbox, client_for):
    mine, _ = inbox
    response = client_for("alice").post(reverse("notifications:read", args=[mine[1].pk]), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="notification-{mine[1].pk}"' in html and 'class="unread"' not in html
    assert "Mark read" not in html  # the row read: no button left
    # The header's link, out of band, with the new count.
    assert "hx-swap-oob=\"innerHTML:.topbar a[href='/notifications/']\"" in html
    assert '<span class="count">2</span>' in html


def test_mark_all_read_marks_only_the_users_rows(users, inbox, client_for):
    _, theirs = inbox
    alice = client_for("alice")
    assert alice.get(READ_ALL).status_code == 405
    response = alice.post(READ_ALL, {"page": "2"})
    assert response.status_code == 302 and response["Location"] == f"{LIST}?page=2"  # back where it was posted
    assert _unread(users["alice"]) == 0
    theirs.refresh_from_db()
    assert theirs.read_at is None
    page = alice.get(response["Location"])
    assert _header_count(page.content.decode()) == 0 and "3 notifications marked read." in page.content.decode()
    assert "Mark all read" not in page.content.decode()


def test_mark_all_read_with_htmx_swaps_the_list_and_empties_the_count(users, inbox, client_for):
    response = client_for("alice").post(READ_ALL, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and 'id="notifications"' in html
    assert 'class="unread"' not in html and "Mark all read" not in html
    assert "hx-swap-oob" in html and 'class="count"' not in html
    assert _unread(users["alice"]) == 0


def test_the_posts_need_the_csrf_token_and_a_login(users, inbox):
    mine, _ = inbox
    bare = Client(enforce_csrf_checks=True)
    bare.force_login(users["alice"])
    for url in (READ_ALL, reverse("notifications:read", args=[mine[0].pk])):
        assert bare.post(url).status_code == 403
        response = Client().post(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert _unread(users["alice"]) == 3


def test_the_list_is_paginated_and_clamps_its_page(users, client_for, monkeypatch):
    from mesu_web.notifications import views

    monkeypatch.setattr(views, "PER_PAGE", 2)
    for i in range(5):
        notification_create(user_id=users["alice"].pk, message=f"N{i}")
    alice = client_for("alice")
    for raw, number in (("2", 2), ("99999999999999999999", 3), ("-1", 1), ("abc", 1)):
        html = alice.get(LIST, {"page": raw}).content.decode()
        assert f"Page {number} of 3" in html, raw
    assert _unread(users["alice"]) == 5
