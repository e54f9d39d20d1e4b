"""The permission table of every URL (who gets what, per role and method), the world it is about,
and the helpers the URL walk and the CSRF test share. See test_url_permissions.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from types import SimpleNamespace

from django.apps import apps
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from brands import services as brand_services
from brands.placements import find_mentions, mention_spans
from mesu_web.notifications.services import notification_create
from tests.factories import UserFactory, approved_brand, story_with_chapters
from training.models import EvaluationRun, TrainingJob, WriterAdapter
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

ROLES = ("anon", "alice", "bob", "rita", "ross", "mia", "max", "root")
LOGIN = "login"
ADMIN_LOGIN = "admin-login"
DENIED = {401, 403, 404, 405, LOGIN, ADMIN_LOGIN}  # 401: the partner API without its token
SKIPPED_PREFIXES = ("admin/",)  # Django's admin site


def expect(default: object = None, **codes: object) -> dict[str, object]:
    """Role -> outcome: `default` for every role not named."""
    table = {role: default for role in ROLES}
    table.update(codes)
    missing = [role for role, code in table.items() if code is None]
    assert not missing, f"no outcome for {missing}"
    return table


def logged_in(code: object, *, anon: object = LOGIN, **codes: object) -> dict[str, object]:
    """Anonymous visitors go to the login page; every logged-in role gets `code` unless named."""
    return expect(code, anon=anon, **codes)


# Shapes that repeat -------------------------------------------------------------------------------


def owner_page(ok: object, *, published: bool) -> dict[str, object]:
    """A page only alice (the story's owner) may use: others get 403 on a published story (they can
    see it exists) and 404 on a draft (they must not learn it exists); staff see drafts, so 403."""
    others = 403 if published else 404
    return logged_in(others, alice=ok, root=403)


def reader_of(story_published: bool, ok: object) -> dict[str, object]:
    """A story page anyone may read when published; a draft only its owner and staff."""
    if story_published:
        return expect(ok)
    return expect(404, alice=ok, root=ok)


def staff_only(ok: object) -> dict[str, object]:
    return expect(ADMIN_LOGIN, root=ok)


def manager_page(ok: object, *, manager: str) -> dict[str, object]:
    """A brand page: its manager and staff; the other manager 404 (no hint the brand exists);
    authors and readers 403 (not a brand manager at all)."""
    other = "max" if manager == "mia" else "mia"
    return logged_in(403, **{manager: ok, other: 404, "root": ok})


WRONG_METHOD = logged_in(405)  # e.g. POST to a GET-only view (anonymous: to the login page first)


@dataclass
class Case:
    """One concrete URL of a pattern, what GET and POST get per role, and the POST's form data."""

    label: str
    kwargs: dict[str, object]
    get: dict[str, object]
    post: dict[str, object]
    data: dict[str, object] = field(default_factory=dict)


