"""Measurement (issue 17, part 5): viewable impressions posted by impressions.js, once per reader and
option, charged once per impression; no write on a page read; a flood gets 429; reports and their CSV.

`sponsored_world(users)` is the world the disclosure, register and permission tests share: alice's
published, opted-in story whose chapter 4 is an approved Tidewave placement of a live CPM campaign, and
rita's own reader request with an approved placement."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from brands import measurement
from brands import services as brand_services
from brands.models import (
    Campaign,
    CampaignSpend,
    DisclosureOpen,
    PlacementView,
)
from brands.placements import find_mentions, mention_spans
from tests.factories import ChapterFactory, approved_brand, live_campaign, story_with_chapters
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus

DRAFT = "Lou waxed her old board by the harbour. The tide came in slowly."
PLACED_SENTENCE = "She reached for the Tidewave wax she always kept in her bag."
PLACED = f"Lou waxed her old board by the harbour. {PLACED_SENTENCE} The tide came in slowly."


@pytest.fixture(autouse=True)
def _redis_cache(settings):
    """The production cache backend (Redis at REDIS_URL) under a prefix of this test's own: the flood
    limit counts there, and nothing leaks from one test into another."""
    from django.conf import settings as live

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": live.CACHES["default"]["LOCATION"],
            "KEY_PREFIX": f"mesu-measure-{uuid.uuid4().hex}",
        }
    }


def approved_option(gen: GenerationRequest, *, index: int, asset, campaign, text: str = PLACED, draft: str = DRAFT):  # noqa: ANN001, ANN201
    start = text.index(PLACED_SENTENCE)
    return GenerationOption.objects.create(
        request=gen, index=index, text=text, draft=draft, format_ok=True,
        mentions=mention_spans(find_mentions(text, asset.terms)), placed_passage=[start, start + len(PLACED_SENTENCE)],
        brand=asset.brand, asset=asset, campaign=campaign, placement_found=True,
        review_status=ReviewStatus.APPROVED, reviewed_at=timezone.now(),
    )


def sponsored_world(users: dict, *, slug: str = "sponsored-story") -> SimpleNamespace:
    alice, rita = users["alice"], users["rita"]
    story = story_with_chapters(owner=alice, chapters=3, slug=slug, is_published=True, title="Tide Stories")
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surf wax.")
    asset = brand_services.asset_create(brand=brand, kind="product", name="Wax", terms="Tidewave")
    campaign = live_campaign(brand, name="Summer swell", price=Decimal("5"))

    def request(user, kind, next_number):  # noqa: ANN001, ANN202
        return GenerationRequest.objects.create(
            story=story, requested_by=user, kind=kind, engine="vllm", max_new_tokens=24,
            next_number=next_number, n=1, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
        )

    gen_author = request(alice, GenerationRequest.Kind.AUTHOR, 4)
    author_option = approved_option(gen_author, index=0, asset=asset, campaign=campaign)
    chapter = ChapterFactory(story=story, number=4, text=PLACED, source=Chapter.Source.GENERATED, title="The wax")
    # As option_accept leaves it: a generated chapter not edited since (updated_at == created_at).
    Chapter.objects.filter(pk=chapter.pk).update(updated_at=F("created_at"))
    GenerationOption.objects.filter(pk=author_option.pk).update(accepted_chapter=chapter)
    author_option.refresh_from_db()
    gen_rita = request(rita, GenerationRequest.Kind.READER, 4)
    rita_option = approved_option(gen_rita, index=0, asset=asset, campaign=campaign)
    return SimpleNamespace(
        story=story, brand=brand, asset=asset, campaign=campaign, chapter=chapter,
        author_option=author_option, rita_option=rita_option, gen_rita=gen_rita,
        chapter_url=reverse("writer:chapter_detail", args=[story.slug, 4]),
    )


@pytest.fixture
def world(users):
    return sponsored_world(users)


def impression_url(option) -> str:  # noqa: ANN001
    return reverse("brands:measure_impression", args=[option.pk])


def counts() -> tuple[int, int, int]:
    return PlacementView.objects.count(), CampaignSpend.objects.count(), DisclosureOpen.objects.count()


# --- No write on a page read -----------------------------------------------------------------------


def test_reading_either_page_writes_no_view(world, client_for):
    ross, rita = client_for("ross"), client_for("rita")
    for _ in range(3):
        page = ross.get(world.chapter_url)
        assert page.status_code == 200
        assert rita.get(reverse("writer:request_detail", args=[world.gen_rita.pk])).status_code == 200
        assert rita.get(reverse("writer:request_progress", args=[world.gen_rita.pk])).status_code == 286
    assert counts() == (0, 0, 0)
    world.campaign.refresh_from_db()
    assert world.campaign.spent == 0
    html = page.content.decode()
    assert f'data-impression-url="{impression_url(world.author_option)}"' in html
    assert "js/impressions.js" in html
    assert f'data-placed-passage="{PLACED_SENTENCE}"' in html


def test_get_on_the_event_urls_is_refused(world, client_for):
    ross = client_for("ross")
    assert ross.get(impression_url(world.author_option)).status_code == 405
    assert ross.get(reverse("brands:measure_disclosure", args=[world.author_option.pk])).status_code == 405
    assert counts() == (0, 0, 0)


# --- One impression per reader and option, one charge per impression -----------------------------------


def test_five_posts_make_one_impression_and_one_cpm_charge(world, client_for):
    ross = client_for("ross")
    for _ in range(5):
        assert ross.post(impression_url(world.author_option)).status_code == 204
    view = PlacementView.objects.get()
    assert (view.user.username, view.option_id, view.campaign_id, view.brand_id) == (
        "ross", world.author_option.pk, world.campaign.pk, world.brand.pk
    )
    spend = CampaignSpend.objects.get()
    assert spend.kind == CampaignSpend.Kind.IMPRESSION and spend.amount == Decimal("0.005")  # CPM 5 / 1,000
    world.campaign.refresh_from_db()
    assert world.campaign.spent == Decimal("0.005")


def test_each_reader_is_charged_once_per_option(world, client_for, users):
    from tests.factories import UserFactory

    readers = [UserFactory(username=f"reader{i}", roles=["reader"]) for i in range(3)]
    for reader in readers:
        option = measurement.option_get_for_measurement(pk=world.author_option.pk, user=reader)
        measurement.impression_record(option=option, user=reader)
        measurement.impression_record(option=option, user=reader)
    # rita sees her own request's option and the story's chapter: two options, two impressions.
    rita = client_for("rita")
    assert rita.post(impression_url(world.rita_option)).status_code == 204
    assert rita.post(impression_url(world.author_option)).status_code == 204
    assert PlacementView.objects.count() == 5
    assert CampaignSpend.objects.filter(kind="impression").count() == 5
    world.campaign.refresh_from_db()
    assert world.campaign.spent == Decimal("0.025")


def test_the_author_staff_and_the_brands_managers_are_not_counted(world, client_for):
    for who in ("alice", "root", "mia"):
        assert client_for(who).post(impression_url(world.author_option)).status_code in (204, 404)
    assert counts() == (0, 0, 0)


def test_an_impression_of_a_paused_campaign_is_recorded_but_not_charged(world, client_for):
    Campaign.objects.filter(pk=world.campaign.pk).update(status=Campaign.Status.PAUSED)
    assert client_for("ross").post(impression_url(world.author_option)).status_code == 204
    assert counts() == (1, 0, 0)


def test_no_overspend_when_the_budget_runs_out(world, client_for, users):
    from tests.factories import UserFactory

    Campaign.objects.filter(pk=world.campaign.pk).update(budget_total=Decimal("0.01"))  # two impressions
    for i in range(4):
        reader = UserFactory(username=f"budget{i}", roles=["reader"])
        measurement.impression_record(option=world.author_option, user=reader)
    world.campaign.refresh_from_db()
    assert world.campaign.spent == Decimal("0.01")
    assert CampaignSpend.objects.count() == 2 and PlacementView.objects.count() == 4


# --- Who may post ---------------------------------------------------------------------------------------


def test_a_reader_may_not_post_for_someone_elses_request(world, client_for):
    assert client_for("ross").post(impression_url(world.rita_option)).status_code == 404
    assert client_for("ross").post(reverse("brands:measure_disclosure", args=[world.rita_option.pk])).status_code == 404
    assert counts() == (0, 0, 0)


def test_not_approved_or_unpublished_placements_take_no_impression(world, client_for):
    GenerationOption.objects.filter(pk=world.rita_option.pk).update(review_status=ReviewStatus.PENDING)
    assert client_for("rita").post(impression_url(world.rita_option)).status_code == 404
    world.story.is_published = False
    world.story.save(update_fields=["is_published"])
    assert client_for("ross").post(impression_url(world.author_option)).status_code == 404
    assert counts() == (0, 0, 0)


def test_anonymous_posts_go_to_the_login_page(world, client):
    response = client.post(impression_url(world.author_option))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert counts() == (0, 0, 0)


# --- The flood limit ------------------------------------------------------------------------------------


def test_a_flood_of_view_events_gets_429_and_writes_nothing_more(world, client_for, settings):
    settings.BRAND_MEASURE_RATE_LIMIT_PER_MINUTE = 3
    rita = client_for("rita")
    open_url = reverse("brands:measure_disclosure", args=[world.author_option.pk])
    assert rita.post(open_url).status_code == 204
    assert rita.post(open_url).status_code == 204
    assert rita.post(impression_url(world.author_option)).status_code == 204
    before = counts()
    assert before == (1, 1, 2)
    for url in (impression_url(world.rita_option), open_url, impression_url(world.rita_option)):
        response = rita.post(url)
        assert response.status_code == 429
        assert int(response["Retry-After"]) >= 1
    assert counts() == before
    # Another reader has their own count.
    assert client_for("ross").post(open_url).status_code == 204


def test_disclosure_opens_are_counted_each_time(world, client_for):
    ross = client_for("ross")
    url = reverse("brands:measure_disclosure", args=[world.author_option.pk])
    assert ross.post(url).status_code == 204
    assert ross.post(url).status_code == 204
    opens = DisclosureOpen.objects.filter(option=world.author_option)
    assert opens.count() == 2
    assert {o.campaign_id for o in opens} == {world.campaign.pk}


# --- Reports and CSV ------------------------------------------------------------------------------------


def test_campaign_report_by_day_and_its_csv(world, client_for):
    ross = client_for("ross")
    ross.post(impression_url(world.author_option))
    ross.post(reverse("brands:measure_disclosure", args=[world.author_option.pk]))
    client_for("rita").post(impression_url(world.rita_option))
    report = measurement.campaign_report(campaign=world.campaign)
    today = timezone.localdate()
    [row] = [r for r in report.days if r.day == today]
    assert (row.impressions, row.disclosure_opens, row.placements, row.spend) == (2, 1, 2, Decimal("0.0100"))
    assert report.days[0].day == today and len(report.days) == 2  # the flight began yesterday
    mia = client_for("mia")
    page = mia.get(reverse("brands:campaign_report", args=[world.brand.slug, world.campaign.pk]))
    assert page.status_code == 200 and "Summer swell" in page.content.decode()
    response = mia.get(reverse("brands:campaign_report_csv", args=[world.brand.slug, world.campaign.pk]))
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == list(measurement.CAMPAIGN_CSV_HEADER)
    assert rows[1] == [today.isoformat(), "Summer swell", "2", "1", "2", "0.0100"]


def test_story_report_and_its_csv(world, client_for):
    client_for("ross").post(impression_url(world.author_option))
    [row] = measurement.story_report(brand=world.brand)
    assert (row.title, row.placements, row.impressions, row.spend) == ("Tide Stories", 2, 1, Decimal("0.0050"))
    response = client_for("mia").get(reverse("brands:story_report_csv", args=[world.brand.slug]))
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [list(measurement.STORY_CSV_HEADER), ["Tide Stories", "yes", "2", "1", "0.0050"]]
    assert client_for("mia").get(reverse("brands:reports", args=[world.brand.slug])).status_code == 200


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("Tide, \"quoted\"\nline", "Tide, \"quoted\"\nline"),
        ("plain", "plain"),
        (Decimal("1.5000"), "1.5000"),
    ],
)
def test_csv_cells_are_formula_safe_and_quoted(value, cell):
    document = measurement.report_csv(header=["h"], rows=[[value]])
    assert list(csv.reader(io.StringIO(document))) == [["h"], [cell]]


def test_a_story_title_that_looks_like_a_formula_is_escaped_in_the_export(world, client_for):
    world.story.title = "=cmd|' /C calc'!A0"
    world.story.save(update_fields=["title"])
    response = client_for("mia").get(reverse("brands:story_report_csv", args=[world.brand.slug]))
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[1][0] == "'=cmd|' /C calc'!A0"


def test_the_dashboard_shows_spend_against_budget_and_pacing(world, client_for):
    from datetime import timedelta

    today = timezone.localdate()
    Campaign.objects.filter(pk=world.campaign.pk).update(
        pacing=Campaign.Pacing.EVEN, starts_on=today - timedelta(days=4), ends_on=today + timedelta(days=5),
        spent=Decimal("100"),
    )
    from brands.selectors import campaign_pacing_list

    [pacing] = campaign_pacing_list(brand=world.brand)
    # Day 5 of 10 of a 1,000 budget: 500 expected, 100 spent.
    assert (pacing.flight_day, pacing.flight_days, pacing.expected) == (5, 10, Decimal("500"))
    assert (pacing.spent_percent, pacing.pace) == (10, "behind")
    html = client_for("mia").get(reverse("brands:brand_dashboard", args=[world.brand.slug])).content.decode()
    assert "Summer swell" in html and "behind" in html and "500.00" in html


@pytest.mark.django_db(transaction=True)
def test_five_parallel_posts_of_one_reader_make_one_impression_and_one_charge(users):
    """Five posts at once from one reader (threads, each its own connection): one view row, one charge."""
    import threading

    from django.db import connection
    from django.test import Client

    world = sponsored_world(users, slug="parallel-story")
    url = impression_url(world.author_option)
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def post() -> None:
        client = Client()
        client.force_login(users["ross"])
        barrier.wait()
        try:
            statuses.append(client.post(url).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * 5
    assert PlacementView.objects.filter(option=world.author_option).count() == 1
    assert CampaignSpend.objects.filter(option=world.author_option).count() == 1
    world.campaign.refresh_from_db()
    assert world.campaign.spent == Decimal("0.005")
