"""Browser journey (issue 17): a reader signs up saying they are under 18, asks for a personalised chapter
of an opted-in story that a brand with a live campaign matches, and gets a chapter with no placement."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from brands import services as brand_services
from brands.models import AgeBracket, ReaderSponsorshipPreference
from tests.factories import PASSWORD, ChapterFactory, StoryFactory, UserFactory, approved_brand, live_campaign
from writer.models import GenerationRequest

pytestmark = pytest.mark.browser
GENERATION_TIMEOUT_MS = 300_000  # as test_journeys.py: the vLLM CPU server can be slow on a busy day


def _opted_in_surf_story():  # noqa: ANN202
    author = UserFactory(username="ava_age", roles=["author"])
    manager = UserFactory(username="bree_age", roles=["brand_manager"])
    story = StoryFactory(
        owner=author,
        title="Summer Swell",
        slug="summer-swell",
        genre="coming-of-age",
        tags=["seaside", "summer", "friendship"],
        summary="Two friends spend the summer in a windy beach town, learning to ride the waves.",
        setting="Porthwen, a small harbour town with a long sandy beach.",
    )
    ChapterFactory(
        story=story, number=1,
        text="Mara paddled out past the breakers. The waves rolled in green and cold, and Theo whooped from the sand.",
    )  # fmt: skip
    surf = approved_brand(
        name="Tidewave", managers=[manager],
        description="Surfboards, wetsuits and beach gear: learning to surf, summers by the sea.",
    )  # fmt: skip
    brand_services.asset_create(
        brand=surf, kind="product", name="Tidewave Glide", description="A soft-top longboard for beginners.",
        terms=["Tidewave Glide"],
    )  # fmt: skip
    brand_services.assets_embed_missing()
    live_campaign(surf)
    brand_services.story_brand_settings_update(story=story, opt_in=True)
    return story


def test_a_reader_under_18_signs_up_and_gets_no_placement(open_journey):
    story = _opted_in_surf_story()
    j = open_journey("under-18-reader")
    page = j.page

    j.goto("/signup/")
    expect(page.get_by_text("Are you 18 or older?")).to_be_visible()
    page.fill("#id_username", "teo")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.check("input[name=role][value=reader]")
    j.shot("signup")
    page.get_by_role("button", name="Create my account").click()
    expect(page.locator(".errorlist")).to_contain_text("Readers: tell us whether you are 18 or older.")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.check("input[name=adult][value=no]")
    page.get_by_role("button", name="Create my account").click()
    expect(page.locator(".topbar .who")).to_contain_text("teo")
    assert ReaderSponsorshipPreference.objects.get(user__username="teo").age_bracket == AgeBracket.UNDER_18

    # The sponsorship page says what they told us, and offers no way to undo it.
    j.goto("/brands/sponsorship/")
    expect(page.locator("#reader-age")).to_contain_text("under 18")
    j.shot("sponsorship")

    j.goto(story.get_absolute_url())
    page.fill("#id_preference", "Mara tries a bigger wave at sunset.")
    page.get_by_role("button", name="Write my chapter").click()
    body = page.locator("#request-body")
    expect(body.locator("article.option").first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(body.locator(".disclosure")).to_have_count(0)
    expect(body).not_to_contain_text("waiting for the brand")
    j.shot("chapter-without-placement")
    request = GenerationRequest.objects.get(requested_by__username="teo")
    assert request.status == GenerationRequest.Status.SUCCEEDED
    assert request.use_brands is False  # no brand brief, no placement, whatever the story allowed
    assert not request.options.exclude(brand=None).exists()
