"""Matching on the real PostgreSQL + pgvector with real all-MiniLM-L6-v2 vectors."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from brands import matching, selectors, services
from brands.embedder import get_embedder
from brands.models import BrandAsset, BrandSuitability, RiskTier
from tests.factories import ChapterFactory, StoryFactory, approved_brand, live_campaign

SURF = "Tidewave Surf Co."
BANK = "Northstar Bank"
BOBA = "Bobalicious"


@pytest.fixture
def brands(users):
    """Three brands managed by mia, every asset embedded (the on-commit tasks never run under `db`)."""
    mia = users["mia"]
    surf = approved_brand(
        name=SURF,
        managers=[mia],
        description="Surfboards, wetsuits and beach gear for learning to surf on cold-water coasts.",
        target_audience="Teens who love the beach and the waves.",
        banned_themes=["Violence", "self-harm", "drugs"],
    )
    services.asset_create(
        brand=surf,
        kind="product",
        name="Tidewave Glide",
        description="A soft-top longboard for beginners on small waves.",
        terms=["Tidewave Glide"],
    )
    services.asset_create(
        brand=surf,
        kind="mascot",
        name="Otis the Otter",
        description="A cheeky sea otter who floats on his back in the surf.",
        terms=["Otis the Otter", "Otis"],
    )
    bank = approved_brand(
        name=BANK,
        managers=[mia],
        description="A mobile bank for first salaries: savings pots, budgeting and student accounts.",
        target_audience="Students and young professionals.",
        banned_themes=["gambling", "crime"],
    )
    services.asset_create(
        brand=bank,
        kind="product",
        name="Northstar Starter account",
        description="A free current account with a savings pot and a budgeting app.",
        terms=["Northstar Starter"],
    )
    boba = approved_brand(
        name=BOBA,
        managers=[mia],
        description="Bubble tea shops and market stalls: milk teas, fruit teas and chewy tapioca pearls.",
        banned_themes=["alcohol", "horror"],
    )
    services.asset_create(
        brand=boba,
        kind="slogan",
        name="Pop the pearl!",
        description="Said when friends share a bubble tea.",
        terms=["Pop the pearl"],
    )
    assert services.assets_embed_missing() == 4
    for brand in (surf, bank, boba):
        live_campaign(brand)  # matching offers only assets in play in a live campaign (issue 17)
        # These tests are about banned themes: the brands accept every risk tier short of the floor, so a
        # story's tier (brands.suitability) never hides which brand a theme blocks.
        BrandSuitability.objects.create(brand=brand, max_risk_tier=RiskTier.HIGH)
    return {"surf": surf, "bank": bank, "boba": boba}


def seaside_story(owner, **overrides):  # noqa: ANN001, ANN201
    fields = dict(
        owner=owner,
        title="Summer Swell",
        genre="coming-of-age",
        tags=["seaside", "summer", "friendship"],
        summary="Two friends spend the summer in a windy beach town, swimming at dawn and learning to ride the waves.",
        setting="Porthwen, a small harbour town on the Cornish coast, with a long sandy beach.",
        characters="Mara (15, fearless); Theo (16, cautious).",
        intent_notes="Warm and funny.",
    )
    fields.update(overrides)
    story = StoryFactory(**fields)
    ChapterFactory(
        story=story,
        number=1,
        text="Mara paddled out past the breakers. The waves rolled in green and cold, and her board was slick "
        "with salt water. Theo whooped from the sand as she stood up for the first time.",
    )
    return story


def names(matches) -> list[str]:  # noqa: ANN001
    return [m.brand.name for m in matches]


def test_a_seaside_story_matches_the_surf_brand_before_the_bank(brands, users):
    story = seaside_story(users["alice"])
    every = matching.brand_match_for_story(story=story, k=10, max_distance=2.0)
    by_brand = {}
    for m in every:
        by_brand.setdefault(m.brand.name, m.distance)  # nearest first: the first is the brand's best
    assert every[0].brand.name == SURF
    assert by_brand[SURF] < by_brand[BANK]
    assert [m.distance for m in every] == sorted(m.distance for m in every)
    # At the default maximum the bank is too far to count as a match at all.
    default = matching.brand_match_for_story(story=story)
    assert default and default[0].brand.name == SURF
    assert BANK not in names(default)
    assert all(m.distance <= 0.75 for m in default)


def test_a_readers_preference_moves_the_match(brands, users):
    story = seaside_story(users["alice"])
    plain = {
        m.asset.name: m.distance for m in matching.brand_match_for_story(story=story, k=10, max_distance=2)
    }
    wish = "Mara and Theo share a bubble tea with tapioca pearls at the night market stall."
    moved = {
        m.asset.name: m.distance
        for m in matching.brand_match_for_story(story=story, preference=wish, k=10, max_distance=2)
    }
    assert moved["Pop the pearl!"] < plain["Pop the pearl!"]


@pytest.mark.parametrize(
    ("overrides", "preference", "blocked"),
    [
        ({"tags": ["seaside", "violence"]}, "", SURF),  # a tag equal to a banned theme (stored as "violence")
        ({"genre": "horror"}, "", BOBA),  # the genre
        (
            {"summary": "A summer by the sea, and a slow recovery from self harm."},
            "",
            SURF,
        ),  # "self-harm" in a summary
        ({}, "Theo sneaks a bottle of alcohol to the beach party.", BOBA),  # the reader's wish
        ({"intent_notes": "Drugs are mentioned."}, "", SURF),  # the author's notes, a plural
    ],
)
def test_a_banned_theme_in_the_story_never_matches_that_brand(brands, users, overrides, preference, blocked):
    story = seaside_story(users["alice"], **overrides)
    matches = matching.brand_match_for_story(story=story, preference=preference, k=10, max_distance=2.0)
    assert blocked not in names(matches)
    assert matches, "the other brands still match"
    reasons = matching.brands_blocked_for_story(story=story, preference=preference)
    assert any(
        r.startswith("banned theme") for r in reasons[brands[{SURF: "surf", BOBA: "boba"}[blocked]].pk]
    )


def test_a_banned_theme_in_the_latest_chapter_blocks_the_brand(brands, users):
    story = seaside_story(users["alice"])
    ChapterFactory(
        story=story, number=2, text="At the harbour the fight turned to real violence, and Theo ran."
    )
    assert SURF not in names(matching.brand_match_for_story(story=story, k=10, max_distance=2.0))


def test_a_theme_matches_whole_words_only(brands, users):
    # "crime" is banned by the bank; "crimean" is another word and must not block it.
    story = seaside_story(users["alice"], summary="A summer by the Crimean sea.")
    assert brands["bank"].pk not in matching.brands_blocked_for_story(story=story)
    assert matching.banned_themes_hit(text="self_harm and SELF HARM", themes=["self-harm"]) == ["self-harm"]
    assert matching.banned_themes_hit(text="a drugstore", themes=["drugs", "drug"]) == []


def test_author_exclusions_hold(brands, users):
    story = seaside_story(users["alice"])
    services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[brands["surf"].pk])
    matches = matching.brand_match_for_story(story=story, k=10, max_distance=2.0)
    assert SURF not in names(matches)
    assert {BANK, BOBA} <= set(names(matches))
    assert matching.brands_blocked_for_story(story=story)[brands["surf"].pk] == ["excluded by the author"]
    # Undoing the exclusion brings the brand back.
    services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[])
    assert matching.brand_match_for_story(story=story)[0].brand.name == SURF


def test_max_distance_keeps_weak_matches_out(brands, users, settings):
    story = StoryFactory(
        owner=users["alice"],
        genre="military",
        tags=["war", "winter"],
        summary="A tank crew crosses a frozen front in 1943.",
        setting="The eastern front, winter 1943.",
    )
    ChapterFactory(story=story, number=1, text="Shells fell on the ridge; the gunner loaded another round.")
    everything = matching.brand_match_for_story(story=story, k=10, max_distance=2.0)
    assert len(everything) == 4  # nothing is blocked: only distance decides
    assert min(m.distance for m in everything) > settings.BRAND_MATCH_MAX_DISTANCE
    assert matching.brand_match_for_story(story=story, k=10) == []
    # The setting is the default; an argument overrides it.
    settings.BRAND_MATCH_MAX_DISTANCE = 2.0
    assert len(matching.brand_match_for_story(story=story, k=10)) == 4
    cut = sorted(m.distance for m in everything)[1]
    assert len(matching.brand_match_for_story(story=story, k=10, max_distance=cut)) == 2


def test_inactive_brands_and_other_embedders_vectors_never_match(brands, users):
    story = seaside_story(users["alice"])
    services.brand_update(brand=brands["surf"], is_active=False)
    assert SURF not in names(matching.brand_match_for_story(story=story, k=10, max_distance=2.0))
    services.brand_update(brand=brands["surf"], is_active=True)
    # A vector made by another model lives in another space: it is ignored until re-embedded.
    BrandAsset.objects.filter(brand=brands["surf"]).update(embedding_model="openai:some-other-model")
    assert SURF not in names(matching.brand_match_for_story(story=story, k=10, max_distance=2.0))
    assert services.assets_embed_missing() == 2
    assert matching.brand_match_for_story(story=story)[0].brand.name == SURF


def test_the_hnsw_index_serves_the_query_and_filters_still_fill_k(brands, users):
    """With the index in use, excluded assets nearest to the story must not leave fewer than k results."""
    story = seaside_story(users["alice"])
    # 110 surf boards of an excluded brand: more than the 100 candidates (ef_search) of one HNSW scan,
    # and all nearer to the story than every allowed asset but one.
    crowd = approved_brand(name="Surf Crowd", managers=[users["mia"]], description="Surf boards.")
    BrandAsset.objects.bulk_create(
        BrandAsset(
            brand=crowd,
            kind="product",
            name=f"Crowd board {i}",
            terms=[f"Crowd board {i}"],
            description="A surfboard for the waves at the beach.",
        )
        for i in range(110)
    )
    assert services.assets_embed_missing() == 110
    services.story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=[crowd.pk])
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # 114 rows: without this the planner reads the table
    try:
        embedder = get_embedder()
        query = embedder.embed(matching.story_context_parts(story))[0]
        plan = matching.nearest_assets_queryset(
            query=query, model_id=embedder.model_id, excluded_brand_ids=[crowd.pk], max_distance=2.0
        )[:3].explain()
        assert "brand_asset_embedding_hnsw" in plan
        matches = matching.brand_match_for_story(story=story, k=3, max_distance=2.0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
    assert len(matches) == 3
    assert "Surf Crowd" not in names(matches)


def test_match_brands_command_embeds_missing_assets_and_prints_json(brands, users):
    story = seaside_story(users["alice"])  # not opted in: the command still shows matches
    BrandAsset.objects.update(embedding=None, embedding_model="", embedded_text_hash="")
    out, err = StringIO(), StringIO()
    call_command("match_brands", "--story", story.slug, "--k", "2", stdout=out, stderr=err)
    payload = json.loads(out.getvalue())
    assert "Embedded 4 brand asset(s)" in err.getvalue()
    assert "has not opted in to brand placements" in err.getvalue()
    assert 1 <= len(payload) <= 2
    assert all(set(row) == {"brand", "asset", "distance"} for row in payload)
    assert payload[0]["brand"] == SURF
    assert [r["distance"] for r in payload] == sorted(r["distance"] for r in payload)
    assert not BrandAsset.objects.filter(embedding__isnull=True).exists()
    # A preference moves the match; an unknown slug is a clear error.
    out = StringIO()
    call_command(
        "match_brands",
        "--story",
        story.slug,
        "--preference",
        "bubble tea with tapioca pearls",
        "--max-distance",
        "2",
        stdout=out,
    )
    assert BOBA in [r["brand"] for r in json.loads(out.getvalue())]
    # Once the author opts in, nothing is said about it.
    matching.story_brands_opt_in(story=story)
    err = StringIO()
    call_command("match_brands", "--story", story.slug, stdout=StringIO(), stderr=err)
    assert "opted in" not in err.getvalue()
    with pytest.raises(CommandError, match="No story"):
        call_command("match_brands", "--story", "no-such-story")


def test_seed_brands_is_idempotent_and_its_surf_brand_fits_a_seaside_story(users):
    from brands.demo import seed_brands

    first = seed_brands(users["mia"])
    second = seed_brands(users["mia"])
    assert [b.pk for b in first] == [b.pk for b in second] and len(first) >= 3
    assert all(b.assets.count() >= 2 and b.banned_themes for b in first)
    assert {b.name for b in selectors.brand_list_for_manager(user=users["mia"])} >= {SURF, BANK, BOBA}
    services.assets_embed_missing()
    matches = matching.brand_match_for_story(story=seaside_story(users["alice"]), k=10, max_distance=2.0)
    assert matches[0].brand.name == SURF
