"""The partner API and the partner pages in the security matrix.

The API (brands/api.py): every route x every token (one per scope, one with every scope, another partner's,
a revoked one, an unknown one, none) gets the status the table says; a session (every role, staff too) is
never enough (401); no route takes a cookie, so no CSRF token is asked (token auth); a refused call changes
no row except its audit entry. Another partner's request or campaign is 404, never 403.

The pages (brands/partner_urls.py): every role, GET and POST, on the shapes of permission_table.py;
creating and editing a partner is staff's; a token's pages are the partner's brands' managers' and
staff's; every change needs the CSRF token. `partner_permission_cases(w)` is the table's part for these
URLs (and `api_session_cases()` the API's, as the session roles see it), for permission_table.py to take
in with `make_partner_world(world)` from its build_world.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import reverse

from brands import partners
from brands.models import ApiAuditEntry, Partner, PartnerToken
from tests.brands.test_api import build_api_world
from tests.security.permission_table import (
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    db_fingerprint,
    expect,
    logged_in,
    manager_page,
    posts_without_token_refused,
    url_patterns,
    walk_table,
)

PAGE_URLS = (
    "brands:partner_list",
    "brands:partner_create",
    "brands:partner_detail",
    "brands:partner_edit",
    "brands:partner_token_create",
    "brands:partner_token_revoke",
    "brands:partner_audit",
)
API_URLS = (
    "partner_api:stories",
    "partner_api:story_requests",
    "partner_api:request_detail",
    "partner_api:campaign_reports",
    "partner_api:campaign_report",
    "partner_api:openapi-json",
    "partner_api:openapi-view",
    "partner_api:api-root",
)
MISSING = 987654


@pytest.fixture
def w(users):
    return build_api_world(users)


# --- The API, by token --------------------------------------------------------------------------------

TOKENS = (
    "none",
    "unknown",
    "revoked",
    "stories:read",
    "requests:write",
    "requests:read",
    "reports:read",
    "all",
    "other",
)


def api_routes(w) -> list[tuple[str, str, str, dict, str, int]]:  # noqa: ANN001
    """(label, method, url, body, the scope it needs, the status a token with that scope of P1 gets)."""
    return [
        ("stories", "GET", "/api/v1/stories", {}, "stories:read", 200),
        (
            "request",
            "POST",
            f"/api/v1/stories/{w.open.slug}/requests",
            {"brand": w.a.slug},
            "requests:write",
            202,
        ),
        (
            "request of a closed story",
            "POST",
            f"/api/v1/stories/{w.closed.slug}/requests",
            {"brand": w.a.slug},
            "requests:write",
            409,
        ),
        ("own request", "GET", f"/api/v1/requests/{w.req1.pk}", {}, "requests:read", 200),
        ("P2's request", "GET", f"/api/v1/requests/{w.req2.pk}", {}, "requests:read", 404),
        ("missing request", "GET", f"/api/v1/requests/{MISSING}", {}, "requests:read", 404),
        ("reports", "GET", "/api/v1/reports/campaigns", {}, "reports:read", 200),
        ("own campaign", "GET", f"/api/v1/reports/campaigns/{w.campaign_a.pk}", {}, "reports:read", 200),
        ("P2's campaign", "GET", f"/api/v1/reports/campaigns/{w.campaign_b.pk}", {}, "reports:read", 404),
    ]


def expected_status(token: str, scope: str, ok: int, label: str) -> int:
    if token in ("none", "unknown", "revoked"):
        return 401
    if (
        token == "other"
    ):  # P2's token with every scope: P1's request and campaign are 404 to it, and P2's its own
        if label in ("own request", "own campaign"):
            return 404
        if label in ("P2's request", "P2's campaign"):
            return 200
        if label.startswith("request"):
            return 404  # brand A is not P2's
        return ok
    if token != "all" and token != scope:
        return 403
    return ok


def key_of(w, token: str) -> str | None:  # noqa: ANN001
    return {
        "none": None,
        "unknown": "mesu_" + "x" * 43,
        "revoked": w.revoked_key,
        "all": w.keys1["all"],
        "other": w.keys2["all"],
    }.get(token, w.keys1.get(token))


def test_every_route_with_every_token(w):
    mismatches, changed, count = [], [], 0
    for label, method, url, body, scope, ok in api_routes(w):
        for token in TOKENS:
            key = key_of(w, token)
            headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
            client = Client(enforce_csrf_checks=True)
            with transaction.atomic():
                audits = ApiAuditEntry.objects.count()
                before = db_fingerprint()
                if method == "GET":
                    response = client.get(url, **headers)
                else:
                    response = client.post(url, body, content_type="application/json", **headers)
                expected = expected_status(token, scope, ok, label)
                if response.status_code != expected:
                    mismatches.append(
                        f"{method} {label} with {token}: got {response.status_code}, expected {expected}"
                    )
                if response.status_code >= 400:
                    assert set(response.json()) >= {"detail"} and isinstance(response.json()["detail"], str)
                    # A refused call writes its audit row and its token's last use, nothing else.
                    ApiAuditEntry.objects.order_by("-pk").first().delete()
                    PartnerToken.objects.update(last_used_at=None)
                    if db_fingerprint() != before:
                        changed.append(
                            f"{method} {label} with {token} ({response.status_code}) changed a row"
                        )
                    ApiAuditEntry.objects.create(
                        method="-", path="-", status=0
                    )  # keep the count for the check below
                assert ApiAuditEntry.objects.count() == audits + 1, (label, token)
                transaction.set_rollback(True)
            cache.clear()
            count += 1
    assert not mismatches, "\n".join(mismatches)
    assert not changed, "\n".join(changed)
    assert count == len(api_routes(w)) * len(TOKENS)


def test_a_missing_scope_names_it(w):
    for label, method, url, body, scope, _ in api_routes(w):
        wrong = next(s for s in partners.SCOPES if s != scope)
        client = Client()
        headers = {"HTTP_AUTHORIZATION": f"Bearer {w.keys1[wrong]}"}
        response = (
            client.get(url, **headers)
            if method == "GET"
            else client.post(url, body, content_type="application/json", **headers)
        )
        assert response.status_code == 403, label
        assert response.json()["detail"].startswith(f"This token lacks the scope '{scope}'"), label


def api_session_cases() -> dict[str, list[Case]]:
    """The API as a logged-in session sees it: every role, staff too, 401 (no session auth), 405 for the
    wrong method; the schema and the docs are public."""
    return {
        "partner_api:stories": [Case("", {}, expect(401), expect(405))],
        "partner_api:story_requests": [
            Case("", {"slug": "api-open"}, expect(405), expect(401), {"brand": "tidewave"})
        ],
        "partner_api:request_detail": [Case("", {"request_id": MISSING}, expect(401), expect(405))],
        "partner_api:campaign_reports": [Case("", {}, expect(401), expect(405))],
        "partner_api:campaign_report": [Case("", {"campaign_id": MISSING}, expect(401), expect(405))],
        "partner_api:openapi-json": [Case("", {}, expect(200), expect(405))],
        "partner_api:openapi-view": [Case("", {}, expect(200), expect(405))],
        "partner_api:api-root": [Case("", {}, expect(404), expect(404))],
    }


def test_a_session_never_reaches_the_api(w, users):
    """Every role's session on every API URL: what the table says; the CSRF token is never what refuses."""
    clients = clients_for({**users, "max": w.max})
    walk_mismatches = []
    for name, cases in api_session_cases().items():
        for case in cases:
            url = reverse(name, kwargs=case.kwargs)
            for method, table in (("GET", case.get), ("POST", case.post)):
                for role in ROLES:
                    client = clients[role]
                    with transaction.atomic():
                        if method == "GET":
                            response = client.get(url)
                        else:
                            response = client.post(url, case.data, content_type="application/json")
                        transaction.set_rollback(True)
                    if response.status_code != table[role]:
                        walk_mismatches.append(
                            f"{method} {name} as {role}: {response.status_code} != {table[role]}"
                        )
    assert not walk_mismatches, "\n".join(walk_mismatches)


