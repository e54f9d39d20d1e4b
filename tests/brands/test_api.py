"""The partner API's routes (brands/api.py): what each answers, bad bodies and queries, the rate limit and
the audit. Who may call what (every route x every scope x no token, revoked, another partner) is
tests/security/test_api_permissions.py; the schema is test_openapi.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from brands import partners
from brands import services as brand_services
from brands.matching import story_brands_opt_in
from brands.models import (
    ApiAuditEntry,
    CampaignSpend,
    PartnerToken,
    PlacementView,
    RiskTier,
    StoryBrandSettings,
    StorySuitability,
)
from tests.factories import UserFactory, approved_brand, live_campaign, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

ALL_SCOPES = list(partners.SCOPES)


@pytest.fixture(autouse=True)
def _private_cache(settings, request):
    """A local-memory cache of this test's own: rate counters never leak between tests or runs."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": request.node.nodeid,
        }
    }
    cache.clear()
    yield
    cache.clear()


def build_api_world(users: dict) -> SimpleNamespace:
    """Two partners: P1 for brand A (mia's, contact `shopbot`), P2 for brand B (max's, contact `bankbot`);
    stories of alice: opted in and classified (low, IAB1), opted in and unclassified, not opted in, a floor
    tier one, a draft; a token per scope for each partner, one with every scope, a revoked one."""
    alice = users["alice"]
    max_user = users.get("max") or UserFactory(username="max", roles=["brand_manager"])
    brand_a = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    asset_a = brand_services.asset_create(brand=brand_a, kind="product", name="Board", terms="Tidewave")
    brand_b = approved_brand(name="Ledger Bank", managers=[max_user], description="A bank.")
    asset_b = brand_services.asset_create(brand=brand_b, kind="mascot", name="Penny", terms="Penny")
    shopbot = UserFactory(username="shopbot", roles=["reader"])
    bankbot = UserFactory(username="bankbot", roles=["reader"])
    p1 = partners.partner_create(name="Shop app", brands=[brand_a], contact_username="shopbot")
    p2 = partners.partner_create(name="Bank app", brands=[brand_b], contact_username="bankbot")

    open_story = story_with_chapters(owner=alice, chapters=2, slug="api-open", is_published=True)
    story_brands_opt_in(story=open_story)
    StorySuitability.objects.create(story=open_story, categories=["IAB1", "IAB9"], risk_tier=RiskTier.LOW)
    unclassified = story_with_chapters(owner=alice, chapters=1, slug="api-unclassified", is_published=True)
    story_brands_opt_in(story=unclassified)
    closed = story_with_chapters(owner=alice, chapters=1, slug="api-closed", is_published=True)
    floor = story_with_chapters(owner=alice, chapters=1, slug="api-floor", is_published=True)
    story_brands_opt_in(story=floor)
    StorySuitability.objects.create(story=floor, categories=["IAB7"], risk_tier=RiskTier.FLOOR)
    draft = story_with_chapters(owner=alice, chapters=1, slug="api-draft", is_published=False)
    story_brands_opt_in(story=draft)

    def tokens(partner) -> dict[str, str]:  # noqa: ANN001
        keys = {
            scope: partners.token_create(partner=partner, name=scope, scopes=[scope], rate_per_minute=1000)[1]
            for scope in ALL_SCOPES
        }
        keys["all"] = partners.token_create(
            partner=partner, name="all", scopes=ALL_SCOPES, rate_per_minute=1000
        )[1]
        return keys

    keys1, keys2 = tokens(p1), tokens(p2)
    revoked, revoked_key = partners.token_create(
        partner=p1, name="old", scopes=ALL_SCOPES, rate_per_minute=1000
    )
    partners.token_revoke(token=revoked)

    def request_of(partner, brand, user):  # noqa: ANN001, ANN202
        gen = GenerationRequest.objects.create(
            story=open_story,
            requested_by=user,
            kind=GenerationRequest.Kind.READER,
            engine="vllm",
            max_new_tokens=24,
            next_number=3,
            n=2,
            status=GenerationRequest.Status.SUCCEEDED,
            use_brands=True,
            partner=partner,
            requested_brand=brand,
            finished_at=timezone.now(),
        )
        return gen

    req1 = request_of(p1, brand_a, shopbot)
    approved = GenerationOption.objects.create(
        request=req1,
        index=0,
        text="Lou waxed her Tidewave board.",
        format_ok=True,
        brand=brand_a,
        asset=asset_a,
        placement_found=True,
        review_status=ReviewStatus.APPROVED,
    )
    pending = GenerationOption.objects.create(
        request=req1,
        index=1,
        text="Lou's Tidewave board, unreviewed.",
        format_ok=True,
        brand=brand_a,
        asset=asset_a,
        placement_found=True,
        review_status=ReviewStatus.PENDING,
    )
    req2 = request_of(p2, brand_b, bankbot)
    campaign_a = live_campaign(brand_a)
    campaign_b = live_campaign(brand_b)
    return SimpleNamespace(
        a=brand_a,
        b=brand_b,
        asset_a=asset_a,
        asset_b=asset_b,
        p1=p1,
        p2=p2,
        shopbot=shopbot,
        bankbot=bankbot,
        open=open_story,
        unclassified=unclassified,
        closed=closed,
        floor=floor,
        draft=draft,
        keys1=keys1,
        keys2=keys2,
        revoked_key=revoked_key,
        revoked=revoked,
        req1=req1,
        req2=req2,
        approved=approved,
        pending=pending,
        campaign_a=campaign_a,
        campaign_b=campaign_b,
        max=max_user,
    )


