"""Auto-approve rules (issue 17, part 6): `options_after_store` approves a waiting option when an active rule
of its brand matches and there is no policy finding; a refused approval leaves it waiting; the pages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from brands import review, services
from brands.models import AutoApproveRule, PlacementDecision, StorySuitability
from mesu_web.errors import ApplicationError
from tests.brands.test_review_workflow import make_option
from tests.factories import approved_brand, live_campaign, story_with_chapters
from writer.models import ReviewStatus


@pytest.fixture
def surf(users):
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    services.asset_create(brand=brand, kind="product", name="Board", terms="Tidewave")
    return brand


@pytest.fixture
def story(users):
    story = story_with_chapters(owner=users["alice"], chapters=2, slug="beach", is_published=True)
    StorySuitability.objects.create(story=story, categories=["IAB20"], risk_tier="low")
    return story


def rule(brand, **kw):  # noqa: ANN001, ANN003, ANN201
    return AutoApproveRule.objects.create(brand=brand, **{"max_risk_tier": "low", "min_similarity": 0.95, **kw})


def test_a_matching_rule_approves_with_no_reviewer(surf, story):
    the_rule = rule(surf)
    option = make_option(story, surf)
    review.options_after_store(options=[option])
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.APPROVED and option.reviewed_by is None
    decision = PlacementDecision.objects.get(option=option)
    assert decision.action == "auto" and decision.rule == the_rule and decision.reviewer is None


@pytest.mark.parametrize(
    ("rule_fields", "option_fields", "tier"),
    [
        ({"is_active": False}, {}, "low"),  # switched off
        ({}, {"placement_similarity": {"rouge_l": 0.94}}, "low"),  # below the rule's similarity
        ({}, {"placement_similarity": {}}, "low"),  # no similarity measured
        ({}, {}, "medium"),  # the story's tier above the rule's
        ({"max_risk_tier": "high"}, {}, "high"),  # the rule allows it, the brand's suitability (low) does not
        ({}, {"text": "She waxed her Tidewave board near the violence.", "placed": False}, "low"),
    ],
)
def test_no_approval_when_the_rule_does_not_match_or_a_finding_exists(surf, story, rule_fields, option_fields, tier):
    if "violence" in option_fields.get("text", ""):
        surf.banned_themes = ["violence"]
        surf.save()
    StorySuitability.objects.filter(story=story).update(risk_tier=tier)
    rule(surf, **rule_fields)
    option = make_option(story, surf, **option_fields)
    review.options_after_store(options=[option])
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING
    assert not PlacementDecision.objects.exists()


def test_an_unclassified_story_is_never_auto_approved(surf, story):
    StorySuitability.objects.filter(story=story).delete()
    rule(surf)
    option = make_option(story, surf)
    review.options_after_store(options=[option])
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING


def test_an_approval_refused_by_the_budget_leaves_it_pending(surf, story):
    campaign = live_campaign(surf, pricing="fixed", price=Decimal("10"), budget_total=Decimal("5"))
    rule(surf)
    option = make_option(story, surf, campaign=campaign)
    review.options_after_store(options=[option])
    option.refresh_from_db()
    assert option.review_status == ReviewStatus.PENDING and not PlacementDecision.objects.exists()
    campaign.refresh_from_db()
    assert campaign.spent == 0


def test_only_one_option_of_a_request_is_auto_approved(surf, story):
    rule(surf)
    first = make_option(story, surf)
    second = make_option(story, surf, index=1, request=first.request)
    review.options_after_store(options=[first, second])
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.review_status, second.review_status) == (ReviewStatus.APPROVED, ReviewStatus.PENDING)


def test_plain_options_are_left_alone(story):
    from writer.models import GenerationOption, GenerationRequest

    request = GenerationRequest.objects.create(
        story=story, requested_by=story.owner, kind="author", engine="vllm", max_new_tokens=24, next_number=3
    )
    plain = GenerationOption.objects.create(request=request, index=0, text="Plain.", review_status="none")
    review.options_after_store(options=[plain])
    plain.refresh_from_db()
    assert plain.policy_findings == [] and plain.review_status == "none"


# --- The pages -------------------------------------------------------------------------------------


def test_a_manager_lists_adds_and_switches_off_rules(surf, client_for):
    mia = client_for("mia")
    url = reverse("brands:auto_approve_rules", args=[surf.slug])
    assert "No rule yet" in mia.get(url).content.decode()
    assert mia.post(url, {"max_risk_tier": "medium", "min_similarity": "0.9"}).status_code == 302
    the_rule = AutoApproveRule.objects.get(brand=surf)
    assert (the_rule.max_risk_tier, the_rule.min_similarity, the_rule.is_active) == ("medium", 0.9, True)
    assert "Switch off" in mia.get(url).content.decode()
    switch = reverse("brands:auto_approve_switch", args=[surf.slug, the_rule.pk])
    assert mia.post(switch, {"active": "0"}).status_code == 302
    the_rule.refresh_from_db()
    assert not the_rule.is_active


@pytest.mark.parametrize(
    "data",
    [
        {"max_risk_tier": "floor", "min_similarity": "0.9"},
        {"max_risk_tier": "low", "min_similarity": "1.5"},
        {"max_risk_tier": "low", "min_similarity": "-1"},
        {"max_risk_tier": "low", "min_similarity": "lots"},
    ],
)
def test_bad_rules_are_refused(surf, client_for, data):
    response = client_for("mia").post(reverse("brands:auto_approve_rules", args=[surf.slug]), data)
    assert response.status_code == 400
    assert not AutoApproveRule.objects.exists()


def test_the_service_refuses_bad_values_and_too_many_rules(surf, users):
    with pytest.raises(ApplicationError, match="floor tier is never sold"):
        review.auto_approve_rule_create(brand=surf, user=users["mia"], max_risk_tier="floor", min_similarity=0.9)
    with pytest.raises(ApplicationError, match="from 0 to 1"):
        review.auto_approve_rule_create(brand=surf, user=users["mia"], max_risk_tier="low", min_similarity=float("nan"))
    for _ in range(review.MAX_RULES):
        review.auto_approve_rule_create(brand=surf, user=users["mia"], max_risk_tier="low", min_similarity=0.9)
    with pytest.raises(ApplicationError, match="rules already"):
        review.auto_approve_rule_create(brand=surf, user=users["mia"], max_risk_tier="low", min_similarity=0.9)