def test_every_api_url_has_an_entry(w):
    patterns = url_patterns()
    api_names = sorted(n for n in patterns if n.startswith("partner_api:"))
    assert api_names == sorted(API_URLS)
    assert set(api_session_cases()) == set(API_URLS)


# --- The pages ---------------------------------------------------------------------------------------


def make_partner_world(w) -> None:  # noqa: ANN001
    """For permission_table.build_world: partners of brand A (mia's) and B (max's), with a token each."""
    w.p1 = partners.partner_create(name="Shop app", brands=[w.a])
    w.p2 = partners.partner_create(name="Bank app", brands=[w.b])
    w.token1, _ = partners.token_create(partner=w.p1, name="t1", scopes=["stories:read"], rate_per_minute=60)
    w.token2, _ = partners.token_create(partner=w.p2, name="t2", scopes=["stories:read"], rate_per_minute=60)


def partner_permission_cases(w) -> dict[str, list[Case]]:  # noqa: ANN001
    """{URL name: [Case, ...]} for the partner pages (permission_table.py's shapes)."""
    token1 = w.p1.tokens.first()
    token2 = w.p2.tokens.first()
    nobody = logged_in(403, mia=404, max=404, root=404)  # a missing partner
    staff_of = {"mia": 403, "max": 404}  # the edit page: P1's manager sees the partner, is not staff
    token_form = {"name": "walked", "scopes": ["stories:read"], "rate_per_minute": 60}
    partner_form = {"name": "Walked partner", "is_active": "on"}

    def both(get, post, data=None, **kw):  # noqa: ANN001, ANN202
        return [
            Case(
                "P1 (brand A)",
                {"pk": w.p1.pk, **kw.get("k1", {})},
                WRONG_METHOD if get is None else manager_page(get, manager="mia"),
                WRONG_METHOD if post is None else manager_page(post, manager="mia"),
                data or {},
            ),
            Case(
                "P2 (brand B)",
                {"pk": w.p2.pk, **kw.get("k2", {})},
                WRONG_METHOD if get is None else manager_page(get, manager="max"),
                WRONG_METHOD if post is None else manager_page(post, manager="max"),
                data or {},
            ),
        ]

    return {
        "brands:partner_list": [Case("", {}, logged_in(403, mia=200, max=200, root=200), WRONG_METHOD)],
        "brands:partner_create": [
            Case("", {}, logged_in(403, root=200), logged_in(403, root=302), partner_form)
        ],
        "brands:partner_detail": [
            *both(200, None),
            Case("missing", {"pk": MISSING}, nobody, WRONG_METHOD),
        ],
        "brands:partner_edit": [
            Case(
                "P1",
                {"pk": w.p1.pk},
                logged_in(403, **staff_of, root=200),
                logged_in(403, **staff_of, root=302),
                {**partner_form, "name": "Shop app", "brands": [w.a.pk]},
            ),
            Case("missing", {"pk": MISSING}, nobody, nobody, partner_form),
        ],
        "brands:partner_token_create": [
            *both(None, 200, token_form),
            Case("missing", {"pk": MISSING}, WRONG_METHOD, nobody, token_form),
        ],
        "brands:partner_token_revoke": [
            *both(None, 302, k1={"token_pk": token1.pk}, k2={"token_pk": token2.pk}),
            # P2's token under P1's address: nobody reaches it that way, not even staff.
            Case(
                "P2's token via P1",
                {"pk": w.p1.pk, "token_pk": token2.pk},
                WRONG_METHOD,
                logged_in(403, mia=404, max=404, root=404),
            ),
        ],
        "brands:partner_audit": [*both(200, None), Case("missing", {"pk": MISSING}, nobody, WRONG_METHOD)],
    }