@pytest.fixture
def w(users) -> SimpleNamespace:
    return build_api_world(users)


def call(method: str, url: str, key: str | None = None, body: object = None, **extra: str):  # noqa: ANN201
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    client = Client(enforce_csrf_checks=True)  # no CSRF on the API: token auth only
    if method == "GET":
        return client.get(url, **headers, **extra)
    return client.post(url, body, content_type="application/json", **headers, **extra)


# --- Stories ----------------------------------------------------------------------------------------


def test_stories_lists_published_opted_in_stories_never_the_floor_tier(w):
    response = call("GET", "/api/v1/stories", w.keys1["stories:read"])
    assert response.status_code == 200
    body = response.json()
    slugs = [s["slug"] for s in body["items"]]
    assert sorted(slugs) == ["api-open", "api-unclassified"]
    assert body["count"] == 2 and body["page"] == 1 and body["pages"] == 1
    by_slug = {s["slug"]: s for s in body["items"]}
    assert by_slug["api-open"]["categories"] == ["IAB1", "IAB9"]
    assert by_slug["api-open"]["risk_tier"] == "low"
    assert by_slug["api-open"]["chapters"] == 2
    assert by_slug["api-unclassified"]["categories"] is None
    assert by_slug["api-unclassified"]["risk_tier"] is None
    assert by_slug["api-open"]["url"].endswith(w.open.get_absolute_url())


def test_stories_filters_by_category_and_tier(w):
    def slugs(query: str) -> list[str]:
        response = call("GET", f"/api/v1/stories?{query}", w.keys1["stories:read"])
        assert response.status_code == 200, response.content
        return [s["slug"] for s in response.json()["items"]]

    assert slugs("category=IAB9") == ["api-open"]
    assert slugs("category=IAB7") == []  # only the floor story has it, and it is never listed
    assert slugs("max_tier=low") == ["api-open"]
    StorySuitability.objects.filter(story=w.open).update(risk_tier=RiskTier.HIGH)
    assert slugs("max_tier=medium") == []
    assert slugs("max_tier=high") == ["api-open"]