def build_world(users: dict, settings, tmp_path) -> SimpleNamespace:  # noqa: ANN001
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    settings.TRAINING_DATASETS_DIR = tmp_path / "datasets"
    settings.TRAINING_EXPORTS_DIR = tmp_path / "exports"
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens: no request reaches a real server
    settings.WRITER_MAX_RETRIES = 0
    alice, rita = users["alice"], users["rita"]
    max_user = UserFactory(username="max", roles=["brand_manager"])
    pub = story_with_chapters(owner=alice, chapters=3, slug="walk-published", is_published=True)
    draft = story_with_chapters(owner=alice, chapters=2, slug="walk-draft", is_published=False)
    brand_a = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    asset_a = brand_services.asset_create(brand=brand_a, kind="product", name="Board", terms="Tidewave")
    brand_b = approved_brand(name="Ledger Bank", managers=[max_user], description="A bank.")
    asset_b = brand_services.asset_create(brand=brand_b, kind="mascot", name="Penny", terms="Penny")
    pending = brand_services.brand_create(name="Walked pending", managers=[max_user])  # issue 18: for staff

    def request(user, kind):  # noqa: ANN001, ANN202
        return GenerationRequest.objects.create(
            story=pub, requested_by=user, kind=kind, engine="vllm", max_new_tokens=24, next_number=4,
            n=3, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
        )

    def option(gen, index, text, asset=None):  # noqa: ANN001, ANN202
        mentions = mention_spans(find_mentions(text, asset.terms)) if asset else []
        return GenerationOption.objects.create(
            request=gen, index=index, text=text, format_ok=True, mentions=mentions,
            brand=asset.brand if asset else None, asset=asset, placement_found=bool(mentions),
            review_status=ReviewStatus.PENDING if mentions else ReviewStatus.NONE,
        )

    gen_alice = request(alice, GenerationRequest.Kind.AUTHOR)
    gen_rita = request(rita, GenerationRequest.Kind.READER)
    book_dir = settings.TRAINING_BOOKS_DIR
    book_dir.mkdir(parents=True)
    (book_dir / "walk-book.md").write_text("# Walk\n\n## Chapter 1\n\nText.\n", encoding="utf-8")
    job = TrainingJob.objects.create(
        name="walk", dataset_dir=str(tmp_path), out_dir=str(tmp_path / "out"), config={}, max_steps=2
    )
    adapter = WriterAdapter.objects.create(name="walk-lora", base_model="smollm2", path=str(tmp_path / "nope"))
    evaluation = EvaluationRun.objects.create(
        target_name="base", dataset_dir=str(tmp_path), engine="vllm", max_new_tokens=16
    )
    # Imported here: those modules import this one (a cycle at the top).
    from tests.security.test_api_permissions import make_partner_world
    from tests.security.test_bible_permissions import make_bible_world
    from tests.security.test_campaign_permissions import make_campaign_world
    from tests.security.test_measurement_permissions import make_measurement_world
    from tests.security.test_passage_permissions import make_passage_world

    world = SimpleNamespace(
        pub=pub, draft=draft, a=brand_a, b=brand_b, asset_a=asset_a, asset_b=asset_b, pending=pending,
        gen_alice=gen_alice, gen_rita=gen_rita,
        plain=option(gen_alice, 0, "Lou opened the stall."),
        opt_a=option(gen_alice, 1, "Lou waxed her Tidewave board.", asset_a),
        opt_b=option(gen_alice, 2, "Pip fed Penny a coin.", asset_b),
        rita_opt=option(gen_rita, 0, "A sad but gentle chapter."),
        job=job, adapter=adapter, evaluation=evaluation, book="walk-book", max=max_user,
        notification=notification_create(user_id=alice.pk, message="Walked.", url="/"),  # issue 18
    )
    world.bible = make_bible_world(world)
    world.passages = make_passage_world(world)
    world.campaigns = make_campaign_world(world)
    world.measurement = make_measurement_world(world)
    make_partner_world(world)
    return world


