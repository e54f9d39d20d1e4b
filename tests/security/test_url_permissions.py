"""Every URL pattern, every role, GET and POST: the status each one gets, from one table.

The patterns come from Django's resolver, so a new URL without an entry in the table
(permission_table.py) fails the test with its name. Only Django's own admin (`admin/`) is skipped: it
has its own permission checks, and its login's rate limit is tested in test_login_rate_limit.py.

Roles: anonymous, alice (author, owns every story here), bob (another author), rita (reader, asked for
a personalised chapter), ross (another reader), mia (manages brand A), max (manages brand B), root
(staff). Every request runs inside a savepoint that is rolled back, so each one meets the same world;
a request that is refused must not have changed any row (checked before the rollback).

Outcomes: a status code, LOGIN (a redirect to the login page) or ADMIN_LOGIN (the admin's login page,
where `staff_member_required` sends non-staff users).
"""

from __future__ import annotations

from http.cookies import SimpleCookie

from django.core.cache import cache
from django.db import transaction
from django.urls import reverse

from tests.security.permission_table import (
    DENIED,
    ROLES,
    clients_for,
    db_fingerprint,
    outcome_of,
    permission_table,
    url_patterns,
)


def test_every_url_pattern_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    table = permission_table(world)
    unnamed = sorted(name[1:] for name in patterns if name.startswith("?"))
    assert not unnamed, f"URL patterns without a name cannot be in the permission table: {unnamed}"
    missing = sorted(set(patterns) - set(table))
    assert not missing, (
        "URL names without an entry in the permission table (tests/security/permission_table.py) "
        f"(add what each role gets): {', '.join(missing)}"
    )
    stale = sorted(set(table) - set(patterns))
    assert not stale, f"The permission table names URLs that no longer exist: {', '.join(stale)}"
    ambiguous = {name: routes for name, routes in patterns.items() if len(routes) > 1}
    assert not ambiguous, f"One name for several routes (the table can reach only one): {ambiguous}"


def test_every_role_gets_the_expected_status_on_every_url(world, users):
    clients = clients_for({**users, "max": world.max})
    assert len(db_fingerprint()) >= 15  # the check below covers every table of the apps
    table = permission_table(world)
    patterns = url_patterns()
    mismatches: list[str] = []
    changed: list[str] = []
    requests = 0
    for name in sorted(patterns):
        for case in table[name]:
            url = reverse(name, kwargs=case.kwargs)
            for method, expected_by_role in (("GET", case.get), ("POST", case.post)):
                for role in ROLES:
                    client = clients[role]
                    cookies = SimpleCookie(client.cookies.output(header="", sep="\n"))
                    with transaction.atomic():
                        before = db_fingerprint()
                        if method == "GET":
                            response = client.get(url)
                        else:
                            response = client.post(url, case.data)
                        outcome = outcome_of(response)
                        if outcome in DENIED and db_fingerprint() != before:
                            changed.append(f"{method} {url} as {role} ({outcome}) changed the database")
                        transaction.set_rollback(True)
                    client.cookies = cookies  # a logout or a login must not carry over
                    cache.clear()  # nor a failed login's counter
                    requests += 1
                    expected = expected_by_role[role]
                    if outcome != expected:
                        label = f" [{case.label}]" if case.label else ""
                        mismatches.append(f"{method} {name}{label} {url} as {role}: got {outcome}, expected {expected}")
    assert not mismatches, f"{len(mismatches)} of {requests} requests:\n" + "\n".join(mismatches)
    assert not changed, "\n".join(changed)
    assert requests > 1000, requests  # every pattern's cases, both methods, eight roles
