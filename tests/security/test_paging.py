"""Issue 18, item 2: every paginated page reads its page number through `mesu_web.paging`, and the rule is
the same everywhere: not a positive integer -> the first page, past the end -> the last page, never a 500.

`?page=99999999999999999999` on the review queue (and the story page's `?requests=`) was a 500 (`bigint out
of range` from the OFFSET); `?page=-1` on the register and the partner audit was the *last* page
(`Paginator.get_page`'s rule); the partner API's `page` of 10**20 was a 500 too."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from brands import partners
from mesu_web import paging
from mesu_web.notifications.services import notification_create
from tests.security.permission_table import build_world
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

HUGE = "99999999999999999999"  # 10**20 - 1: past PostgreSQL's bigint once multiplied into an OFFSET
FIRST = ["", "abc", "-1", "0", "1e9", "1.5", "\x00", "%00", " 2", "２", "1_0", "0x10", "a" * 5000, "-" + HUGE]
LAST = [HUGE, "9" * 5000, "1000000", "4"]


@pytest.mark.parametrize("raw", FIRST)
def test_anything_but_a_positive_integer_is_page_one(raw):
    assert paging.page_number(raw) == 1


@pytest.mark.parametrize("raw", [None, 1.5, True, [], object()])
def test_other_types_are_page_one(raw):
    assert paging.page_number(raw) == 1


def test_numbers_are_cut_to_the_cap_before_they_reach_sql():
    assert paging.page_number("7") == 7
    assert paging.page_number(7) == 7
    assert paging.page_number(HUGE) == paging.MAX_PAGE
    assert paging.page_number("9" * 5000) == paging.MAX_PAGE  # int() of it would raise, not clamp


@pytest.mark.parametrize(("raw", "number"), [*[(r, 1) for r in FIRST], *[(r, 3) for r in LAST]])
def test_page_get_clamps_to_the_nearest_page(raw, number):
    page = paging.page_get(list(range(5)), number=raw, per_page=2)
    assert page.number == number and len(page) == (2 if number == 1 else 1)


@pytest.mark.django_db
def test_page_from_window_reads_the_last_page_once_past_the_end():
    calls = []

    def rows(start, stop):  # noqa: ANN001, ANN202
        calls.append((start, stop))
        return list(range(10))[start:stop], 10

    page = paging.page_from_window(number=HUGE, per_page=4, rows=rows, count=lambda: 10)
    assert page.number == 3 and list(page) == [8, 9] and page.paginator.count == 10
    assert calls[0][0] == (paging.MAX_PAGE - 1) * 4 < 2**63  # the OFFSET asked for stays inside a bigint
    assert paging.page_from_window(number="-1", per_page=4, rows=rows, count=lambda: 10).number == 1


# --- Every paginated page, through the views ------------------------------------------------------------

PAGES = r"Page (\d+) of (\d+)"
CHAPTERS = r"Chapters (\d+)–\d+ of (\d+)"  # one chapter a page: the first chapter shown is the page


def _page_shown(response, pattern: str = PAGES) -> tuple[int, int] | None:  # noqa: ANN001
    found = re.search(pattern, response.content.decode())
    return (int(found[1]), int(found[2])) if found else None


@pytest.fixture
def many(users, settings, tmp_path, monkeypatch):  # noqa: ANN201
    """The security matrix's world with three pages of everything: one row a page."""
    from brands import measurement_views, partner_views
    from brands import views as brand_views
    from mesu_web.notifications import views as notification_views
    from writer import views as writer_views

    for module, name in (
        (brand_views, "QUEUE_PAGE_SIZE"), (measurement_views, "REGISTER_PER_PAGE"),
        (partner_views, "AUDIT_PER_PAGE"), (writer_views, "CHAPTERS_PER_PAGE"), (writer_views, "REQUESTS_PER_PAGE"),
        (notification_views, "PER_PAGE"),
    ):
        monkeypatch.setattr(module, name, 1)
    settings.PARTNER_API_PAGE_SIZE = 1
    w = build_world(users, settings, tmp_path)
    for i in range(2):  # brand A's queue: opt_a and two more pending options
        GenerationOption.objects.create(
            request=w.gen_alice, index=3 + i, text="Tidewave again.", format_ok=True, mentions=[[0, 8]],
            brand=w.a, asset=w.asset_a, placement_found=True, review_status=ReviewStatus.PENDING,
        )
    for _ in range(2):  # alice's published story: three requests
        GenerationRequest.objects.create(
            story=w.pub, requested_by=users["alice"], engine="vllm", max_new_tokens=24, next_number=4, n=1,
            status=GenerationRequest.Status.SUCCEEDED,
        )
    for i in range(2):
        notification_create(user_id=users["alice"].pk, message=f"More {i}.")
    return w


