"""The passage tools' URLs in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way.

Only the story's author uses them. An option's tools follow the request's rules, as accepting it does:
who may not see the request gets 404, who may but is not the story's author (the reader who asked, staff)
403; the author is told on the page why a branded option or a reader's chapter takes no tools (400 on a
POST). A chapter's tools and a passage change's pages follow the story's: 403 to who may see the story
(a published one; staff see drafts too), 404 to who may not. Anonymous visitors go to the login page. A
refused request changes no row, a page read changes none, and every change needs the CSRF token.

`passage_permission_cases(world)` is the table's part for these URLs; permission_table.py takes it in,
with `make_passage_world(world)` from its build_world."""

from __future__ import annotations

from types import SimpleNamespace

from django.utils import timezone

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
from writer.models import PassageEdit

PASSAGE_URLS = (
    "writer:passage_option",
    "writer:passage_chapter",
    "writer:passage_detail",
    "writer:passage_status",
    "writer:passage_accept",
    "writer:passage_discard",
)
MISSING = 987654


def make_passage_world(world: SimpleNamespace) -> SimpleNamespace:
    """A finished change waiting for the author's decision: of alice's plain option (published story) and
    of chapter 1 of her draft."""

    def edit(target: dict, story, text: str, passage: str, result: str) -> PassageEdit:  # noqa: ANN001
        start = text.index(passage)
        return PassageEdit.objects.create(
            story=story, requested_by=story.owner, tool="rewrite", start=start, end=start + len(passage),
            original=passage, result=result, engine="vllm", model_name="smollm2", status="succeeded",
            finished_at=timezone.now(), **target,
        )

    chapter = world.draft.chapters.get(number=1)
    return SimpleNamespace(
        pub_edit=edit({"option": world.plain}, world.pub, world.plain.text, "the stall", "the quay"),
        draft_edit=edit({"chapter": chapter}, world.draft, chapter.text, "Pip was late again", "Pip ran in late"),
    )


def passage_permission_cases(w: SimpleNamespace) -> dict[str, list[Case]]:
    """{URL name: [Case, ...]} for the passage tools' URLs (permission_table.py's shapes)."""
    pub, draft = w.pub.slug, w.draft.slug
    p = w.passages
    on_option = {"tool": "rewrite", "passage": "the stall"}
    on_chapter = {"tool": "expand", "passage": "Pip was late again, as always."}
    # Who sees alice's request: alice and staff; rita's: rita too. The author gets the page (the tools, or
    # why there are none for this option: 200; a refused ask: 400).
    alice_request = logged_in(404, alice=200, root=403)
    rita_request = logged_in(404, alice=200, rita=403, root=403)

    def post(shape: dict[str, object], ok: object) -> dict[str, object]:
        return {**shape, "alice": ok}

    def edit_cases(get_ok: object, post_ok: object) -> list[Case]:
        def shape(ok: object, published: bool) -> dict[str, object]:
            return WRONG_METHOD if ok is None else owner_page(ok, published=published)

        return [
            Case("published story's option", {"pk": p.pub_edit.pk}, shape(get_ok, True), shape(post_ok, True)),
            Case("draft's chapter", {"pk": p.draft_edit.pk}, shape(get_ok, False), shape(post_ok, False)),
            Case("missing", {"pk": MISSING}, WRONG_METHOD if get_ok is None else logged_in(404),
                 WRONG_METHOD if post_ok is None else logged_in(404)),
        ]

    return {
        "writer:passage_option": [
            Case("alice's plain option", {"pk": w.plain.pk}, alice_request, post(alice_request, 302), on_option),
            Case("a branded option", {"pk": w.opt_a.pk}, alice_request, post(alice_request, 400), on_option),
            Case("rita's option", {"pk": w.rita_opt.pk}, rita_request, post(rita_request, 400), on_option),
            Case("missing option", {"pk": MISSING}, logged_in(404), logged_in(404), on_option),
        ],
        "writer:passage_chapter": [
            Case("published", {"slug": pub, "number": 1}, owner_page(200, published=True),
                 owner_page(302, published=True), on_chapter),
            Case("draft", {"slug": draft, "number": 1}, owner_page(200, published=False),
                 owner_page(302, published=False), on_chapter),
            Case("missing chapter", {"slug": pub, "number": 99}, owner_page(404, published=True),
                 owner_page(404, published=True), on_chapter),
        ],
        "writer:passage_detail": edit_cases(200, None),
        "writer:passage_status": edit_cases(286, None),  # finished: 286 tells htmx to stop polling
        "writer:passage_accept": edit_cases(None, 302),
        "writer:passage_discard": edit_cases(None, 302),
    }


def test_every_passage_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(PASSAGE_URLS) <= set(patterns)
    assert set(passage_permission_cases(world)) == set(PASSAGE_URLS)
    like = sorted(n for n in patterns if "passage" in n)
    assert like == sorted(PASSAGE_URLS), "a new passage URL needs its cases here"


def test_every_role_gets_the_expected_status_on_every_passage_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = passage_permission_cases(world)
    walk = walk_table(clients, table, PASSAGE_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_the_author_gets_a_post_through(world):
    for name, cases in passage_permission_cases(world).items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ROLES:
                if role != "alice":
                    assert case.post[role] in DENIED, (name, case.label, role)


def test_every_passage_change_needs_the_csrf_token(world, users):
    """Each POST that alice gets through (or is told no on the page), without the token: 403 and no row
    changed."""
    checked = posts_without_token_refused(passage_permission_cases(world), users["alice"], "alice")
    assert checked == 9  # three options, two chapters, and accept and discard of two changes