def test_stories_are_paginated(w, settings, users):
    settings.PARTNER_API_PAGE_SIZE = 1
    first = call("GET", "/api/v1/stories", w.keys1["stories:read"]).json()
    second = call("GET", "/api/v1/stories?page=2", w.keys1["stories:read"]).json()
    beyond = call("GET", "/api/v1/stories?page=3", w.keys1["stories:read"]).json()
    assert first["pages"] == 2 and first["count"] == 2
    assert len(first["items"]) == len(second["items"]) == 1
    assert first["items"][0]["slug"] != second["items"][0]["slug"]
    assert beyond["page"] == 2 and beyond["items"] == second["items"]  # past the end: the last page (issue 18)


@pytest.mark.parametrize(
    "query", ["max_tier=floor", "max_tier=extreme", "page=0", "page=abc", "category=" + "X" * 17]
)
def test_bad_story_filters_are_422_with_a_message(w, query):
    response = call("GET", f"/api/v1/stories?{query}", w.keys1["stories:read"])
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid request:")


# --- Requests ---------------------------------------------------------------------------------------


def test_a_partner_requests_a_branded_chapter_as_its_contact_reader(w):
    response = call(
        "POST",
        f"/api/v1/stories/{w.open.slug}/requests",
        w.keys1["requests:write"],
        {"brand": w.a.slug, "n": 2, "preference": "by the sea"},
    )
    assert response.status_code == 202, response.content
    body = response.json()
    created = GenerationRequest.objects.get(pk=body["id"])
    assert body["status"] == "queued"
    assert body["url"].endswith(f"/api/v1/requests/{created.pk}")
    assert created.partner == w.p1 and created.requested_brand == w.a
    assert created.kind == GenerationRequest.Kind.READER and created.requested_by == w.shopbot
    assert created.use_brands is True and created.n == 2 and created.preference == "by the sea"
    # The partner reads it back (no options yet).
    back = call("GET", body["url"], w.keys1["requests:read"])
    assert back.status_code == 200
    assert back.json()["status"] == "queued" and back.json()["options"] == []


def test_a_story_not_opted_in_is_409_with_the_reason(w):
    before = GenerationRequest.objects.count()
    response = call(
        "POST", f"/api/v1/stories/{w.closed.slug}/requests", w.keys1["requests:write"], {"brand": w.a.slug}
    )
    assert response.status_code == 409
    assert "not opted this story in" in response.json()["detail"]
    assert GenerationRequest.objects.count() == before


def test_the_authors_exclusion_rules_409(w):
    settings_row = StoryBrandSettings.objects.get(story=w.open)
    settings_row.excluded_brands.add(w.a)
    response = call(
        "POST", f"/api/v1/stories/{w.open.slug}/requests", w.keys1["requests:write"], {"brand": w.a.slug}
    )
    assert response.status_code == 409
    assert "excluded by the author" in response.json()["detail"]


def test_a_contact_who_turned_sponsored_chapters_off_gets_409(w):
    brand_services.reader_sponsorship_set(user=w.shopbot, enabled=False)
    response = call(
        "POST", f"/api/v1/stories/{w.open.slug}/requests", w.keys1["requests:write"], {"brand": w.a.slug}
    )
    assert response.status_code == 409
    assert "sponsored chapters off" in response.json()["detail"]


def test_a_partner_without_a_contact_gets_409(w):
    w.p1.contact = None
    w.p1.save()
    response = call(
        "POST", f"/api/v1/stories/{w.open.slug}/requests", w.keys1["requests:write"], {"brand": w.a.slug}
    )
    assert response.status_code == 409
    assert "no active contact" in response.json()["detail"]


