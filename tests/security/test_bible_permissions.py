"""The story bible's URLs, every role, GET and POST, as test_url_permissions.py walks every URL (its
helpers and world): only the story's author may see or change a bible; readers, brand managers, other
authors and staff get 403 on a published story (they can see it exists) and 404 on a draft, as on every
author page; anonymous visitors go to the login page. A refused request changes no row, and every change
needs the CSRF token.

`bible_permission_table(world, bible_world)` is the table's part for these URLs; permission_table.py can
take it in (its walk then covers them too)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.security.permission_table import (
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    logged_in,
    owner_page,
    posts_without_token_refused,
    url_patterns,
    walk_table,
)
from writer.models import BibleProposalRun, StoryBibleEntry

BIBLE_PREFIX = "writer:bible"


def make_bible_world(world: SimpleNamespace) -> SimpleNamespace:
    """An accepted entry and a proposal in each of alice's stories, and a finished proposal run on the
    published one."""

    def entry(story, name: str, status: str) -> StoryBibleEntry:  # noqa: ANN001
        return StoryBibleEntry.objects.create(story=story, name=name, status=status, description=f"{name}.")

    BibleProposalRun.objects.create(
        story=world.pub, requested_by=world.pub.owner, engine="vllm", status="succeeded", chapters=[1, 2, 3]
    )
    return SimpleNamespace(
        pub_entry=entry(world.pub, "Lou", "accepted"),
        pub_proposal=entry(world.pub, "Pip", "proposed"),
        draft_entry=entry(world.draft, "Juno", "accepted"),
        draft_proposal=entry(world.draft, "Static", "proposed"),
    )


@pytest.fixture
def bible_world(world) -> SimpleNamespace:
    return world.bible  # build_world (permission_table.py) makes it with make_bible_world


def bible_permission_table(w: SimpleNamespace, b: SimpleNamespace) -> dict[str, list[Case]]:
    """{URL name: [Case, ...]} for every story bible URL (permission_table.py's shapes)."""
    pub, draft = w.pub.slug, w.draft.slug
    entry_form = {"kind": "place", "name": "Walked place", "aliases": "", "description": "x", "from_chapter": "1"}
    stories = (("published", pub, True, b.pub_entry, b.pub_proposal), ("draft", draft, False, b.draft_entry,
                                                                       b.draft_proposal))

    def shape(ok: object, published: bool) -> dict[str, object]:
        return WRONG_METHOD if ok is None else owner_page(ok, published=published)

    def story_level(get_ok: object, post_ok: object, data: dict | None = None) -> list[Case]:
        cases = [
            Case(label, {"slug": slug}, shape(get_ok, published), shape(post_ok, published), data or {})
            for label, slug, published, _, _ in stories
        ]
        missing = logged_in(404)
        cases.append(Case("missing story", {"slug": "no-such-story"}, WRONG_METHOD if get_ok is None else missing,
                          WRONG_METHOD if post_ok is None else missing, data or {}))
        return cases

    def entry_level(get_ok: object, post_ok: object, *, proposal: bool, data: dict | None = None) -> list[Case]:
        cases = [
            Case(label, {"slug": slug, "pk": (prop if proposal else entry).pk}, shape(get_ok, published),
                 shape(post_ok, published), data or {})
            for label, slug, published, entry, prop in stories
        ]
        # The draft's entry under the published story's address: not found, even for its author; the
        # others are refused at the story first (they can see it exists).
        crossed = owner_page(404, published=True)
        cases.append(Case("draft's entry via the published story", {"slug": pub, "pk": b.draft_entry.pk},
                          WRONG_METHOD if get_ok is None else crossed, WRONG_METHOD if post_ok is None else crossed,
                          data or {}))
        return cases

    return {
        "writer:bible": story_level(200, None),
        "writer:bible_entry_add": story_level(200, 302, entry_form),
        "writer:bible_propose": story_level(None, 302),
        # Finished (or no) proposal run: 286 tells htmx to stop polling.
        "writer:bible_proposals_status": story_level(286, None),
        "writer:bible_entry_edit": entry_level(200, 302, proposal=False, data=entry_form),
        "writer:bible_entry_delete": entry_level(None, 302, proposal=False),
        "writer:bible_entry_accept": entry_level(None, 302, proposal=True),
        "writer:bible_entry_reject": entry_level(None, 302, proposal=True),
    }


def test_every_bible_url_has_an_entry_in_the_table(world, bible_world):
    patterns = {name for name in url_patterns() if name.startswith(BIBLE_PREFIX)}
    table = bible_permission_table(world, bible_world)
    assert len(patterns) == 8
    assert patterns == set(table), f"missing: {sorted(patterns - set(table))}; stale: {sorted(set(table) - patterns)}"


def test_every_role_gets_the_expected_status_on_every_bible_url(world, users, bible_world):
    clients = clients_for({**users, "max": world.max})
    table = bible_permission_table(world, bible_world)
    walk = walk_table(clients, table, sorted(table))
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_the_owner_gets_through_only_where_the_table_says_and_anonymous_visitors_log_in(world, users, bible_world):
    # The table's own sanity: alice is the only role any POST of it lets through, and anon always logs in.
    table = bible_permission_table(world, bible_world)
    for name, cases in table.items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ROLES:
                if role != "alice":
                    assert case.post[role] in DENIED, (name, case.label, role)


def test_every_bible_change_needs_the_csrf_token(world, users, bible_world):
    """Each POST that alice gets through, without the token: 403 and no row changed; with it: through."""
    checked = posts_without_token_refused(bible_permission_table(world, bible_world), users["alice"], "alice")
    assert checked == 12  # add, propose, edit, delete, accept, reject: in each of the two stories
