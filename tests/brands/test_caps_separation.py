"""Caps and separation (issue 17): a campaign's cap per reader a day and per story leave its brand out of
those plans and refuse an approval over the story cap; two brands of one category never share a chapter."""

from __future__ import annotations

import pytest
from django.test import override_settings

from brands import campaigns, matching, services
from brands.models import BrandSuitability, Campaign, PlacementView
from mesu_web.errors import ApplicationError
from tests.brands.test_matching import seaside_story
from tests.factories import live_campaign
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

SURF, BANK, BOBA = "Tidewave Surf Co.", "Northstar Bank", "Bobalicious"


@pytest.fixture
def story(brands, users):
    services.assets_embed_missing()
    story = seaside_story(users["alice"])
    services.story_brand_settings_update(story=story, opt_in=True)
    return story


def _option(story, brand, *, reader=None, status=ReviewStatus.PENDING, campaign=None):  # noqa: ANN001, ANN202
    request = GenerationRequest.objects.create(
        story=story, requested_by=reader or story.owner,
        kind=GenerationRequest.Kind.READER if reader else GenerationRequest.Kind.AUTHOR,
        engine="vllm", max_new_tokens=24, next_number=2, n=1, status=GenerationRequest.Status.SUCCEEDED,
        use_brands=True,
    )
    asset = brand.assets.first()
    return GenerationOption.objects.create(
        request=request, index=0, text=f"Lou waxed her {asset.terms[0]}.", format_ok=True, brand=brand,
        asset=asset, campaign=campaign or Campaign.objects.filter(brand=brand).first(), placement_found=True,
        review_status=status,
    )


def _plan_brands(story, **kwargs) -> set[int]:  # noqa: ANN001
    plans = matching.option_plans_for_request(story=story, preference="", n=3, with_brief=False, **kwargs).plans
    return [p.brand_id for p in plans]


@override_settings(BRAND_MATCH_MAX_DISTANCE=2.0)
def test_the_cap_per_story_leaves_the_brand_out_and_refuses_an_approval_over_it(brands, story, users):
    surf = brands[SURF]
    Campaign.objects.filter(brand=surf).update(cap_per_story=1)
    assert surf.pk in _plan_brands(story)
    first, second = _option(story, surf), _option(story, surf)
    services.option_approve(option=first, reviewer=users["mia"])
    assert campaigns.story_approved_count(story_id=story.pk, brand_id=surf.pk) == 1
    assert surf.pk not in _plan_brands(story), "the story reached the cap: the brand is left out"
    other_story = seaside_story(users["alice"], title="Another summer")
    services.story_brand_settings_update(story=other_story, opt_in=True)
    assert surf.pk in _plan_brands(other_story), "another story is not capped"
    with pytest.raises(ApplicationError, match="at most 1 approved placement"):
        services.option_approve(option=second, reviewer=users["mia"])
    second.refresh_from_db()
    assert second.review_status == ReviewStatus.PENDING and not second.approved_text_hash
    # A campaign without a cap: approvals go on.
    Campaign.objects.filter(brand=surf).update(cap_per_story=None)
    services.option_approve(option=second, reviewer=users["mia"])


@override_settings(BRAND_MATCH_MAX_DISTANCE=2.0)
def test_the_cap_per_reader_a_day_counts_their_options_and_impressions(brands, story, users):
    surf = brands[SURF]
    rita, ross = users["rita"], users["ross"]
    Campaign.objects.filter(brand=surf).update(cap_per_reader_per_day=2)
    assert _plan_brands(story, reader=rita).count(surf.pk) <= 2, "three options, room for two"
    _option(story, surf, reader=rita)
    assert campaigns.reader_placements_today(reader_id=rita.pk, brand_id=surf.pk) == 1
    assert _plan_brands(story, reader=rita).count(surf.pk) <= 1
    # An impression of someone else's chapter counts too; the same option seen and asked counts once.
    seen = _option(story, surf, status=ReviewStatus.APPROVED)
    PlacementView.objects.create(option=seen, brand=surf, user=rita)
    assert campaigns.reader_placements_today(reader_id=rita.pk, brand_id=surf.pk) == 2
    assert surf.pk not in _plan_brands(story, reader=rita), "rita reached the cap today"
    assert surf.pk in _plan_brands(story, reader=ross), "ross did not"
    assert surf.pk in _plan_brands(story), "the author's chapter has no reader cap"
    # An option asked to carry the brand that did not name it does not count.
    _option(story, surf, reader=ross, status=ReviewStatus.NOT_SENT)
    assert campaigns.reader_placements_today(reader_id=ross.pk, brand_id=surf.pk) == 0