@pytest.mark.parametrize(
    ("slug", "brand", "detail"),
    [
        ("api-draft", "tidewave", "No published story"),
        ("no-such-story", "tidewave", "No published story"),
        ("api-open", "ledger-bank", "has no brand"),  # another partner's brand
        ("api-open", "no-such-brand", "has no brand"),
    ],
)
def test_unknown_or_unreachable_story_or_brand_is_404(w, slug, brand, detail):
    response = call("POST", f"/api/v1/stories/{slug}/requests", w.keys1["requests:write"], {"brand": brand})
    assert response.status_code == 404
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},  # no brand
        {"brand": ""},
        {"brand": "tidewave", "n": "three"},
        {"brand": "tidewave", "n": 0},
        {"brand": "tidewave", "n": 99},
        {"brand": ["tidewave"]},
        {"brand": "tidewave", "preference": "x" * 1001},  # a huge preference
        {"brand": "tidewave", "preference": 12},
    ],
)
def test_bad_bodies_are_422_with_a_message_and_create_nothing(w, body):
    before = GenerationRequest.objects.count()
    response = call("POST", f"/api/v1/stories/{w.open.slug}/requests", w.keys1["requests:write"], body)
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith("Invalid request:")
    assert response.json()["errors"]
    assert GenerationRequest.objects.count() == before


def test_a_body_that_is_not_json_is_refused(w):
    client = Client()
    response = client.post(
        f"/api/v1/stories/{w.open.slug}/requests",
        "{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {w.keys1['requests:write']}",
    )
    assert response.status_code in (400, 422)
    assert response.json()["detail"]


