"""Suitability (issue 17): stories classified with the real embedder (MiniLM) on PostgreSQL, brands'
choices, the author's review page, and what blocks a brand."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from brands import iab, matching
from brands.models import BrandSuitability, RiskTier, StorySuitability
from brands.suitability import (
    brand_suitability_update,
    brands_blocked_by_suitability,
    risk_tier_from_words,
    story_suitability_classify,
    story_suitability_get,
    story_suitability_reset,
    story_suitability_set,
)
from mesu_web.errors import ApplicationError
from tests.factories import ChapterFactory, StoryFactory, approved_brand
from writer import services as writer_services

pytestmark = pytest.mark.django_db

CLINIC_CHAPTER = (
    "Dr Okafor checked the patient's chart and ordered another blood test. The waiting room of the clinic was "
    "full of coughing children, and Nurse Ada prepared the injections while the doctor wrote prescriptions."
)


def clinic_story(owner, **overrides):  # noqa: ANN001, ANN201
    fields = dict(
        owner=owner,
        title="Night Shift",
        genre="medical drama",
        tags=["clinic", "nurses"],
        summary="A young nurse starts work at a small rural clinic where the only doctor is overworked.",
        setting="A village health clinic with six beds.",
        characters="Ada (nurse, new); Dr Okafor (the doctor).",
        intent_notes="Patients, diagnoses and the long night shift.",
    )
    fields.update(overrides)
    story = StoryFactory(**fields)
    ChapterFactory(story=story, number=1, text=CLINIC_CHAPTER)
    return story


def seaside_story(owner):  # noqa: ANN001, ANN201
    story = StoryFactory(owner=owner)  # the factory's cosy seaside slice of life
    ChapterFactory(story=story, number=1, text="Lou opened the stall at dusk. The rain smelled of salt.")
    return story


@pytest.fixture
def brand_pair(users):
    """Two brands of mia's: `careful` without a suitability row (low tier, no health), `health` opted in."""
    careful = approved_brand(name="Careful Co", managers=[users["mia"]], description="Tea.")
    health = approved_brand(name="Vita Plus", managers=[users["mia"]], description="Vitamins.")
    brand_suitability_update(
        brand=health, category="IAB7", accepted_categories=[], max_risk_tier=RiskTier.MEDIUM,
        allow_health=True, allow_politics=False, review_sla_days=3,
    )  # fmt: skip
    return careful, health


def test_a_clinic_story_is_health_and_blocks_only_brands_without_the_opt_in(users, brand_pair):
    careful, health = brand_pair
    story = clinic_story(users["alice"])
    blocked = brands_blocked_by_suitability(story=story)
    row = story_suitability_get(story=story)
    assert "IAB7" in row.categories
    assert row.risk_tier == RiskTier.LOW  # no risk word: a "blood test" is not blood
    assert row.source == StorySuitability.Source.CLASSIFIED and row.text_hash and row.classified_at
    assert row.evidence["scores"]["IAB7"] >= 0.4
    assert careful.pk in blocked and health.pk not in blocked
    assert "health" in blocked[careful.pk][0] and "Health & Medicine (IAB7)" in blocked[careful.pk][0]
    # matching's own list says the same, next to banned themes and exclusions
    assert any("health" in r for r in matching.brands_blocked_for_story(story=story)[careful.pk])


def test_a_seaside_story_is_not_health_nor_politics_and_blocks_nobody(users, brand_pair):
    story = seaside_story(users["alice"])
    assert brands_blocked_by_suitability(story=story) == {}
    row = story_suitability_get(story=story)
    assert row.risk_tier == RiskTier.LOW
    assert not set(row.categories) & (iab.HEALTH_CODES | iab.POLITICS_CODES)


def test_politics_blocks_unless_the_brand_opts_in(users, brand_pair):
    careful, health = brand_pair
    story = StoryFactory(
        owner=users["alice"], genre="political drama", tags=["election"], title="The Vote",
        summary="A young candidate runs for mayor against a corrupt party machine.",
        setting="City hall during the election.", characters="Marta (candidate).", intent_notes="Politics.",
    )  # fmt: skip
    ChapterFactory(
        story=story, number=1, text="The polls opened at seven. Marta promised voters the law would pass."
    )
    blocked = brands_blocked_by_suitability(story=story)
    assert "IAB11" in story_suitability_get(story=story).categories
    assert careful.pk in blocked and health.pk in blocked
    assert "politics" in blocked[health.pk][0]
    brand_suitability_update(
        brand=health, category="IAB7", accepted_categories=[], max_risk_tier=RiskTier.MEDIUM,
        allow_health=True, allow_politics=True, review_sla_days=3,
    )  # fmt: skip
    assert health.pk not in brands_blocked_by_suitability(story=story)


