"""Issue 18: fuzz the query strings of every list page, not only the forms (test_fuzz.py). Each GET route
that reads a query parameter gets hostile values for each parameter it reads, as every role that the
security matrix (permission_table.py) lets see it: never a 500, and no row of any app changes (a read
writes nothing; the notifications' table included).

The parameters are found in the code too: a view that starts reading a new `request.GET` key fails
`test_every_query_parameter_read_is_fuzzed` until the key is in QUERY_PARAMS below.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.apps import apps
from django.core.cache import cache
from django.db import connection, transaction
from django.urls import reverse

from brands import partners
from tests.security.permission_table import (
    DENIED,
    TRACKED_APPS,
    UNTRACKED_TABLES,
    clients_for,
    permission_table,
)

# {URL name: the query parameters its view reads}
QUERY_PARAMS: dict[str, tuple[str, ...]] = {
    "brands:review_queue": ("page",),
    "brands:placement_register": ("page",),
    "brands:partner_audit": ("page",),
    "brands:brand_approvals": ("page",),  # issue 18: staff's list of brands waiting for approval
    "notifications:list": ("page",),
    "writer:story_detail": ("chapters", "requests"),
    "writer:bible_entry_add": ("kind",),
    "writer:option_version_compare": ("a", "b"),
    "writer:chapter_version_compare": ("a", "b"),
    "writer:preferences_download": ("source",),
    "training:job_list": ("dataset",),
    "training:leaderboard": ("dataset", "metric", "evaluate"),
}
API_PARAMS = {"/api/v1/stories": ("category", "max_tier", "page")}

HOSTILE = [
    "99999999999999999999", "-1", "0", "abc", "1e9", "", "%00", "\x00", "1.5", "２", "9" * 5000,
    "<script>alert(1)</script>", "../../etc/passwd", "'; DROP TABLE writer_story; --", "🦜" * 50, "null",
]
ROOT = Path(__file__).resolve().parents[2]
APP_DIRS = ("brands", "writer", "training", "mesu_web")
READS = re.compile(r"""request\.GET(?:\.get(?:list)?\(|\[)\s*["'](\w+)["']""")


def _fingerprint(*, untracked: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """One md5 per table of the apps' rows and the notifications' (permission_table's, one app more)."""
    tables = [
        m._meta.db_table
        for label in (*TRACKED_APPS, "notifications")
        for m in apps.get_app_config(label).get_models()
        if m._meta.db_table not in UNTRACKED_TABLES | untracked
    ]
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
        f"FROM {connection.ops.quote_name(t)} x"
        for t in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_every_query_parameter_read_is_fuzzed():
    read = set()
    for app in APP_DIRS:
        for path in (ROOT / app).rglob("*.py"):
            read |= set(READS.findall(path.read_text(encoding="utf-8")))
    fuzzed = {p for params in QUERY_PARAMS.values() for p in params}
    assert read, "no request.GET read found: the pattern is out of date"
    assert not read - fuzzed, f"query parameters read but not fuzzed: {sorted(read - fuzzed)}"


def test_list_pages_survive_hostile_query_strings(world, users):
    clients = clients_for({**users, "max": world.max})
    table = permission_table(world)
    problems: list[str] = []
    requests = 0
    for name, params in QUERY_PARAMS.items():
        cases = [(case, [r for r, outcome in case.get.items() if outcome not in DENIED]) for case in table[name]]
        assert any(allowed for _, allowed in cases), f"{name}: nobody may GET it, nothing to fuzz"
        for case, allowed in cases:  # a missing row's case: nobody sees it, nothing read from the query
            url = reverse(name, kwargs=case.kwargs)
            for role in allowed:
                with transaction.atomic():
                    before = _fingerprint()
                    for param in params:
                        for value in HOSTILE:
                            response = clients[role].get(url, {param: value})
                            if response.streaming:
                                b"".join(response.streaming_content)
                            requests += 1
                            if response.status_code >= 500:
                                problems.append(f"GET {url}?{param}={value[:30]!r} as {role}: {response.status_code}")
                    # every parameter hostile at once, one given twice
                    query = {p: ["1", value] for p in params for value in ("abc",)}
                    clients[role].get(url, query)
                    if _fingerprint() != before:
                        problems.append(f"GET {url} with hostile query strings as {role} changed the database")
                    transaction.set_rollback(True)
                cache.clear()
    assert not problems, "\n".join(problems)
    assert requests > 1000, requests


def test_the_partner_api_list_survives_hostile_query_strings(world, client):
    _, key = partners.token_create(partner=world.p1, name="fuzz", scopes=["stories:read"], rate_per_minute=6000)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    used = frozenset({"brands_partnertoken"})  # a call stamps its token's last use, by design
    for url, params in API_PARAMS.items():
        with transaction.atomic():
            before = _fingerprint(untracked=used)
            for param in params:
                for value in HOSTILE:
                    response = client.get(url, {param: value}, **headers)
                    assert response.status_code in (200, 422), (url, param, value[:30], response.status_code)
            assert _fingerprint(untracked=used) == before  # the audit log is left out (permission_table.UNTRACKED_TABLES)
            transaction.set_rollback(True)