@override_settings(BRAND_MATCH_MAX_DISTANCE=2.0)
def test_competing_brands_never_share_a_requests_plans(brands, story):
    surf, bank, boba = brands[SURF], brands[BANK], brands[BOBA]
    everyone = set(_plan_brands(story))
    assert {surf.pk, boba.pk} <= everyone or {surf.pk, bank.pk} <= everyone
    for brand in (surf, bank, boba):
        BrandSuitability.objects.update_or_create(brand=brand, defaults={"category": "IAB18"})
    plans = matching.option_plans_for_request(story=story, preference="", n=3, with_brief=False).plans
    assert len({p.brand_id for p in plans if p.brand_id}) == 1, "one brand of the category, the nearest"
    # Another category: both again.
    BrandSuitability.objects.filter(brand=bank).update(category="IAB13")
    BrandSuitability.objects.filter(brand=boba).update(category="IAB8")
    assert len({b for b in _plan_brands(story) if b}) >= 2
    assert matching.competing_pairs([surf.pk, bank.pk, boba.pk]) == []
    BrandSuitability.objects.filter(brand=boba).update(category=" iab18 ")
    assert matching.competing_pairs([surf.pk, bank.pk, boba.pk]) == [(surf.pk, boba.pk, "iab18")]


def test_an_option_naming_two_competing_brands_is_held_and_says_why(brands, story):
    surf, boba, bank = brands[SURF], brands[BOBA], brands[BANK]
    BrandSuitability.objects.update_or_create(brand=surf, defaults={"category": "IAB18"})
    BrandSuitability.objects.update_or_create(brand=boba, defaults={"category": "IAB18"})
    BrandSuitability.objects.update_or_create(brand=bank, defaults={"category": "IAB13"})
    request = GenerationRequest.objects.create(
        story=story, requested_by=story.owner, kind=GenerationRequest.Kind.AUTHOR, engine="vllm",
        max_new_tokens=24, next_number=2, n=1, use_brands=True,
    )
    plan = matching.OptionPlan(brand_id=surf.pk, asset_id=surf.assets.first().pk, terms=("Tidewave Glide",))
    held = matching.option_placement(
        request=request, plan=plan, reasoning="",
        text="Mara rode her Tidewave Glide, then sipped a Bobalicious brown sugar milk tea.",
    )
    assert held.review_status == ReviewStatus.HELD
    assert "compete (both in category iab18)" in held.note and SURF in held.note and BOBA in held.note
    # Two brands of different categories: held too (one placement a chapter), without the competition line.
    other = matching.option_placement(
        request=request, plan=plan, reasoning="", text="Mara rode her Tidewave Glide and opened the Northstar app.",
    )
    assert other.review_status == ReviewStatus.HELD and "compete" not in other.note


@override_settings(BRAND_MATCH_MAX_DISTANCE=2.0)
def test_the_authors_exclusion_and_opt_in_still_rule_over_a_live_campaign(brands, story, users):
    surf = brands[SURF]
    live_campaign(surf)  # a second live campaign: still no way past the author
    services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[surf.pk])
    assert surf.pk not in _plan_brands(story)
    services.story_brand_settings_update(story=story, opt_in=False)
    allowed, _ = matching.brand_use_for_request(story=story, reader=None, use_brands=True)
    assert not allowed