def test_the_floor_tier_blocks_every_brand_whatever_it_accepts(users, brand_pair):
    careful, health = brand_pair
    brand_suitability_update(
        brand=careful, category="", accepted_categories=[], max_risk_tier=RiskTier.HIGH,
        allow_health=True, allow_politics=True, review_sla_days=3,
    )  # fmt: skip
    story = seaside_story(users["alice"])
    ChapterFactory(
        story=story, number=2,
        text="The terrorist attack on the harbour was planned for weeks. Terrorism had come to the town.",
    )  # fmt: skip
    blocked = brands_blocked_by_suitability(story=story)
    row = story_suitability_get(story=story)
    assert row.risk_tier == RiskTier.FLOOR
    assert row.evidence["themes"]["floor"]["count"] >= 2
    assert blocked[careful.pk] == ["the story is in the floor tier (never monetised)"]
    assert blocked[health.pk] == ["the story is in the floor tier (never monetised)"]


def test_the_tier_comes_from_words_and_rises_where_they_are_dense():
    assert risk_tier_from_words("A quiet walk by the sea.")[0] == RiskTier.LOW
    tier, themes = risk_tier_from_words("He killed the guard. " + "Calm words. " * 200)
    assert tier == RiskTier.MEDIUM and themes["violence"]["words"] == {"killed": 1}
    assert (
        risk_tier_from_words("Murder, bloodshed, a corpse, a killing, he stabbed him.")[0]
        == RiskTier.HIGH
    )
    assert risk_tier_from_words("Pip never read pornography.")[0] == RiskTier.HIGH  # once: high, not floor
    assert risk_tier_from_words("killjoy bloodhound sextant blood test")[0] == RiskTier.LOW  # whole words only


def test_a_tier_above_the_brands_highest_blocks_it(users, brand_pair):
    careful, health = brand_pair
    story = seaside_story(users["alice"])
    ChapterFactory(
        story=story, number=2, text="Someone had killed the harbour master, and there was blood on the quay."
    )
    blocked = brands_blocked_by_suitability(story=story)
    assert story_suitability_get(story=story).risk_tier == RiskTier.MEDIUM
    assert "risk tier (medium risk) is above the brand's highest (low risk)" in blocked[careful.pk][0]
    assert health.pk not in blocked  # it accepts medium


def test_accepted_categories_block_stories_outside_them(users, brand_pair):
    careful, _ = brand_pair
    brand_suitability_update(
        brand=careful, category="", accepted_categories=["IAB19"], max_risk_tier=RiskTier.LOW,
        allow_health=False, allow_politics=False, review_sla_days=3,
    )  # fmt: skip
    story = StoryFactory(
        owner=users["alice"], genre="coming of age", tags=["surfing", "summer"], title="Swell",
        summary="A teen learns to surf one summer on the cold coast.", setting="A beach town.",
    )  # fmt: skip
    ChapterFactory(story=story, number=1, text="The waves rolled in at sunrise. Kai paddled out on his board.")
    reasons = brands_blocked_by_suitability(story=story)[careful.pk]
    assert "not among the brand's accepted ones" in reasons[0]
    brand_suitability_update(
        brand=careful, category="", accepted_categories=list(story_suitability_get(story=story).categories),
        max_risk_tier=RiskTier.LOW, allow_health=False, allow_politics=False, review_sla_days=3,
    )  # fmt: skip
    assert careful.pk not in brands_blocked_by_suitability(story=story)


def test_a_changed_text_is_classified_again_but_an_unchanged_one_is_not(users, brand_pair):
    story = seaside_story(users["alice"])
    first = story_suitability_classify(story=story)
    again = story_suitability_classify(story=story)
    assert again.classified_at == first.classified_at  # nothing changed: no new classification
    chapter = story.chapters.get(number=1)
    writer_services.chapter_update(
        chapter=chapter, title=chapter.title, text=CLINIC_CHAPTER + " " + CLINIC_CHAPTER
    )
    changed = story_suitability_classify(story=story)
    assert changed.text_hash != first.text_hash and changed.classified_at > first.classified_at


def test_the_authors_choice_stands_until_reset(users, brand_pair):
    careful, health = brand_pair
    story = clinic_story(users["alice"])
    assert careful.pk in brands_blocked_by_suitability(story=story)
    story_suitability_set(story=story, categories=["IAB8"], risk_tier=RiskTier.LOW)
    ChapterFactory(story=story, number=2, text=CLINIC_CHAPTER)  # the text changes: still the author's word
    assert brands_blocked_by_suitability(story=story) == {}
    row = story_suitability_get(story=story)
    assert row.source == StorySuitability.Source.AUTHOR and row.categories == ["IAB8"]
    call_command("classify_stories", "--force", "--story", story.slug)
    assert story_suitability_get(story=story).categories == ["IAB8"]
    reset = story_suitability_reset(story=story)
    assert reset.source == StorySuitability.Source.CLASSIFIED and "IAB7" in reset.categories
    assert careful.pk in brands_blocked_by_suitability(story=story)


