"""The exports' URLs in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way. And what each role's download holds:
a reader's copy has only what that reader was served; brand managers get nothing.

`export_permission_cases(world)` is the exports' part of the permission table, in its shape
({URL name: [Case, ...]}), so that permission_table.py can take it in as it is.
"""

from __future__ import annotations

from django.urls import reverse

from tests.security.permission_table import (
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    owner_page,
    url_patterns,
    walk_table,
)
from writer.exports import FORMATS

EXPORT_URLS = ("writer:story_export", "writer:copy_export")


def export_permission_cases(w) -> dict[str, list[Case]]:  # noqa: ANN001
    """{URL name: [Case, ...]} for the export URLs (GET only: POST is 405, anonymous to the login page)."""
    pub, draft = w.pub.slug, w.draft.slug
    # A reader's copy: anyone who may read the story and is a reader or an author (staff too); brand
    # managers get 403 where they may see the story exists, 404 where they may not.
    copy_published = logged_in(200, mia=403, max=403)
    copy_draft = logged_in(404, alice=200, root=200)
    story_cases, copy_cases = [], []
    for fmt in FORMATS:
        story_cases += [
            Case(f"{fmt}, published", {"slug": pub, "fmt": fmt}, owner_page(200, published=True), WRONG_METHOD),
            Case(f"{fmt}, draft", {"slug": draft, "fmt": fmt}, owner_page(200, published=False), WRONG_METHOD),
        ]
        copy_cases += [
            Case(f"{fmt}, published", {"slug": pub, "fmt": fmt}, copy_published, WRONG_METHOD),
            Case(f"{fmt}, draft", {"slug": draft, "fmt": fmt}, copy_draft, WRONG_METHOD),
        ]
    story_cases += [
        Case("unknown format", {"slug": pub, "fmt": "pdf"}, owner_page(404, published=True), WRONG_METHOD),
        Case("missing story", {"slug": "no-such-story", "fmt": "epub"}, logged_in(404), WRONG_METHOD),
    ]
    copy_cases += [
        Case("unknown format", {"slug": pub, "fmt": "pdf"}, logged_in(404, mia=403, max=403), WRONG_METHOD),
        Case("unknown format, draft", {"slug": draft, "fmt": "pdf"}, logged_in(404, alice=404), WRONG_METHOD),
        Case("missing story", {"slug": "no-such-story", "fmt": "md"}, logged_in(404), WRONG_METHOD),
    ]
    return {"writer:story_export": story_cases, "writer:copy_export": copy_cases}


def test_the_export_urls_exist_with_these_names(world):
    patterns = url_patterns()
    assert set(EXPORT_URLS) <= set(patterns)
    assert set(export_permission_cases(world)) == set(EXPORT_URLS)
    exports_like = sorted(name for name in patterns if "export" in name and name.startswith("writer:"))
    assert exports_like == sorted(EXPORT_URLS), "a new writer export URL needs its cases here"


def test_every_role_gets_the_expected_status_on_the_export_urls(world, users):
    """As test_url_permissions.py's walk; and a GET changes nothing, whoever makes it and whatever it gets."""
    clients = clients_for({**users, "max": world.max})
    table = export_permission_cases(world)
    walk = walk_table(clients, table, EXPORT_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def _body(client, name: str, slug: str) -> str:  # noqa: ANN001
    response = client.get(reverse(name, args=[slug, "md"]))
    assert response.status_code == 200, (name, slug, response.status_code)
    return b"".join(response.streaming_content).decode()  # read whole, the test client closes it


def test_each_download_holds_only_what_its_user_may_see(world, users):
    """rita's copy has her chapter; nobody's has another reader's, or an option waiting for a brand's
    review, or the author's options that never became chapters; the author's export has the chapters only."""
    clients = clients_for({**users, "max": world.max})
    pub = world.pub.slug
    not_chapters = [world.plain.text, world.opt_a.text, world.opt_b.text]  # alice's options, never accepted
    chapter_text = world.pub.chapters.get(number=1).text
    copies = {
        role: _body(clients[role], "writer:copy_export", pub) for role in ("alice", "bob", "rita", "ross", "root")
    }
    for role, body in copies.items():
        assert chapter_text in body, role
        assert (world.rita_opt.text in body) == (role == "rita"), role
        assert not any(text in body for text in not_chapters), role
    authors = _body(clients["alice"], "writer:story_export", pub)
    assert chapter_text in authors
    assert world.rita_opt.text not in authors and not any(text in authors for text in not_chapters)


def test_brand_managers_get_no_export(world, users):
    clients = clients_for({**users, "max": world.max})
    for role in ("mia", "max"):
        for name in EXPORT_URLS:
            for fmt in FORMATS:
                response = clients[role].get(reverse(name, args=[world.pub.slug, fmt]))
                assert response.status_code == 403, (role, name, fmt)
                assert not response.get("Content-Disposition"), (role, name, fmt)
