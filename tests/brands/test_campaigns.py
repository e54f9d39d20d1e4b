"""Campaigns (issue 17): the services' checks, status changes, the pages, and matching that offers only
assets of live campaigns with budget left."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from brands import campaigns, matching, services
from brands.models import Campaign, CampaignSpend
from mesu_web.errors import ApplicationError
from tests.brands.test_matching import seaside_story
from tests.factories import live_campaign
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

SURF = "Tidewave Surf Co."


def _values(**overrides: object) -> dict[str, object]:
    today = timezone.localdate()
    values: dict[str, object] = {
        "name": "Summer swell",
        "starts_on": today,
        "ends_on": today + timedelta(days=9),
        "budget_total": Decimal("500"),
        "price": Decimal("4"),
    }
    values.update(overrides)
    return values


@pytest.fixture
def surf(brands):
    return brands[SURF]


# --- The services' checks --------------------------------------------------------------------------------


def test_a_campaign_is_created_as_a_draft_with_its_own_assets(surf, users):
    campaign = campaigns.campaign_create(brand=surf, user=users["mia"], assets=surf.assets.all(), **_values())
    assert campaign.status == Campaign.Status.DRAFT
    assert set(campaign.assets.all()) == set(surf.assets.all())
    assert campaign.pacing == Campaign.Pacing.EVEN and campaign.pricing == Campaign.Pricing.CPM
    assert campaign.created_by == users["mia"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ends_on": timezone.localdate() - timedelta(days=1)}, "before it starts"),
        ({"budget_total": Decimal("0")}, "total budget must be more than 0"),
        ({"budget_total": Decimal("-5")}, "total budget must be more than 0"),
        ({"budget_total": Decimal("10000000.01")}, "at most 10,000,000"),
        ({"budget_total": Decimal("1e12")}, "looks like a typo"),
        ({"budget_total": "lots"}, "must be a number"),
        ({"budget_total": Decimal("NaN")}, "must be a number"),
        ({"budget_daily": Decimal("600")}, "daily budget (600) is above the total budget (500)"),
        ({"budget_daily": Decimal("-1")}, "daily budget must be more than 0"),
        ({"price": Decimal("0")}, "price must be more than 0"),
        ({"price": Decimal("-3")}, "price must be more than 0"),
        ({"price": Decimal("250000")}, "price can be at most 100,000"),
        ({"price": Decimal("1.00001")}, "at most 4 decimal places"),
        ({"pricing": "fixed", "price": Decimal("600")}, "above the total budget"),
        ({"name": "   "}, "Give the campaign a name"),
        ({"cap_per_story": 0}, "between 1 and 1000"),
        ({"pricing": "barter"}, "Pricing is one of"),
        ({"ends_on": timezone.localdate() + timedelta(days=5000)}, "at most"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_saves_nothing(surf, users, overrides, message):
    with pytest.raises(ApplicationError) as caught:
        campaigns.campaign_create(brand=surf, user=users["mia"], **_values(**overrides))
    assert message in caught.value.message
    assert not Campaign.objects.filter(brand=surf, name="Summer swell").exists()


def test_a_name_used_twice_and_assets_of_another_brand_are_refused(brands, surf, users):
    campaigns.campaign_create(brand=surf, user=users["mia"], **_values())
    with pytest.raises(ApplicationError, match="already has a campaign called 'SUMMER swell'"):
        campaigns.campaign_create(brand=surf, user=users["mia"], **_values(name="SUMMER  swell"))
    bank = brands["Northstar Bank"]
    with pytest.raises(ApplicationError, match="own assets in play"):
        campaigns.campaign_create(
            brand=surf, user=users["mia"], assets=[*surf.assets.all(), *bank.assets.all()], **_values(name="Mixed")
        )
    with pytest.raises(ApplicationError, match="own assets in play"):
        campaigns.campaign_create(brand=surf, user=users["mia"], assets=[987654], **_values(name="Ghost"))
    assert not Campaign.objects.filter(name__in=["Mixed", "Ghost"]).exists()
    # Another brand may use the same name.
    campaigns.campaign_create(brand=bank, user=users["mia"], **_values())


def test_status_changes_and_ended_is_final(surf, users):
    campaign = campaigns.campaign_create(brand=surf, user=users["mia"], **_values())
    with pytest.raises(ApplicationError, match="at least one asset"):
        campaigns.campaign_set_status(campaign=campaign, status="active")
    with pytest.raises(ApplicationError, match="cannot become paused"):
        campaigns.campaign_set_status(campaign=campaign, status="paused")
    campaigns.campaign_update(campaign=campaign, assets=surf.assets.all())
    assert campaigns.campaign_set_status(campaign=campaign, status="active").status == "active"
    assert campaigns.campaign_set_status(campaign=campaign, status="paused").status == "paused"
    assert campaigns.campaign_set_status(campaign=campaign, status="active").status == "active"
    with pytest.raises(ApplicationError, match="needs at least one asset"):
        campaigns.campaign_update(campaign=campaign, assets=[])
    assert campaigns.campaign_set_status(campaign=campaign, status="ended").status == "ended"
    for status in ("active", "paused", "draft"):
        with pytest.raises(ApplicationError, match="stays ended"):
            campaigns.campaign_set_status(campaign=campaign, status=status)
    with pytest.raises(ApplicationError, match="ended campaign cannot change"):
        campaigns.campaign_update(campaign=campaign, name="Again")
    with pytest.raises(ApplicationError, match="status is one of"):
        campaigns.campaign_set_status(campaign=Campaign.objects.create(brand=surf, **_values(name="x")), status="on")


def test_an_update_keeps_budget_above_spend_and_pricing_once_spent(surf, users):
    campaign = live_campaign(surf, budget_total=Decimal("100"))
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("60"))
    with pytest.raises(ApplicationError, match="cannot go below that"):
        campaigns.campaign_update(campaign=campaign, budget_total=Decimal("50"))
    with pytest.raises(ApplicationError, match="pricing of a campaign that has spent"):
        campaigns.campaign_update(campaign=campaign, pricing="fixed")
    updated = campaigns.campaign_update(campaign=campaign, budget_total=Decimal("80"), cap_per_story=2)
    assert updated.budget_total == Decimal("80") and updated.cap_per_story == 2
    campaign.refresh_from_db()
    assert campaign.spent == Decimal("60")  # an update never touches the spend


def test_pacing_state(surf):
    today = timezone.localdate()
    campaign = live_campaign(
        surf, starts_on=today - timedelta(days=4), ends_on=today + timedelta(days=5), pacing="even",
        budget_total=Decimal("1000"),
    )
    assert campaigns.pacing_state(campaign=campaign) == ("behind", Decimal("500"))
    campaign.spent = Decimal("480")
    assert campaigns.pacing_state(campaign=campaign)[0] == "on pace"
    campaign.spent = Decimal("700")
    assert campaigns.pacing_state(campaign=campaign)[0] == "ahead"
    campaign.pacing = "asap"
    assert campaigns.pacing_state(campaign=campaign)[0] == "as fast as possible"
    assert campaigns.pacing_state(campaign=campaign, day=today + timedelta(days=30))[0] == "ended"


# --- Matching: only live campaigns with budget left --------------------------------------------------------


def _surf_matched(story, **kwargs) -> list[str]:  # noqa: ANN001
    return [m.brand.name for m in matching.brand_match_for_story(story=story, k=10, max_distance=2.0, **kwargs)]


def test_matching_offers_only_assets_in_play_of_live_campaigns_with_budget_left(surf, users):
    services.assets_embed_missing()
    story = seaside_story(users["alice"])
    [demo] = Campaign.objects.filter(brand=surf)
    matches = matching.brand_match_for_story(story=story, k=10, max_distance=2.0)
    assert SURF in [m.brand.name for m in matches]
    assert {m.campaign_id for m in matches if m.brand == surf} == {demo.pk}
    plans = matching.option_plans_for_request(story=story, preference="", n=2, with_brief=False).plans
    assert all(p.campaign_id == Campaign.objects.get(brand_id=p.brand_id).pk for p in plans if p.brand_id)
    # Paused, ended, not yet started, over: the brand is not offered.
    for change in ({"status": "paused"}, {"status": "ended"},
                   {"starts_on": timezone.localdate() + timedelta(days=1)},
                   {"starts_on": timezone.localdate() - timedelta(days=9),
                    "ends_on": timezone.localdate() - timedelta(days=1)}):
        Campaign.objects.filter(pk=demo.pk).update(**change)
        assert SURF not in _surf_matched(story), change
        Campaign.objects.filter(pk=demo.pk).update(
            status="active", starts_on=timezone.localdate() - timedelta(days=1),
            ends_on=timezone.localdate() + timedelta(days=90),
        )
    assert SURF in _surf_matched(story)
    # The whole budget spent: not offered. Only one asset in play: only that asset.
    Campaign.objects.filter(pk=demo.pk).update(spent=demo.budget_total)
    assert SURF not in _surf_matched(story)
    Campaign.objects.filter(pk=demo.pk).update(spent=0)
    glide = surf.assets.get(name="Tidewave Glide")
    demo.assets.set([glide])
    assets = {m.asset.name for m in matching.brand_match_for_story(story=story, k=10, max_distance=2.0)
              if m.brand == surf}
    assert assets == {"Tidewave Glide"}


def test_todays_limit_stops_an_even_paced_campaign_until_tomorrow(surf, users):
    services.assets_embed_missing()
    story = seaside_story(users["alice"])
    Campaign.objects.filter(brand=surf).delete()
    campaign = live_campaign(surf, budget_daily=Decimal("1"))
    assert SURF in _surf_matched(story)
    option = _branded_option(story, surf, campaign)
    CampaignSpend.objects.create(campaign=campaign, option=option, kind="placement", amount=Decimal("1"))
    Campaign.objects.filter(pk=campaign.pk).update(spent=Decimal("1"))
    assert campaigns.budget_left(campaign=Campaign.objects.get(pk=campaign.pk)) == 0
    assert SURF not in _surf_matched(story)


def test_the_campaign_with_most_budget_left_pays_for_a_shared_asset(surf, users):
    services.assets_embed_missing()
    story = seaside_story(users["alice"])
    small = live_campaign(surf, budget_total=Decimal("10"))
    big = live_campaign(surf, budget_total=Decimal("5000"))
    offer = campaigns.offerable_assets(story_id=story.pk, reader_id=None)
    assert {offer[a.pk].pk for a in surf.assets.all()} == {big.pk}
    assert small.pk not in {c.pk for c in offer.values()}


def _branded_option(story, brand, campaign, *, reader=None, status=ReviewStatus.PENDING, index=0):  # noqa: ANN001, ANN202
    request = GenerationRequest.objects.create(
        story=story, requested_by=reader or story.owner,
        kind=GenerationRequest.Kind.READER if reader else GenerationRequest.Kind.AUTHOR,
        engine="vllm", max_new_tokens=24, next_number=2, n=1, status=GenerationRequest.Status.SUCCEEDED,
        use_brands=True,
    )
    asset = brand.assets.first()
    return GenerationOption.objects.create(
        request=request, index=index, text=f"Lou waxed her {asset.terms[0]}.", format_ok=True,
        brand=brand, asset=asset, campaign=campaign, placement_found=True, review_status=status,
    )


# --- The pages ---------------------------------------------------------------------------------------------


def test_the_manager_creates_edits_activates_and_ends_a_campaign_from_the_pages(surf, users, client_for):
    mia = client_for("mia")
    listed = mia.get(reverse("brands:campaign_list", args=[surf.slug]))
    assert listed.status_code == 200 and b"Tidewave Surf Co. launch" in listed.content
    assert b"Campaigns" in mia.get(reverse("brands:brand_detail", args=[surf.slug])).content
    today = timezone.localdate()
    form = {
        "name": "Autumn waves", "objective": "Wetsuits for cold water", "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=20)).isoformat(), "budget_total": "2500.00", "budget_daily": "200",
        "pricing": "cpm", "price": "6.5", "pacing": "even", "cap_per_reader_per_day": "2", "cap_per_story": "",
        "assets": [a.pk for a in surf.assets.all()],
    }
    created = mia.post(reverse("brands:campaign_create", args=[surf.slug]), form)
    assert created.status_code == 302
    campaign = Campaign.objects.get(brand=surf, name="Autumn waves")
    assert campaign.budget_total == Decimal("2500") and campaign.cap_per_reader_per_day == 2
    assert campaign.status == "draft" and campaign.assets.count() == 2
    # Bad input: the form comes back with the reason, nothing saved.
    bad = mia.post(reverse("brands:campaign_create", args=[surf.slug]),
                   {**form, "name": "Backwards", "ends_on": (today - timedelta(days=3)).isoformat()})
    assert bad.status_code == 200 and b"before it starts" in bad.content
    huge = mia.post(reverse("brands:campaign_create", args=[surf.slug]),
                    {**form, "name": "Huge", "budget_total": "99999999999"})
    assert huge.status_code == 200 and b"looks like a typo" in huge.content
    again = mia.post(reverse("brands:campaign_create", args=[surf.slug]), {**form, "name": "autumn WAVES"})
    assert again.status_code == 200 and b"already has a campaign called" in again.content
    other = mia.post(reverse("brands:campaign_create", args=[surf.slug]),
                     {**form, "name": "Foreign", "assets": [987654]})
    assert other.status_code == 200 and b"own assets" in other.content
    assert not Campaign.objects.filter(name__in=["Backwards", "Huge", "Foreign"]).exists()
    # Edit, activate, see it listed with its budget, end it.
    edit_url = reverse("brands:campaign_edit", args=[surf.slug, campaign.pk])
    assert mia.get(edit_url).status_code == 200
    assert mia.post(edit_url, {**form, "budget_total": "3000"}).status_code == 302
    status_url = reverse("brands:campaign_status", args=[surf.slug, campaign.pk])
    assert mia.post(status_url, {"status": "active"}).status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "active" and campaign.budget_total == Decimal("3000")
    page = mia.get(reverse("brands:campaign_list", args=[surf.slug])).content.decode()
    assert "Autumn waves" in page and "0.0000 / 3000.0000" in page and "live" in page
    mia.post(status_url, {"status": "ended"})
    refused = mia.post(status_url, {"status": "active"}, follow=True)
    assert "stays ended" in refused.content.decode()
    assert Campaign.objects.get(pk=campaign.pk).status == "ended"
    assert mia.post(status_url, {"status": "bogus"}).status_code == 302
