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

from tests.security.permission_table import (
    clients_for,
    db_fingerprint,
    permission_table,
    url_patterns,
    walk_table,
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
    walk = walk_table(clients, table, sorted(patterns))
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests > 1000, walk.requests  # every pattern's cases, both methods, eight roles
