"""Spend and caps under concurrency (issue 17): 50 parallel readers or reviewers, each thread on its own
database connection, against a campaign whose budget (or cap) covers fewer events than arrive. Spend never
passes the budget, the spend rows add up to `spent`, each event is charged once, and a cap per story is
never passed (brands.campaigns locks the campaign row)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from brands import campaigns, services
from brands.demo import seed_brands
from brands.models import Campaign, CampaignSpend
from mesu_web.errors import ApplicationError
from tests.factories import UserFactory, live_campaign, story_with_chapters
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

pytestmark = pytest.mark.django_db(transaction=True)
PARALLEL = 50


def _in_parallel(work: Callable[[int], object], count: int = PARALLEL) -> list[object]:
    """`work(i)` in `count` threads started together; each thread's result or exception."""
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test reads what each thread met
            results[i] = exc
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _options(story, brand, campaign, count: int, *, status=ReviewStatus.PENDING, reader=None) -> list[GenerationOption]:  # noqa: ANN001, E501
    """`count` branded options of `brand`, each in its own request of `story` (one approval per request): the
    author's requests, or `reader`'s personalised chapters."""
    asset = brand.assets.first()
    options = []
    kind = GenerationRequest.Kind.AUTHOR if reader is None else GenerationRequest.Kind.READER
    for i in range(count):
        request = GenerationRequest.objects.create(
            story=story, requested_by=reader or story.owner, kind=kind, engine="vllm",
            max_new_tokens=24, next_number=2, n=1, status=GenerationRequest.Status.SUCCEEDED, use_brands=True,
        )
        options.append(GenerationOption.objects.create(
            request=request, index=0, text=f"Chapter {i}: Lou waxed her {asset.terms[0]}.", format_ok=True,
            brand=brand, asset=asset, campaign=campaign, placement_found=True, review_status=status,
        ))
    return options


def _check_books(campaign: Campaign) -> Campaign:
    campaign.refresh_from_db()
    total = CampaignSpend.objects.filter(campaign=campaign).aggregate(s=Sum("amount"))["s"] or Decimal(0)
    assert campaign.spent == total, "the spend rows add up to `spent`"
    assert 0 <= campaign.spent <= campaign.budget_total
    return campaign


@pytest.fixture
def surf(users):
    brand = seed_brands(users["mia"])[0]
    Campaign.objects.filter(brand=brand).delete()  # only the campaign each test makes
    return brand


def test_fifty_readers_at_once_never_overspend_and_each_impression_is_charged_once(surf, users):
    # CPM 5.00: 0.005 an impression; 0.1 pays for 20 of the 50 readers' impressions.
    campaign = live_campaign(surf, price=Decimal("5"), budget_total=Decimal("0.1"))
    story = story_with_chapters(owner=users["alice"], chapters=1)
    [option] = _options(story, surf, campaign, 1, status=ReviewStatus.APPROVED)
    readers = [UserFactory(username=f"reader{i}", roles=["reader"]) for i in range(35)]
    # 50 events from 35 readers: 15 readers fire twice at the same moment.
    results = _in_parallel(lambda i: campaigns.impression_charge(option=option, user=readers[i % len(readers)]))
    assert not [r for r in results if isinstance(r, Exception)], results
    charged = [r for r in results if r is not None]
    campaign = _check_books(campaign)
    assert len(charged) == 20 and campaign.spent == campaign.budget_total == Decimal("0.1")
    spends = CampaignSpend.objects.filter(campaign=campaign)
    assert spends.count() == 20
    assert len(set(spends.values_list("user_id", flat=True))) == 20, "one charge per reader and option"
    # Once more for every reader: nothing more is charged (spent, or charged already).
    assert all(campaigns.impression_charge(option=option, user=r) is None for r in readers)
    assert _check_books(campaign).spent == Decimal("0.1")


def test_each_reader_is_charged_once_under_fifty_parallel_events(surf, users):
    campaign = live_campaign(surf, price=Decimal("5"), budget_total=Decimal("100"))
    story = story_with_chapters(owner=users["alice"], chapters=1)
    [option] = _options(story, surf, campaign, 1, status=ReviewStatus.APPROVED)
    readers = [UserFactory(username=f"twice{i}", roles=["reader"]) for i in range(10)]
    results = _in_parallel(lambda i: campaigns.impression_charge(option=option, user=readers[i % 10]))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len([r for r in results if r is not None]) == 10
    assert _check_books(campaign).spent == Decimal("0.05")


def test_fifty_fixed_price_approvals_at_once_never_overspend(surf, users):
    campaign = live_campaign(surf, pricing=Campaign.Pricing.FIXED, price=Decimal("10"), budget_total=Decimal("30"))
    story = story_with_chapters(owner=users["alice"], chapters=1)
    options = _options(story, surf, campaign, PARALLEL)
    mia = users["mia"]
    results = _in_parallel(lambda i: services.option_approve(option=options[i], reviewer=mia))
    approved = [r for r in results if isinstance(r, GenerationOption)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(approved) == 3 and len(refused) == PARALLEL - 3, [r for r in results if not isinstance(r, (GenerationOption, ApplicationError))]
    assert all("no budget left" in r.message for r in refused)
    campaign = _check_books(campaign)
    assert campaign.spent == Decimal("30")
    assert GenerationOption.objects.filter(pk__in=[o.pk for o in options], review_status="approved").count() == 3
    assert CampaignSpend.objects.filter(campaign=campaign, kind="placement").count() == 3


def test_fifty_approvals_in_one_story_at_once_never_pass_the_cap_per_story(surf, users):
    campaign = live_campaign(surf, cap_per_story=2)
    story = story_with_chapters(owner=users["alice"], chapters=1)
    options = _options(story, surf, campaign, PARALLEL)
    mia = users["mia"]
    results = _in_parallel(lambda i: services.option_approve(option=options[i], reviewer=mia))
    approved = [r for r in results if isinstance(r, GenerationOption)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(approved) == 2 and len(refused) == PARALLEL - 2, results
    assert all("at most 2 approved placement(s)" in r.message for r in refused)
    assert GenerationOption.objects.filter(request__story=story, review_status="approved").count() == 2
    # The refused ones still wait for review: nothing of their approval was kept.
    assert GenerationOption.objects.filter(request__story=story, review_status="pending").count() == PARALLEL - 2


def test_fifty_approvals_for_one_reader_at_once_never_pass_the_cap_per_reader_a_day(surf, users):
    """Fifty of one reader's personalised chapters approved at once: the reader gets at most the cap."""
    campaign = live_campaign(surf, cap_per_reader_per_day=3)
    story = story_with_chapters(owner=users["alice"], chapters=1)
    options = _options(story, surf, campaign, PARALLEL, reader=users["rita"])
    mia = users["mia"]
    results = _in_parallel(lambda i: services.option_approve(option=options[i], reviewer=mia))
    approved = [r for r in results if isinstance(r, GenerationOption)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(approved) == 3 and len(refused) == PARALLEL - 3, results
    assert all("a day for one reader" in r.message for r in refused)
    assert GenerationOption.objects.filter(request__requested_by=users["rita"], review_status="approved").count() == 3
