"""The measurement URLs (issue 17, parts 4 and 5) in the security matrix: every role, GET and POST, on the
world of test_url_permissions.py (permission_table.py) plus a sponsored chapter and a reader's sponsored
option, checked the same way.

The placement register is public (GET only). The event URLs take POSTs only (a page read never writes):
a sponsored chapter of a published story from any signed-in user (204; the author, staff and the brand's
managers are simply not counted), a reader's own request's option only from that reader (anyone else 404:
nobody learns it exists); anonymous visitors go to the login page. The reports are a brand manager's
pages: the brand's manager and staff; the other manager 404; authors and readers 403. A refused request
changes no row, no GET writes, and every POST needs the CSRF token.

`measurement_permission_cases(world)` is the table's part for these URLs, `make_measurement_world(world)`
what it needs besides the shared world: permission_table.py takes them in like the others'."""

from __future__ import annotations

from types import SimpleNamespace

from django.db.models import F
from django.utils import timezone

from brands import measurement_urls
from tests.factories import ChapterFactory, live_campaign
from tests.security.permission_table import (
    DENIED,
    LOGIN,
    ROLES,
    WRONG_METHOD,
    Case,
    clients_for,
    expect,
    logged_in,
    manager_page,
    posts_without_token_refused,
    url_patterns,
    walk_table,
)
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

MEASUREMENT_URLS = tuple(f"brands:{p.name}" for p in measurement_urls.urlpatterns)
MISSING = 987654
TEXT = "Lou waxed her Tidewave board by the harbour."


def make_measurement_world(world: SimpleNamespace) -> SimpleNamespace:
    """Campaigns of brands A and B; chapter 4 of the published story, an approved placement of A; rita's
    own reader request with an approved placement of A."""
    campaign_a = live_campaign(world.a, name="A summer")
    campaign_b = live_campaign(world.b, name="B winter")

    def approved(gen: GenerationRequest) -> GenerationOption:
        return GenerationOption.objects.create(
            request=gen, index=0, text=TEXT, format_ok=True, mentions=[[14, 22]], brand=world.a,
            asset=world.asset_a, campaign=campaign_a, placement_found=True,
            review_status=ReviewStatus.APPROVED, reviewed_at=timezone.now(),
        )

    def request(user, kind) -> GenerationRequest:  # noqa: ANN001
        return GenerationRequest.objects.create(
            story=world.pub, requested_by=user, kind=kind, engine="vllm", max_new_tokens=24, next_number=4,
            n=1, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
        )

    chapter_option = approved(request(world.pub.owner, GenerationRequest.Kind.AUTHOR))
    chapter = ChapterFactory(story=world.pub, number=4, text=TEXT, source=Chapter.Source.GENERATED)
    Chapter.objects.filter(pk=chapter.pk).update(updated_at=F("created_at"))
    GenerationOption.objects.filter(pk=chapter_option.pk).update(accepted_chapter=chapter)
    rita_option = approved(request(world.gen_rita.requested_by, GenerationRequest.Kind.READER))
    return SimpleNamespace(
        campaign_a=campaign_a, campaign_b=campaign_b, chapter_option=chapter_option, rita_option=rita_option
    )


def measurement_permission_cases(w: SimpleNamespace) -> dict[str, list[Case]]:
    """{URL name: [Case, ...]} for the measurement URLs (permission_table.py's shapes)."""
    m = w.measurement

    def event_cases() -> list[Case]:
        return [
            Case("published chapter's placement", {"pk": m.chapter_option.pk}, WRONG_METHOD, logged_in(204)),
            Case("rita's own option", {"pk": m.rita_option.pk}, WRONG_METHOD, logged_in(404, rita=204)),
            Case("a plain option", {"pk": w.plain.pk}, WRONG_METHOD, logged_in(404)),
            Case("a pending placement", {"pk": w.opt_a.pk}, WRONG_METHOD, logged_in(404)),
            Case("missing", {"pk": MISSING}, WRONG_METHOD, logged_in(404)),
        ]

    def brand_cases(get_ok: object) -> list[Case]:
        return [
            Case("brand A", {"slug": w.a.slug}, manager_page(get_ok, manager="mia"), WRONG_METHOD),
            Case("brand B", {"slug": w.b.slug}, manager_page(get_ok, manager="max"), WRONG_METHOD),
        ]

    def campaign_cases(get_ok: object) -> list[Case]:
        nobody = logged_in(403, mia=404, max=404, root=404)
        return [
            Case("A's campaign", {"slug": w.a.slug, "pk": m.campaign_a.pk}, manager_page(get_ok, manager="mia"),
                 WRONG_METHOD),
            Case("B's campaign", {"slug": w.b.slug, "pk": m.campaign_b.pk}, manager_page(get_ok, manager="max"),
                 WRONG_METHOD),
            # B's campaign under A's address: nobody, not even staff, reaches it that way.
            Case("B's campaign via A", {"slug": w.a.slug, "pk": m.campaign_b.pk}, nobody, WRONG_METHOD),
            Case("missing campaign", {"slug": w.a.slug, "pk": MISSING}, nobody, WRONG_METHOD),
        ]

    return {
        "brands:placement_register": [Case("", {}, expect(200), expect(405))],
        "brands:measure_impression": event_cases(),
        "brands:measure_disclosure": event_cases(),
        "brands:reports": brand_cases(200),
        "brands:story_report_csv": brand_cases(200),
        "brands:campaign_report": campaign_cases(200),
        "brands:campaign_report_csv": campaign_cases(200),
    }


def _world(world: SimpleNamespace) -> SimpleNamespace:
    """The shared world (permission_table.build_world) already holds this part's rows."""
    if not hasattr(world, "measurement"):
        world.measurement = make_measurement_world(world)
    return world


def test_every_measurement_url_has_an_entry_in_the_table(world):
    patterns = url_patterns()
    assert set(MEASUREMENT_URLS) <= set(patterns)
    assert set(measurement_permission_cases(_world(world))) == set(MEASUREMENT_URLS)


def test_every_role_gets_the_expected_status_on_every_measurement_url(world, users):
    w = _world(world)
    clients = clients_for({**users, "max": w.max})
    table = measurement_permission_cases(w)
    walk = walk_table(clients, table, MEASUREMENT_URLS, gets_write_nothing=True)
    assert not walk.mismatches, f"{len(walk.mismatches)} of {walk.requests} requests:\n" + "\n".join(walk.mismatches)
    assert not walk.changed, "\n".join(walk.changed)
    assert walk.requests == 2 * len(ROLES) * sum(len(cases) for cases in table.values())


def test_anonymous_visitors_post_nothing_and_reports_stay_with_managers(world):
    table = measurement_permission_cases(_world(world))
    for name, cases in table.items():
        for case in cases:
            if name != "brands:placement_register":
                assert case.post["anon"] in (LOGIN, 405) and case.get["anon"] == LOGIN, name
            if "report" in name:
                for role in ("alice", "bob", "rita", "ross"):
                    assert case.get[role] in DENIED, (name, role)


def test_every_measurement_post_needs_the_csrf_token(world, users):
    """Each event POST that rita gets through, without the token: 403 and no row written."""
    table = measurement_permission_cases(_world(world))
    checked = posts_without_token_refused(table, users["rita"], "rita")
    assert checked == 4  # the chapter's placement and her own option, impression and panel open
