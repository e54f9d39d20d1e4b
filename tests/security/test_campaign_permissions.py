"""The campaign pages (issue 17) in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way.

A brand's campaigns are its managers' and staff's: authors and readers get 403 (not brand managers at
all), the other brand's manager 404 (no hint the brand or campaign exists), anonymous visitors the login
page; a campaign reached under another brand's address is 404 to everyone. A refused request changes no
row, a page read changes none, and every change needs the CSRF token.

`campaign_permission_cases(world)` is the table's part for these URLs; permission_table.py can take it in
as it takes the other parts' cases."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

from django.utils import timezone

from brands import campaign_urls
from brands.models import Campaign
from tests.security.permission_table import (
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    manager_page,
    posts_without_token_refused,
    url_patterns,
    walk_table,
)

CAMPAIGN_URLS = (
    "brands:campaign_list",
    "brands:campaign_create",
    "brands:campaign_edit",
    "brands:campaign_status",
)
MISSING = 987654


def make_campaign_world(world: SimpleNamespace) -> SimpleNamespace:
    """A draft campaign of brand A (mia's) and of brand B (max's), each with its brand's asset in play."""
    today = timezone.localdate()

    def campaign(brand, asset, name: str) -> Campaign:  # noqa: ANN001
        made = Campaign.objects.create(
            brand=brand, name=name, starts_on=today, ends_on=today + timedelta(days=9),
            budget_total=Decimal("100"), price=Decimal("5"),
        )
        made.assets.set([asset])
        return made

    return SimpleNamespace(a=campaign(world.a, world.asset_a, "A's flight"), b=campaign(world.b, world.asset_b, "B's flight"))


def campaign_permission_cases(w: SimpleNamespace) -> dict[str, list[Case]]:
    today = timezone.localdate()
    form = {
        "name": "Walked campaign", "starts_on": today.isoformat(), "ends_on": (today + timedelta(days=3)).isoformat(),
        "budget_total": "50", "pricing": "cpm", "price": "4", "pacing": "even",
    }
    nobody = logged_in(403, mia=404, max=404, root=404)
    c = w.campaigns

    def brand_cases(get_ok: object, post_ok: object, data: dict | None = None) -> list[Case]:
        return [
            Case(label, {"slug": slug},
                 WRONG_METHOD if get_ok is None else manager_page(get_ok, manager=manager),
                 WRONG_METHOD if post_ok is None else manager_page(post_ok, manager=manager), data or {})
            for label, slug, manager in (("brand A", w.a.slug, "mia"), ("brand B", w.b.slug, "max"))
        ] + [Case("missing brand", {"slug": "no-such-brand"}, WRONG_METHOD if get_ok is None else nobody,
                  WRONG_METHOD if post_ok is None else nobody, data or {})]

    def campaign_cases(get_ok: object, post_ok: object, data: dict) -> list[Case]:
        def shape(ok: object, manager: str) -> dict[str, object]:
            return WRONG_METHOD if ok is None else manager_page(ok, manager=manager)

        def refused(ok: object) -> dict[str, object]:
            return WRONG_METHOD if ok is None else nobody

        return [
            Case("A's campaign", {"slug": w.a.slug, "pk": c.a.pk}, shape(get_ok, "mia"), shape(post_ok, "mia"), data),
            Case("B's campaign", {"slug": w.b.slug, "pk": c.b.pk}, shape(get_ok, "max"), shape(post_ok, "max"), data),
            # B's campaign under A's address: nobody, not even staff, reaches it that way.
            Case("B's campaign via A", {"slug": w.a.slug, "pk": c.b.pk}, refused(get_ok), refused(post_ok), data),
            Case("missing campaign", {"slug": w.a.slug, "pk": MISSING}, refused(get_ok), refused(post_ok), data),
        ]

    return {
        "brands:campaign_list": brand_cases(200, None),
        "brands:campaign_create": brand_cases(200, 302, form),
        "brands:campaign_edit": campaign_cases(200, 302, form),
        "brands:campaign_status": campaign_cases(None, 302, {"status": "ended"}),
    }


def _world(world: SimpleNamespace) -> SimpleNamespace:
    """The shared world (permission_table.build_world) already holds this part's rows."""
    if not hasattr(world, "campaigns"):
        world.campaigns = make_campaign_world(world)
    return world


def test_every_campaign_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(CAMPAIGN_URLS) <= set(patterns)
    assert set(campaign_permission_cases(_world(world))) == set(CAMPAIGN_URLS)
    mine = sorted(f"brands:{p.name}" for p in campaign_urls.urlpatterns)
    assert mine == sorted(CAMPAIGN_URLS), "a new URL of brands/campaign_urls.py needs its cases here"


def test_every_role_gets_the_expected_status_on_every_campaign_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = campaign_permission_cases(_world(world))
    walk = walk_table(clients, table, CAMPAIGN_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_managers_and_staff_get_a_post_through(world):
    for name, cases in campaign_permission_cases(_world(world)).items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ("alice", "bob", "rita", "ross"):
                assert case.post[role] in DENIED, (name, case.label, role)


def test_every_campaign_change_needs_the_csrf_token(world, users):
    table = campaign_permission_cases(_world(world))
    checked = posts_without_token_refused(table, users["mia"], "mia")
    checked += posts_without_token_refused(table, users["root"], "root")
    # mia: create for A, edit and status of A's campaign; root: create for A and B, edit and status of both.
    assert checked == 3 + 6
