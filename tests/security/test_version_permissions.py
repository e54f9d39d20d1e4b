"""Versions, swipes and branches in the security matrix: every role, GET and POST, on the world of
test_url_permissions.py (permission_table.py), checked the same way.

Options: who may see the request (who asked, the story's author, staff) sees an option's versions and
compares them; only who asked writes an option again or restores a version (the story's author on a
reader's request, and staff, get 403); everyone else, brand managers included, 404 (nobody learns it
exists); anonymous visitors go to the login page. Chapters: only the story's author, as every author
page (403 on a published story, 404 on a draft). A refused request changes no row, a page read none at
all, and every change needs the CSRF token.

`version_permission_cases(world)` is the table's part for these URLs; permission_table.py takes it in."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

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
from tests.security.test_live_permissions import LIVE_URLS
from writer.models import OptionSwipe, Story

VERSION_URLS = (
    "writer:option_versions",
    "writer:option_version_compare",
    "writer:option_version_restore",
    "writer:option_swipe",
    "writer:option_swipe_status",
    "writer:chapter_versions",
    "writer:chapter_version_compare",
    "writer:chapter_version_restore",
    "writer:chapter_branch",
)


def version_permission_cases(w) -> dict[str, list[Case]]:  # noqa: ANN001
    """{URL name: [Case, ...]} for the versions', swipes' and branches' URLs."""
    pub, draft = w.pub.slug, w.draft.slug
    missing = 987654

    def seen(ok: object, *, rita: bool = False) -> dict[str, object]:
        """A page of an option: alice (the story's author) and staff see every option; rita her own."""
        return logged_in(404, alice=ok, root=ok, **({"rita": ok} if rita else {}))

    def changed_by(owner: str, ok: object) -> dict[str, object]:
        """A change of an option: who asked only; the others who see it 403; everyone else 404."""
        codes = {"alice": 403, "root": 403, owner: ok}
        return logged_in(404, **codes)

    def option_cases(get_ok: object, post_ok: object, **extra: object) -> list[Case]:
        get = (lambda rita: WRONG_METHOD) if get_ok is None else (lambda rita: seen(get_ok, rita=rita))
        post = (lambda owner: WRONG_METHOD) if post_ok is None else (lambda owner: changed_by(owner, post_ok))
        return [
            Case("alice's plain option", {"pk": w.plain.pk, **extra}, get(False), post("alice")),
            # A placement waiting for brand A: its manager reviews it on the review page, never here.
            Case("alice's option waiting for brand A", {"pk": w.opt_a.pk, **extra}, get(False), post("alice")),
            Case("rita's option", {"pk": w.rita_opt.pk, **extra}, get(True), post("rita")),
            Case("missing option", {"pk": missing, **extra},
                 WRONG_METHOD if get_ok is None else logged_in(404),
                 WRONG_METHOD if post_ok is None else logged_in(404)),
        ]

    def chapter_cases(get_ok: object, post_ok: object, number: int = 1, **extra: object) -> list[Case]:
        def shape(ok: object, published: bool) -> dict[str, object]:
            return WRONG_METHOD if ok is None else owner_page(ok, published=published)

        return [
            Case(label, {"slug": slug, "number": number, **extra}, shape(get_ok, published), shape(post_ok, published))
            for label, slug, published in (("published", pub, True), ("draft", draft, False))
        ]

    # The world's options and chapters have one version each (their text, never stored as a row): a
    # restore of it, or a comparison, is answered with a message (302) for who may ask.
    return {
        "writer:option_versions": option_cases(200, None),
        "writer:option_version_compare": option_cases(302, None),
        "writer:option_version_restore": [
            *option_cases(None, 302, number=1),
            # A version no option of its own has (another option's number): not found, even for alice.
            Case("a version it does not have", {"pk": w.plain.pk, "number": 2}, WRONG_METHOD,
                 logged_in(404, alice=404, root=403)),
        ],
        "writer:option_swipe": option_cases(None, 302),
        # No swipe runs: 286 tells htmx to stop polling.
        "writer:option_swipe_status": option_cases(286, None),
        "writer:chapter_versions": [
            *chapter_cases(200, None),
            Case("missing chapter", {"slug": pub, "number": 99}, owner_page(404, published=True), WRONG_METHOD),
        ],
        "writer:chapter_version_compare": chapter_cases(302, None),
        "writer:chapter_version_restore": [
            *chapter_cases(None, 302, version=1),
            Case("missing version", {"slug": pub, "number": 1, "version": 5}, WRONG_METHOD,
                 owner_page(404, published=True)),
        ],
        # A chapter that is not there: alice is told so (302 with the message), nothing is made.
        "writer:chapter_branch": [
            *chapter_cases(None, 302),
            *[Case(f"missing chapter, {c.label}", c.kwargs | {"number": 99}, c.get, c.post)
              for c in chapter_cases(None, 302)],
        ],
    }


def test_every_version_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(VERSION_URLS) <= set(patterns)
    assert set(version_permission_cases(world)) == set(VERSION_URLS)
    # The swipe's live text (writer:option_swipe_live) has its cases with the live text's URLs.
    like = sorted(n for n in patterns if ("version" in n or "swipe" in n or "branch" in n) and n not in LIVE_URLS)
    assert like == sorted(VERSION_URLS), "a new versions, swipes or branches URL needs its cases here"


def test_every_role_gets_the_expected_status_on_every_version_url(world, users):
    clients = clients_for({**users, "max": world.max})
    table = version_permission_cases(world)
    walk = walk_table(clients, table, VERSION_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_only_who_asked_or_the_story_s_author_gets_a_post_through(world):
    for name, cases in version_permission_cases(world).items():
        for case in cases:
            assert case.get["anon"] == LOGIN and case.post["anon"] == LOGIN, name
            for role in ROLES:
                if role not in ("alice", "rita"):
                    assert case.post[role] in DENIED, (name, case.label, role)
                if role in ("mia", "max"):  # brand managers never
                    assert case.get[role] in DENIED, (name, case.label, role)


def test_every_change_needs_the_csrf_token(world, users):
    """Each POST that alice or rita gets through, without the token: 403 and no row changed."""
    table = version_permission_cases(world)
    checked = sum(
        posts_without_token_refused(table, users[role], role, with_data=False) for role in ("alice", "rita")
    )
    assert checked == 2 * (2 + 1) + 2 + 4  # restore and swipe: alice 2, rita 1 each; chapters: 2 restores, 4 branches
    # With the token, a swipe is asked for and a branch made.
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["alice"])
    client.get(reverse("writer:home"))
    token = client.cookies["csrftoken"].value
    assert client.post(reverse("writer:option_swipe", args=[world.plain.pk]), {"csrfmiddlewaretoken": token}).status_code == 302
    assert OptionSwipe.objects.filter(option=world.plain, requested_by=users["alice"]).count() == 1
    client.post(reverse("writer:chapter_branch", args=[world.pub.slug, 2]), {"csrfmiddlewaretoken": token})
    assert Story.objects.get(branch_of=world.pub).chapters.count() == 2