def test_an_author_may_declare_the_floor(users, brand_pair):
    story = seaside_story(users["alice"])
    story_suitability_set(story=story, categories=[], risk_tier=RiskTier.FLOOR)
    assert set(brands_blocked_by_suitability(story=story)) == {b.pk for b in brand_pair}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda s, b: story_suitability_set(story=s, categories=["IAB999"], risk_tier="low"),
            "Unknown story",
        ),
        (lambda s, b: story_suitability_set(story=s, categories=["IAB25-3"], risk_tier="low"), "floor-level"),
        (
            lambda s, b: story_suitability_set(story=s, categories=[], risk_tier="extreme"),
            "Unknown risk tier",
        ),
        (
            lambda s, b: brand_suitability_update(
                brand=b,
                category="",
                accepted_categories=[],
                max_risk_tier="floor",
                allow_health=False,
                allow_politics=False,
                review_sla_days=3,
            ),  # fmt: skip
            "never monetised",
        ),
        (
            lambda s, b: brand_suitability_update(
                brand=b,
                category="NOPE",
                accepted_categories=[],
                max_risk_tier="low",
                allow_health=False,
                allow_politics=False,
                review_sla_days=3,
            ),  # fmt: skip
            "Unknown brand",
        ),
        (
            lambda s, b: brand_suitability_update(
                brand=b,
                category="",
                accepted_categories=["IAB7", "bogus"],
                max_risk_tier="low",
                allow_health=False,
                allow_politics=False,
                review_sla_days=3,
            ),  # fmt: skip
            "Unknown accepted categories: bogus",
        ),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(users, brand_pair, call, message):
    careful, _ = brand_pair
    story = seaside_story(users["alice"])
    with pytest.raises(ApplicationError, match=message):
        call(story, careful)
    assert not StorySuitability.objects.filter(story=story).exists()
    assert not BrandSuitability.objects.filter(brand=careful).exists()


# --- Pages -------------------------------------------------------------------------------------------


def test_the_author_reviews_and_corrects_the_classification_on_the_page(users, client_for, brand_pair):
    story = clinic_story(users["alice"], is_published=False)
    client = client_for("alice")
    url = f"/brands/story/{story.slug}/suitability/"
    page = client.get(url)
    assert page.status_code == 200 and b"Not classified yet" in page.content
    assert not StorySuitability.objects.exists()  # a GET never classifies
    client.post(f"{url}reset/")
    page = client.get(url)
    assert b"Health &amp; Medicine (IAB7)" in page.content and b"Closest categories" in page.content
    response = client.post(url, {"categories": ["IAB8", "IAB14"], "risk_tier": "medium"})
    assert response.status_code == 302
    row = story_suitability_get(story=story)
    assert (row.categories, row.risk_tier, row.source) == (["IAB8", "IAB14"], "medium", "author")
    # bad input: the page says why and nothing changes
    bad = client.post(url, {"categories": ["IAB999"], "risk_tier": "low"})
    assert bad.status_code == 200 and b"Unknown category" in bad.content
    assert story_suitability_get(story=story).categories == ["IAB8", "IAB14"]
    assert b"Reset to the classifier" in client.get(url).content


def test_another_authors_story_is_not_found_or_refused(users, client_for):
    draft = seaside_story(users["alice"])
    draft.is_published = False
    draft.save()
    bob = client_for("bob")
    assert bob.get(f"/brands/story/{draft.slug}/suitability/").status_code == 404
    assert bob.post(f"/brands/story/{draft.slug}/suitability/", {"risk_tier": "low"}).status_code == 404
    assert bob.post(f"/brands/story/{draft.slug}/suitability/reset/").status_code == 404
    published = seaside_story(users["alice"])
    assert bob.post(f"/brands/story/{published.slug}/suitability/", {"risk_tier": "low"}).status_code == 403
    assert not StorySuitability.objects.exists()


def test_the_brand_manager_sets_what_the_brand_accepts(users, client_for, brand_pair):
    careful, _ = brand_pair
    client = client_for("mia")
    url = f"/brands/{careful.slug}/suitability/"
    assert client.get(url).status_code == 200
    data = {"category": "IAB8", "accepted_categories": ["IAB8", "IAB20"], "max_risk_tier": "medium",
            "allow_health": "on", "review_sla_days": "5"}  # fmt: skip
    assert client.post(url, data).status_code == 302
    row = BrandSuitability.objects.get(brand=careful)
    assert (row.category, row.accepted_categories, row.max_risk_tier) == ("IAB8", ["IAB8", "IAB20"], "medium")
    assert row.allow_health and not row.allow_politics and row.review_sla_days == 5
    for bad, says in (
        ({**data, "max_risk_tier": "floor"}, b"The floor tier is never monetised"),
        ({**data, "accepted_categories": ["IAB26"]}, b"Unknown category"),
        ({**data, "review_sla_days": "0"}, b"greater than or equal to 1"),
    ):
        page = client.post(url, bad)
        assert page.status_code == 200 and says in page.content
    assert BrandSuitability.objects.get(brand=careful).max_risk_tier == "medium"
    assert client_for("rita").get(url).status_code == 403


def test_the_pages_link_to_each_other(users, client_for, brand_pair):
    careful, _ = brand_pair
    story = seaside_story(users["alice"])
    settings_page = client_for("alice").get(f"/brands/story/{story.slug}/settings/")
    assert f"/brands/story/{story.slug}/suitability/".encode() in settings_page.content
    assert (
        f"/brands/{careful.slug}/suitability/".encode()
        in client_for("mia").get(f"/brands/{careful.slug}/").content
    )