def permission_table(w: SimpleNamespace) -> dict[str, list[Case]]:
    """{URL name: [Case, ...]}; None for a method means the view refuses it (405 once logged in)."""
    pub, draft = w.pub.slug, w.draft.slug
    chapter_form = {"title": "Walked", "text": "A walked chapter."}
    story_form = {"title": "Walked story", "summary": "x"}
    brand_form = {"name": "Walked brand", "max_placements_per_chapter": 1, "is_active": "on"}
    asset_form = {"kind": "product", "name": "Walked asset", "terms": "Walkie"}

    def either(ok: object, shape) -> dict[str, object]:  # noqa: ANN001
        return WRONG_METHOD if ok is None else shape(ok)

    def story_cases(get_ok: object, post_ok: object, data: dict | None = None, **extra: object) -> list[Case]:
        """An owner-only page of the published story and of the draft."""
        return [
            Case(label, {"slug": slug, **extra},
                 either(get_ok, lambda ok, p=published: owner_page(ok, published=p)),
                 either(post_ok, lambda ok, p=published: owner_page(ok, published=p)), data or {})
            for label, slug, published in (("published", pub, True), ("draft", draft, False))
        ]

    def brand_cases(get_ok: object, post_ok: object, data: dict | None = None) -> list[Case]:
        """A page of brand A (mia's) and of brand B (max's)."""
        return [
            Case(label, {"slug": slug},
                 either(get_ok, lambda ok, m=manager: manager_page(ok, manager=m)),
                 either(post_ok, lambda ok, m=manager: manager_page(ok, manager=m)), data or {})
            for label, slug, manager in (("brand A", w.a.slug, "mia"), ("brand B", w.b.slug, "max"))
        ]

    def review_cases(get_ok: object, post_ok: object, data: dict | None = None) -> list[Case]:
        """An option of brand A (mia's), of brand B (max's), and one with no brand (nobody's)."""
        nobody = logged_in(403, mia=404, max=404, root=404)
        return [
            Case("brand A option", {"pk": w.opt_a.pk}, either(get_ok, lambda ok: manager_page(ok, manager="mia")),
                 either(post_ok, lambda ok: manager_page(ok, manager="mia")), data or {}),
            Case("brand B option", {"pk": w.opt_b.pk}, either(get_ok, lambda ok: manager_page(ok, manager="max")),
                 either(post_ok, lambda ok: manager_page(ok, manager="max")), data or {}),
            Case("unbranded option", {"pk": w.plain.pk}, either(get_ok, lambda ok: nobody),
                 either(post_ok, lambda ok: nobody), data or {}),
        ]

    # Who may see a request: who asked, the story's owner, staff. Nobody else learns it exists.
    alice_request = logged_in(404, alice=200, root=200)
    rita_request = logged_in(404, alice=200, rita=200, root=200)

    # Imported here: those modules import this one (a cycle at the top).
    from tests.security.test_api_permissions import api_session_cases, partner_permission_cases
    from tests.security.test_bible_permissions import bible_permission_table
    from tests.security.test_campaign_permissions import campaign_permission_cases
    from tests.security.test_export_permissions import export_permission_cases
    from tests.security.test_live_permissions import live_permission_cases
    from tests.security.test_measurement_permissions import measurement_permission_cases
    from tests.security.test_passage_permissions import passage_permission_cases
    from tests.security.test_preference_permissions import preference_permission_cases
    from tests.security.test_review_permissions import review_permission_cases
    from tests.security.test_suitability_permissions import suitability_permission_cases
    from tests.security.test_version_permissions import version_permission_cases

    return {
        # --- Auth (django.contrib.auth.urls and the rate-limited login) ---------------------------
        "login": [Case("", {}, expect(200), expect(200), {"username": "nobody", "password": "wrong"})],
        "logout": [Case("", {}, expect(405), expect(302))],
        "password_change": [Case("", {}, logged_in(200), logged_in(200))],
        "password_change_done": [Case("", {}, logged_in(200), logged_in(405))],
        "password_reset": [Case("", {}, expect(200), expect(302), {"email": "nobody@example.com"})],
        "password_reset_done": [Case("", {}, expect(200), expect(405))],
        "password_reset_confirm": [
            Case("bad link", {"uidb64": "MQ", "token": "bad-token"}, expect(200), expect(200))
        ],
        "password_reset_complete": [Case("", {}, expect(200), expect(405))],
        "healthz": [Case("", {}, expect(200), expect(405))],
        # --- writer ----------------------------------------------------------------------------------
        "writer:home": [Case("", {}, expect(200), expect(405))],
        "writer:signup": [Case("", {}, expect(302, anon=200), expect(302, anon=200))],
        "writer:story_create": [
            Case("", {}, logged_in(403, alice=200, bob=200), logged_in(403, alice=302, bob=302), story_form)
        ],
        "writer:book_import": [Case("no file", {}, logged_in(403, alice=200, bob=200),
                                    logged_in(403, alice=200, bob=200), {"title": "Walked book"})],
        "writer:story_detail": [
            Case("published", {"slug": pub}, reader_of(True, 200), expect(405)),
            Case("draft", {"slug": draft}, reader_of(False, 200), expect(405)),
            Case("missing", {"slug": "no-such-story"}, expect(404), expect(405)),
        ],
        "writer:story_edit": story_cases(200, 302, story_form),
        "writer:story_publish": story_cases(None, 302, {"publish": "1"}),
        "writer:generate": story_cases(None, 302, {"n": "1"}),
        "writer:personalise": [
            # Any logged-in user may ask for their own chapter of a published story (the owner too).
            Case("published", {"slug": pub}, logged_in(405), logged_in(302), {"preference": "a bit sad"}),
            # A draft: others must not learn it exists; staff see it and are told it is not published.
            Case("draft", {"slug": draft}, logged_in(405), logged_in(404, alice=302, root=302),
                 {"preference": "a bit sad"}),
        ],
        "writer:chapter_add": story_cases(200, 302, chapter_form),
        "writer:chapter_detail": [
            Case("published", {"slug": pub, "number": 1}, reader_of(True, 200), expect(405)),
            Case("draft", {"slug": draft, "number": 1}, reader_of(False, 200), expect(405)),
            Case("missing chapter", {"slug": pub, "number": 99}, expect(404), expect(405)),
        ],
        "writer:chapter_edit": story_cases(200, 302, chapter_form, number=1),
        "writer:chapter_move": story_cases(None, 302, {"direction": "down"}, number=1),
        "writer:chapter_delete": story_cases(None, 302, number=1),
        "writer:request_detail": [
            Case("alice's", {"pk": w.gen_alice.pk}, alice_request, WRONG_METHOD),
            Case("rita's", {"pk": w.gen_rita.pk}, rita_request, WRONG_METHOD),
        ],
        "writer:request_progress": [  # finished requests: 286 tells htmx to stop polling
            Case("alice's", {"pk": w.gen_alice.pk}, logged_in(404, alice=286, root=286), WRONG_METHOD),
            Case("rita's", {"pk": w.gen_rita.pk}, logged_in(404, alice=286, rita=286, root=286), WRONG_METHOD),
        ],
        "writer:request_retry": [  # those who see it are told only a failed request can be retried
            Case("alice's", {"pk": w.gen_alice.pk}, WRONG_METHOD, logged_in(404, alice=302, root=302)),
            Case("rita's", {"pk": w.gen_rita.pk}, WRONG_METHOD, logged_in(404, alice=302, rita=302, root=302)),
        ],
        "writer:option_accept": [
            # Only the story's owner accepts; others who may see the request get 403, the rest 404.
            Case("alice's option", {"pk": w.plain.pk}, WRONG_METHOD, logged_in(404, alice=302, root=403),
                 {"text": "Accepted."}),
            # A reader's chapter never joins the story: the owner is told so (302 with a message).
            Case("rita's option", {"pk": w.rita_opt.pk}, WRONG_METHOD,
                 logged_in(404, alice=302, rita=403, root=403), {"text": "Accepted."}),
        ],
        **export_permission_cases(w),  # writer:story_export, writer:copy_export
        **bible_permission_table(w, w.bible),  # writer:bible*
        **preference_permission_cases(w),  # writer:request_ratings, option_rate, option_prefer, preferences_download
        **version_permission_cases(w),  # writer:option_version*, option_swipe*, chapter_version*, chapter_branch
        **live_permission_cases(w),  # writer:request_live, option_swipe_live
        **passage_permission_cases(w),  # writer:passage_* (the passage tools)
        # Issue 17: campaigns, suitability, disclosure and measurement, the review workflow, partners, the API.
        **campaign_permission_cases(w),
        **suitability_permission_cases(w),
        **measurement_permission_cases(w),
        **review_permission_cases(w),
        **partner_permission_cases(w),
        **api_session_cases(),
        "notifications:list": [Case("", {}, logged_in(200), WRONG_METHOD)],
        # Issue 18: a GET of the list marks nothing read; marking read is a POST, of the owner's rows only.
        "notifications:read_all": [Case("", {}, WRONG_METHOD, logged_in(302))],
        "notifications:read": [
            Case("alice's", {"pk": w.notification.pk}, WRONG_METHOD, logged_in(404, alice=302)),
            Case("missing", {"pk": 10**9}, WRONG_METHOD, logged_in(404)),
        ],
        # --- brands ----------------------------------------------------------------------------------
        "brands:brand_list": [Case("", {}, logged_in(403, mia=200, max=200, root=200), WRONG_METHOD)],
        "brands:brand_create": [
            Case("", {}, logged_in(403, mia=200, max=200, root=200),
                 logged_in(403, mia=302, max=302, root=302), brand_form)
        ],
        "brands:review_queue": [Case("", {}, logged_in(403, mia=200, max=200, root=200), WRONG_METHOD)],
        "brands:review_detail": review_cases(200, None),
        "brands:option_approve": review_cases(None, 302),
        "brands:option_reject": review_cases(None, 302, {"reason": "Not for us."}),
        "brands:story_settings": story_cases(200, 302, {"opt_in": "on"}),
        "brands:sponsorship": [Case("", {}, logged_in(200), logged_in(302), {"enabled": "0"})],
        "brands:brand_detail": [
            *brand_cases(200, None),
            Case("missing", {"slug": "no-such-brand"}, logged_in(403, mia=404, max=404, root=404), WRONG_METHOD),
        ],
        "brands:brand_edit": brand_cases(200, 302, brand_form),
        "brands:brand_dashboard": brand_cases(200, None),
        "brands:asset_create": brand_cases(None, 302, asset_form),
        "brands:asset_edit": [
            Case("A's asset", {"slug": w.a.slug, "pk": w.asset_a.pk}, manager_page(200, manager="mia"),
                 manager_page(302, manager="mia"), asset_form),
            Case("B's asset", {"slug": w.b.slug, "pk": w.asset_b.pk}, manager_page(200, manager="max"),
                 manager_page(302, manager="max"), asset_form),
            # B's asset under A's address: nobody, not even staff, reaches it that way.
            Case("B's asset via A", {"slug": w.a.slug, "pk": w.asset_b.pk},
                 logged_in(403, mia=404, max=404, root=404), logged_in(403, mia=404, max=404, root=404),
                 asset_form),
        ],
        "brands:asset_delete": [
            Case("A's asset", {"slug": w.a.slug, "pk": w.asset_a.pk}, WRONG_METHOD, manager_page(302, manager="mia")),
            Case("B's asset", {"slug": w.b.slug, "pk": w.asset_b.pk}, WRONG_METHOD, manager_page(302, manager="max")),
            Case("B's asset via A", {"slug": w.a.slug, "pk": w.asset_b.pk}, WRONG_METHOD,
                 logged_in(403, mia=404, max=404, root=404)),
        ],
        # Issue 18: staff approve new brands (staff only, as training: everyone else to the admin's login).
        "brands:brand_approvals": [Case("", {}, staff_only(200), staff_only(405))],
        "brands:brand_approve": [
            Case("pending", {"pk": w.pending.pk}, staff_only(405), staff_only(302), {"note": "Fine."}),
            Case("missing", {"pk": 10**9}, staff_only(405), staff_only(404), {"note": "Fine."}),
        ],
        "brands:brand_reject": [
            Case("pending", {"pk": w.pending.pk}, staff_only(405), staff_only(302), {"reason": "Not a brand."}),
            Case("missing", {"pk": 10**9}, staff_only(405), staff_only(404), {"reason": "Not a brand."}),
        ],
        # --- training (staff only: everyone else is sent to the admin's login) ---------------------------
        "training:job_list": [Case("", {}, staff_only(200), staff_only(200))],  # POST: form errors
        "training:job_detail": [Case("", {"pk": w.job.pk}, staff_only(200), staff_only(405))],
        "training:job_progress": [Case("", {"pk": w.job.pk}, staff_only(200), staff_only(405))],
        "training:job_cancel": [Case("", {"pk": w.job.pk}, staff_only(405), staff_only(302))],
        "training:adapter_list": [Case("", {}, staff_only(200), staff_only(200))],
        "training:adapter_activate": [Case("", {"pk": w.adapter.pk}, staff_only(405), staff_only(302))],
        "training:adapter_load": [Case("", {"pk": w.adapter.pk}, staff_only(405), staff_only(302))],
        "training:adapter_deactivate": [Case("", {}, staff_only(405), staff_only(302))],
        "training:adapter_export": [Case("", {"pk": w.adapter.pk}, staff_only(405), staff_only(302))],
        "training:leaderboard": [Case("", {}, staff_only(200), staff_only(200))],
        "training:evaluation_detail": [Case("", {"pk": w.evaluation.pk}, staff_only(200), staff_only(405))],
        "training:evaluation_progress": [Case("", {"pk": w.evaluation.pk}, staff_only(200), staff_only(405))],
        "training:book_list": [Case("", {}, staff_only(200), staff_only(200))],  # POST without a file
        "training:book_delete": [Case("", {"slug": w.book}, staff_only(405), staff_only(302))],
        "training:dataset_build": [Case("", {}, staff_only(405), staff_only(400))],  # POST: form errors
        # Issue 18: generation quotas (writer/quota_views.py), staff only.
        "writer:quota_list": [Case("", {}, staff_only(200), staff_only(405))],
        "writer:quota_set": [
            Case("", {}, staff_only(405), staff_only(302), {"username": "rita", "per_hour": "5", "note": "walked"})
        ],
    }