@pytest.fixture
def page_world(w):
    for partner in (w.p1, w.p2):
        partners.token_create(partner=partner, name="walk", scopes=["stories:read"], rate_per_minute=60)
    return w


def test_every_partner_page_url_has_an_entry(page_world):
    patterns = url_patterns()
    assert set(PAGE_URLS) <= set(patterns)
    assert set(partner_permission_cases(page_world)) == set(PAGE_URLS)
    like = sorted(n for n in patterns if n.startswith("brands:partner"))
    assert like == sorted(PAGE_URLS), "a new partner URL needs its cases here"


def test_every_role_gets_the_expected_status_on_every_partner_page(page_world, users):
    clients = clients_for({**users, "max": page_world.max})
    table = partner_permission_cases(page_world)
    walk = walk_table(clients, table, PAGE_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(
        walk.mismatches
    )
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_managers_of_the_partners_brands_and_staff_get_a_post_through(page_world):
    for name, cases in partner_permission_cases(page_world).items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ("alice", "bob", "rita", "ross"):
                assert case.post[role] in DENIED, (name, case.label, role)


def test_every_partner_change_needs_the_csrf_token(page_world, users):
    table = partner_permission_cases(page_world)
    assert posts_without_token_refused(table, users["root"], "root") == 6  # create, edit, 2 tokens, 2 revokes
    assert posts_without_token_refused(table, users["mia"], "mia") == 2  # P1's token and its revoke


def test_the_token_page_shows_the_key_once_and_stores_only_its_hash(page_world, client_for):
    w = page_world
    response = client_for("mia").post(
        reverse("brands:partner_token_create", args=[w.p1.pk]),
        {"name": "shop prod", "scopes": ["stories:read", "reports:read"], "rate_per_minute": 120},
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    key = response.context["new_key"]
    assert key.startswith("mesu_") and key.encode() in response.content
    token = PartnerToken.objects.get(prefix=key[:12])
    assert token.scopes == ["stories:read", "reports:read"] and token.rate_per_minute == 120
    assert token.key_hash == partners.key_hash(key)
    again = client_for("mia").get(reverse("brands:partner_detail", args=[w.p1.pk]))
    assert key.encode() not in again.content and token.prefix.encode() in again.content


def test_partner_rows_are_not_leaked_to_other_managers(page_world):
    client = Client()
    client.force_login(page_world.max)
    listing = client.get(reverse("brands:partner_list"))
    assert b"Bank app" in listing.content and b"Shop app" not in listing.content
    assert Partner.objects.count() == 2
