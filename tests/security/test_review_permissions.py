"""The review workflow's URLs (issue 17, part 6) in the security matrix: every role, GET and POST, on the
world of test_url_permissions.py (permission_table.py), checked the same way.

A manager's decisions (request changes, approve with an edit) and a brand's auto-approve rules follow the
brand pages: authors and readers 403 (not brand managers), the other brand's manager 404, staff as a
manager. The author's revision: only the story's author (anyone else 404, staff too: it is the author's
text). Anonymous visitors go to the login page; a refused request changes no row, no GET writes, and every
change needs the CSRF token.

`review_permission_cases(world)` is the table's part for these URLs: permission_table.py should take it in
(`**review_permission_cases(w)`) so that test_url_permissions' "every URL has an entry" passes."""

from __future__ import annotations

from types import SimpleNamespace

from brands.models import AutoApproveRule
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

REVIEW_URLS = (
    "brands:option_request_changes",
    "brands:option_approve_edit",
    "brands:option_revise",
    "brands:auto_approve_rules",
    "brands:auto_approve_switch",
)
MISSING = 987654


def review_permission_cases(w: SimpleNamespace) -> dict[str, list[Case]]:
    """{URL name: [Case, ...]} for the review workflow's URLs (permission_table.py's shapes)."""
    rule_a, _ = AutoApproveRule.objects.get_or_create(brand=w.a, min_similarity=0.95)
    rule_b, _ = AutoApproveRule.objects.get_or_create(brand=w.b, min_similarity=0.95)
    nobody = logged_in(403, mia=404, max=404, root=404)  # an unbranded option: no brand's manager
    mia, max_ = manager_page(302, manager="mia"), manager_page(302, manager="max")

    def decision(data_a: dict, data_b: dict) -> list[Case]:
        return [
            Case("brand A option", {"pk": w.opt_a.pk}, WRONG_METHOD, mia, data_a),
            Case("brand B option", {"pk": w.opt_b.pk}, WRONG_METHOD, max_, data_b),
            Case("unbranded option", {"pk": w.plain.pk}, WRONG_METHOD, nobody, data_a),
            Case("missing option", {"pk": MISSING}, WRONG_METHOD, logged_in(403, mia=404, max=404, root=404), data_a),
        ]

    # The revision: alice's story; the form (GET) for her, the refused POST (nothing asked to change) back
    # to the request page with the reason.
    author = logged_in(404, alice=200)
    author_post = logged_in(404, alice=302)
    revise = {"passage": "Lou waxed her Tidewave surfboard."}

    def rules(get_ok: object, post_ok: object, data: dict) -> list[Case]:
        return [
            Case("brand A", {"slug": w.a.slug}, manager_page(get_ok, manager="mia"), manager_page(post_ok, manager="mia"), data),
            Case("brand B", {"slug": w.b.slug}, manager_page(get_ok, manager="max"), manager_page(post_ok, manager="max"), data),
        ]

    return {
        "brands:option_request_changes": decision({"comment": "Softer, please."}, {"comment": "Softer, please."}),
        "brands:option_approve_edit": decision(
            {"passage": "Lou waxed her Tidewave surfboard."}, {"passage": "Pip fed Penny two coins."}
        ),
        "brands:option_revise": [
            Case("brand A option", {"pk": w.opt_a.pk}, author, author_post, revise),
            Case("brand B option", {"pk": w.opt_b.pk}, author, author_post, revise),
            Case("unbranded option", {"pk": w.plain.pk}, logged_in(404), logged_in(404), revise),
            Case("missing option", {"pk": MISSING}, logged_in(404), logged_in(404), revise),
        ],
        "brands:auto_approve_rules": rules(200, 302, {"max_risk_tier": "low", "min_similarity": "0.9"}),
        "brands:auto_approve_switch": [
            Case("brand A rule", {"slug": w.a.slug, "pk": rule_a.pk}, WRONG_METHOD, mia, {"active": "0"}),
            Case("brand B rule", {"slug": w.b.slug, "pk": rule_b.pk}, WRONG_METHOD, max_, {"active": "0"}),
            Case("brand B's rule under brand A", {"slug": w.a.slug, "pk": rule_b.pk}, WRONG_METHOD,
                 manager_page(404, manager="mia"), {"active": "0"}),
            Case("missing rule", {"slug": w.a.slug, "pk": MISSING}, WRONG_METHOD,
                 manager_page(404, manager="mia"), {"active": "0"}),
        ],
    }


def test_every_review_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(REVIEW_URLS) <= set(patterns)
    assert set(review_permission_cases(world)) == set(REVIEW_URLS)


def test_every_role_gets_the_expected_status_on_every_review_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = review_permission_cases(world)
    walk = walk_table(clients, table, REVIEW_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_anonymous_visitors_go_to_the_login_page_and_readers_get_nothing_through(world):
    for name, cases in review_permission_cases(world).items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ("bob", "rita", "ross"):
                assert case.post[role] in DENIED, (name, case.label, role)


def test_every_review_change_needs_the_csrf_token(world, users):
    table = review_permission_cases(world)
    checked = posts_without_token_refused(table, users["mia"], "mia")
    checked += posts_without_token_refused(table, world.max, "max")
    checked += posts_without_token_refused(table, users["alice"], "alice")
    assert checked == 10  # mia: two decisions, a rule and a switch of brand A; max the same of B; alice two revisions