# --- The resolver's patterns -----------------------------------------------------------------------


def url_patterns() -> dict[str, set[str]]:
    """Every named pattern outside the admin: {qualified name: {route, ...}}; unnamed ones as '?route'."""
    found: dict[str, set[str]] = {}

    def walk(patterns, prefix: str, namespace: str) -> None:  # noqa: ANN001
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(SKIPPED_PREFIXES):
                continue
            if isinstance(pattern, URLResolver):
                ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern.url_patterns, route, ns)
            elif isinstance(pattern, URLPattern):
                name = f"{namespace}{pattern.name}" if pattern.name else f"?{route}"
                found.setdefault(name, set()).add(route)

    walk(get_resolver().url_patterns, "", "")
    return found


# --- The walk ---------------------------------------------------------------------------------------

TRACKED_APPS = ("auth", "writer", "brands", "training")


UNTRACKED_TABLES = {"brands_apiauditentry"}


def db_fingerprint() -> list[tuple[str, str]]:
    """One md5 per table of the apps' rows (one query): a refused request must not change any."""
    # The API's audit log is left out: every call is audited by design, refused ones included.
    tables = [
        m._meta.db_table
        for label in TRACKED_APPS
        for m in apps.get_app_config(label).get_models()
        if m._meta.db_table not in UNTRACKED_TABLES
    ]
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {connection.ops.quote_name(t)} x"
        for t in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def posts_without_token_refused(table: dict[str, list[Case]], user, role: str, *, with_data: bool = True) -> int:  # noqa: ANN001
    """Every POST of `table` that `role` (logged in as `user`) gets through, sent without the CSRF token:
    403 and no row changed. The number of POSTs checked."""
    bare = Client(enforce_csrf_checks=True)
    bare.force_login(user)
    checked = 0
    for name, cases in sorted(table.items()):
        for case in cases:
            if case.post[role] in DENIED:
                continue
            url = reverse(name, kwargs=case.kwargs)
            with transaction.atomic():
                before = db_fingerprint()
                assert bare.post(url, case.data if with_data else None).status_code == 403, url
                assert db_fingerprint() == before, url
                transaction.set_rollback(True)
            checked += 1
    return checked


