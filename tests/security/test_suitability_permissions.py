"""The suitability URLs (issue 17) in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way.

A story's suitability page and its reset: only the story's author (others 403 on a published story, 404 on
a draft; staff 403). A brand's suitability page: its managers and staff (the other manager 404, authors and
readers 403). The age form: any logged-in user, for themselves. Anonymous visitors go to the login page. A
refused request changes no row, a GET changes none, and every change needs the CSRF token.

`suitability_permission_cases(world)` is the table's part for these URLs: permission_table.py should take
it in (`**suitability_permission_cases(w)`) so that test_every_url_pattern_has_an_entry_in_the_table passes.
"""

from __future__ import annotations

from types import SimpleNamespace

from tests.security.permission_table import (
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    manager_page,
    owner_page,
    posts_without_token_refused,
    url_patterns,
    walk_table,
)

SUITABILITY_URLS = (
    "brands:story_suitability",
    "brands:story_suitability_reset",
    "brands:brand_suitability",
    "brands:reader_age",
)


def suitability_permission_cases(w: SimpleNamespace) -> dict[str, list[Case]]:
    stories = (("published", w.pub.slug, True), ("draft", w.draft.slug, False))
    brands = (("brand A", w.a.slug, "mia"), ("brand B", w.b.slug, "max"))
    story_form = {"categories": ["IAB8"], "risk_tier": "low"}
    brand_form = {"category": "IAB20", "accepted_categories": ["IAB20"], "max_risk_tier": "medium",
                  "review_sla_days": "3"}  # fmt: skip
    return {
        "brands:story_suitability": [
            Case(
                label, {"slug": slug}, owner_page(200, published=p), owner_page(302, published=p), story_form
            )
            for label, slug, p in stories
        ]
        + [Case("missing", {"slug": "no-such-story"}, logged_in(404), logged_in(404), story_form)],
        "brands:story_suitability_reset": [
            Case(label, {"slug": slug}, WRONG_METHOD, owner_page(302, published=p))
            for label, slug, p in stories
        ],
        "brands:brand_suitability": [
            Case(
                label, {"slug": slug}, manager_page(200, manager=m), manager_page(302, manager=m), brand_form
            )
            for label, slug, m in brands
        ]
        + [
            Case(
                "missing",
                {"slug": "no-such-brand"},
                logged_in(403, mia=404, max=404, root=404),
                logged_in(403, mia=404, max=404, root=404),
                brand_form,
            ),
        ],  # fmt: skip
        "brands:reader_age": [Case("", {}, WRONG_METHOD, logged_in(302), {"adult": "yes"})],
    }


def test_every_suitability_url_has_an_entry(world):
    patterns = url_patterns()
    assert set(SUITABILITY_URLS) <= set(patterns)
    assert set(suitability_permission_cases(world)) == set(SUITABILITY_URLS)
    like = sorted(n for n in patterns if "suitability" in n or n == "brands:reader_age")
    assert like == sorted(SUITABILITY_URLS), "a new suitability URL needs its cases here"


def test_every_role_gets_the_expected_status_on_every_suitability_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = suitability_permission_cases(world)
    walk = walk_table(clients, table, SUITABILITY_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(
        walk.mismatches
    )
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_owners_managers_and_the_user_themselves_get_a_post_through(world):
    table = suitability_permission_cases(world)
    for name in ("brands:story_suitability", "brands:story_suitability_reset"):
        for case in table[name]:
            assert all(case.post[r] in DENIED for r in ROLES if r != "alice"), (name, case.label)
    for case in table["brands:brand_suitability"]:
        assert all(case.post[r] in DENIED for r in ("anon", "alice", "bob", "rita", "ross")), case.label
    assert table["brands:reader_age"][0].post["anon"] == LOGIN


def test_every_suitability_change_needs_the_csrf_token(world, users):
    table = suitability_permission_cases(world)
    checked = posts_without_token_refused(table, users["alice"], "alice")
    checked += posts_without_token_refused(table, users["mia"], "mia")
    checked += posts_without_token_refused(table, users["root"], "root")
    # alice: her two stories' page and reset, her age; mia: brand A, her age; root: both brands, her age
    assert checked == 5 + 2 + 3