@pytest.mark.parametrize("raw", [*FIRST[:9], *LAST])
def test_every_paginated_page_clamps_its_number(many, users, client_for, client, raw):
    alice, mia = client_for("alice"), client_for("mia")
    first = raw in FIRST
    story = reverse("writer:story_detail", args=[many.pub.slug])
    pages = [
        (mia, reverse("brands:review_queue"), "page", PAGES),
        (client, reverse("brands:placement_register"), "page", None),  # no approved placement here: one empty page
        (mia, reverse("brands:partner_audit", args=[many.p1.pk]), "page", None),  # no audit rows here either
        (alice, reverse("notifications:list"), "page", PAGES),
        (alice, story, "requests", PAGES),
        (alice, story, "chapters", CHAPTERS),
    ]
    for who, url, param, pattern in pages:
        response = who.get(url, {param: raw})
        assert response.status_code == 200, (url, param, raw, response.status_code)
        if pattern is None:
            continue
        last = _page_shown(who.get(url, {param: "1"}), pattern)[1]
        assert last >= 3, (url, param, last)  # the fixture's rows: one a page
        shown = _page_shown(response, pattern)
        expected = 1 if first else min(last, paging.page_number(raw))
        assert shown[0] == expected, (url, param, raw, shown)


def test_the_review_queue_and_the_requests_list_survive_a_bigint_overflow(many, client_for):
    """The issue's probe, as it was: a 500 (`bigint out of range`) before the fix."""
    mia = client_for("mia")
    response = mia.get(reverse("brands:review_queue"), {"page": HUGE})
    assert response.status_code == 200 and _page_shown(response) == (3, 3)
    response = client_for("alice").get(reverse("writer:story_detail", args=[many.pub.slug]), {"requests": HUGE})
    assert response.status_code == 200


def test_a_page_below_one_is_the_first_page_not_the_last(many, client_for):
    """One rule: Django's `get_page` sent -1 to the last page; here, as everywhere, it is the first."""
    response = client_for("alice").get(reverse("notifications:list"), {"page": "-1"})
    assert _page_shown(response)[0] == 1
    response = client_for("alice").get(reverse("writer:story_detail", args=[many.pub.slug]), {"chapters": "-1"})
    assert _page_shown(response, CHAPTERS)[0] == 1
    response = client_for("mia").get(reverse("brands:partner_audit", args=[many.p1.pk]), {"page": "-1"})
    assert response.status_code == 200


def test_the_partner_api_clamps_a_huge_page_and_refuses_a_bad_one(many, client):
    _, key = partners.token_create(partner=many.p1, name="paging", scopes=["stories:read"], rate_per_minute=600)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    first = client.get("/api/v1/stories", **headers)
    assert first.status_code == 200
    pages = first.json()["pages"]
    response = client.get("/api/v1/stories", {"page": HUGE}, **headers)
    assert response.status_code == 200, response.content
    assert response.json()["page"] == pages  # the last page, and the answer says so
    for bad in ("-1", "0", "abc", "1.5", "1e9", ""):
        response = client.get("/api/v1/stories", {"page": bad}, **headers)
        assert response.status_code in (200, 422), (bad, response.status_code)
        if response.status_code == 200:
            assert response.json()["page"] == 1