def test_request_detail_shows_text_only_once_approved(w):
    response = call("GET", f"/api/v1/requests/{w.req1.pk}", w.keys1["requests:read"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded" and body["brand"] == w.a.slug and body["story"] == w.open.slug
    options = {o["index"]: o for o in body["options"]}
    assert options[0]["review_status"] == "approved" and options[0]["text"] == w.approved.text
    assert options[1]["review_status"] == "pending" and options[1]["text"] is None


def test_another_partners_request_is_404_never_403(w):
    response = call("GET", f"/api/v1/requests/{w.req2.pk}", w.keys1["requests:read"])
    assert response.status_code == 404
    assert response.json() == {"detail": "No such request."}
    missing = call("GET", "/api/v1/requests/987654", w.keys1["requests:read"])
    assert missing.status_code == 404 and missing.json() == response.json()


# --- Reports ----------------------------------------------------------------------------------------


def test_reports_cover_the_partners_campaigns_only(w):
    w.approved.campaign = w.campaign_a
    w.approved.save()
    PlacementView.objects.create(option=w.approved, brand=w.a, campaign=w.campaign_a, user=w.shopbot)
    CampaignSpend.objects.create(
        campaign=w.campaign_a, kind="impression", option=w.approved, user=w.shopbot, amount=Decimal("0.005")
    )
    w.campaign_a.spent = Decimal("0.005")
    w.campaign_a.save()
    response = call("GET", "/api/v1/reports/campaigns", w.keys1["reports:read"])
    assert response.status_code == 200
    reports = response.json()
    assert [r["id"] for r in reports] == [w.campaign_a.pk]
    report = reports[0]
    assert report["impressions"] == 1 and report["placements"] == 1
    assert Decimal(report["spent"]) == Decimal("0.005")
    assert Decimal(report["budget_total"]) == Decimal("1000")
    assert report["brand"] == w.a.slug
    one = call("GET", f"/api/v1/reports/campaigns/{w.campaign_a.pk}", w.keys1["reports:read"])
    assert one.status_code == 200 and one.json() == report
    other = call("GET", f"/api/v1/reports/campaigns/{w.campaign_b.pk}", w.keys1["reports:read"])
    assert other.status_code == 404 and other.json() == {"detail": "No such campaign."}


# --- Auth, rate limit, audit ------------------------------------------------------------------------


def test_no_token_bad_token_revoked_token_inactive_partner_are_401(w):
    for key, words in ((None, "Send a token"), ("mesu_nope", "Unknown token"), (w.revoked_key, "revoked")):
        response = call("GET", "/api/v1/stories", key)
        assert response.status_code == 401, key
        assert words in response.json()["detail"]
        assert response["WWW-Authenticate"] == "Bearer"
    basic = Client().get("/api/v1/stories", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert basic.status_code == 401
    w.p1.is_active = False
    w.p1.save()
    response = call("GET", "/api/v1/stories", w.keys1["all"])
    assert response.status_code == 401 and "inactive" in response.json()["detail"]


def test_a_session_is_not_enough(w, client_for):
    response = client_for("root").get("/api/v1/stories")
    assert response.status_code == 401


def test_a_token_without_the_scope_is_403(w):
    response = call("GET", "/api/v1/stories", w.keys1["reports:read"])
    assert response.status_code == 403
    assert response.json()["detail"].startswith("This token lacks the scope 'stories:read'")


def test_the_rate_limit_answers_429_with_retry_after(w, settings):
    """On the production cache (Redis), under a prefix of this test's own."""
    import redis

    prefix = f"mesu-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.CELERY_BROKER_URL,
            "KEY_PREFIX": prefix,
        }
    }
    token, key = partners.token_create(partner=w.p1, name="slow", scopes=["stories:read"], rate_per_minute=3)
    try:
        statuses = [call("GET", "/api/v1/stories", key).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        # The minute may turn between calls: then the 4th or 5th is the first of a new window.
        assert 429 in statuses[3:]
        limited = call("GET", "/api/v1/stories", key)
        if limited.status_code == 429:
            assert 1 <= int(limited["Retry-After"]) <= 60
            assert "3 calls a minute" in limited.json()["detail"]
        assert ApiAuditEntry.objects.filter(token=token, status=429).exists()
    finally:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for k in client.scan_iter(f"{prefix}:*"):
            client.delete(k)
        client.close()


def test_every_call_is_audited_refused_ones_too(w):
    ApiAuditEntry.objects.all().delete()
    call("GET", "/api/v1/stories", w.keys1["stories:read"], REMOTE_ADDR="203.0.113.7")
    call("GET", "/api/v1/stories", w.keys1["reports:read"])
    call("GET", f"/api/v1/requests/{w.req2.pk}", w.keys1["requests:read"])
    call("GET", "/api/v1/stories", None)
    call("GET", "/api/v1/stories", w.revoked_key)
    call("POST", f"/api/v1/stories/{w.open.slug}/requests", w.keys1["requests:write"], {"n": "x"})
    rows = list(ApiAuditEntry.objects.order_by("pk"))
    assert [(r.method, r.status) for r in rows] == [
        ("GET", 200),
        ("GET", 403),
        ("GET", 404),
        ("GET", 401),
        ("GET", 401),
        ("POST", 422),
    ]
    assert rows[0].path == "/api/v1/stories" and rows[0].ip == "203.0.113.7" and rows[0].partner == w.p1
    assert rows[0].token.prefix == w.keys1["stories:read"][:12]
    assert "lacks the scope" in rows[1].detail
    assert rows[2].path == f"/api/v1/requests/{w.req2.pk}" and rows[2].detail == "No such request."
    assert rows[3].token is None and rows[3].partner is None
    assert (
        rows[4].token == w.revoked and rows[4].partner == w.p1
    )  # a revoked token's calls stay its partner's
    assert rows[5].detail.startswith("Invalid request:")


def test_last_used_is_recorded(w):
    token = PartnerToken.objects.get(prefix=w.keys1["stories:read"][:12])
    assert token.last_used_at is None
    call("GET", "/api/v1/stories", w.keys1["stories:read"])
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(minutes=1)


def test_the_token_is_kept_only_as_its_hash(w):
    key = w.keys1["all"]
    token = PartnerToken.objects.get(prefix=key[:12])
    assert token.key_hash == partners.key_hash(key) and key not in token.key_hash
    assert not PartnerToken.objects.filter(key_hash=key).exists()