def outcome_of(response) -> object:  # noqa: ANN001
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith(reverse("login") + "?"):
            return LOGIN
        if location.startswith(reverse("admin:login") + "?"):
            return ADMIN_LOGIN
    return response.status_code


def clients_for(users: dict) -> dict[str, Client]:
    clients = {"anon": Client()}
    for role in ROLES[1:]:
        clients[role] = Client()
        clients[role].force_login(users[role])
    return clients




@dataclass
class Walk:
    """What `walk_table` saw: the requests whose outcome was not the table's, and those that changed the
    database where they must not."""

    mismatches: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    requests: int = 0


def walk_table(
    clients: dict[str, Client], table: dict[str, list[Case]], names: Iterable[str], *, gets_write_nothing: bool = False
) -> Walk:
    """Every case of `names` in `table`, GET and POST, as every role, each in a rolled-back transaction
    with the client's cookies and the cache put back after it (a logout, a login or a failed login's
    counter must not carry over). A refused request must leave the database as it was, and with
    `gets_write_nothing` every GET too. A download is read whole (the test client closes it then)."""
    walk = Walk()
    for name in names:
        for case in table[name]:
            url = reverse(name, kwargs=case.kwargs)
            for method, expected_by_role in (("GET", case.get), ("POST", case.post)):
                for role in ROLES:
                    client = clients[role]
                    cookies = SimpleCookie(client.cookies.output(header="", sep="\n"))
                    with transaction.atomic():
                        before = db_fingerprint()
                        response = client.get(url) if method == "GET" else client.post(url, case.data)
                        outcome = outcome_of(response)
                        if response.streaming:
                            b"".join(response.streaming_content)
                        must_not_write = outcome in DENIED or (gets_write_nothing and method == "GET")
                        if must_not_write and db_fingerprint() != before:
                            walk.changed.append(f"{method} {url} as {role} ({outcome}) changed the database")
                        transaction.set_rollback(True)
                    client.cookies = cookies
                    cache.clear()
                    walk.requests += 1
                    expected = expected_by_role[role]
                    if outcome != expected:
                        label = f" [{case.label}]" if case.label else ""
                        walk.mismatches.append(f"{method} {name}{label} {url} as {role}: got {outcome}, expected {expected}")
    return walk
