"""Browser journey: a sponsored chapter's disclosure and its viewable impression (issue 17), in real
Chromium against the live app.

ross (a reader) opens chapter 4 of alice's published story, an approved Tidewave placement of a live CPM
campaign: he sees "Includes a paid placement by Tidewave" above the text, opens "Why am I seeing this?"
and reads its parameters; after a second with the placed passage on screen, static/js/impressions.js
posts the impression: one PlacementView row and one CPM charge, and one DisclosureOpen for the panel.
Then uma, who said she is under 18, opens the same chapter: no label, no brand, the chapter as written
without it, and nothing posted.

Nothing here asks the writer for text: no model server (`vllm_settings` is the plain settings).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from brands.models import (
    AgeBracket,
    CampaignSpend,
    DisclosureOpen,
    PlacementView,
    ReaderSponsorshipPreference,
)
from tests.brands.test_measurement import PLACED_SENTENCE, sponsored_world
from tests.factories import PASSWORD, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def vllm_settings(settings):
    """This journey never generates: no model server."""
    return settings


def _wait_for(check, seconds: float = 15.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_a_reader_sees_the_disclosure_opens_the_panel_and_the_impression_is_recorded(open_journey):
    users = {
        "alice": UserFactory(username="alice", roles=["author"]),
        "rita": UserFactory(username="rita", roles=["reader"]),
        "mia": UserFactory(username="mia", roles=["brand_manager"]),
    }
    world = sponsored_world(users)
    ross = UserFactory(username="ross", roles=["reader"])

    j = open_journey("disclosure")
    j.log_in("ross", PASSWORD)
    j.goto(world.chapter_url)
    page = j.page
    label = page.locator(".sponsored-disclosure .disclosure")
    expect(label).to_have_text("Includes a paid placement by Tidewave")
    expect(page.locator(".paid-by")).to_contain_text("Summer swell")
    expect(page.locator(".placed-passage")).to_have_text(PLACED_SENTENCE)  # impressions.js found the passage
    j.shot("sponsored-chapter")

    page.get_by_text("Why am I seeing this?").click()
    panel = page.locator("details.why-this")
    expect(panel).to_have_attribute("open", "")
    expect(panel.locator(".why-category")).to_contain_text("not classified yet")
    expect(panel.locator(".why-opt-in")).to_contain_text("The author opted this story in")
    expect(panel.locator(".why-settings")).to_contain_text("sponsored chapters are on")
    expect(panel.locator(".why-no-sensitive")).to_be_visible()
    j.shot("why-am-i-seeing-this")

    # The passage has been on screen since the page loaded: after a second, one impression is posted.
    expect(page.locator(".prose[data-impression-state='sent']")).to_have_count(1, timeout=15_000)
    assert _wait_for(lambda: PlacementView.objects.filter(user=ross, option=world.author_option).count() == 1)
    assert CampaignSpend.objects.filter(user=ross, kind="impression").count() == 1
    assert _wait_for(lambda: DisclosureOpen.objects.filter(user=ross).count() == 1)

    # A reload posts again; the server still counts one impression per reader and chapter.
    page.reload()
    expect(page.locator(".prose[data-impression-state='sent']")).to_have_count(1, timeout=15_000)
    assert PlacementView.objects.filter(user=ross).count() == 1
    assert CampaignSpend.objects.filter(user=ross).count() == 1
    j.shot("after-reload")

    # A reader under 18 gets the chapter as written without the brand.
    uma = UserFactory(username="uma", roles=["reader"])
    ReaderSponsorshipPreference.objects.create(user=uma, age_bracket=AgeBracket.UNDER_18)
    k = open_journey("disclosure-under-18")
    k.log_in("uma", PASSWORD)
    k.goto(world.chapter_url)
    expect(k.page.locator(".prose")).to_contain_text("The tide came in slowly.")
    expect(k.page.locator("body")).not_to_contain_text("Tidewave")
    expect(k.page.locator(".sponsored-disclosure")).to_have_count(0)
    k.shot("under-18-reader")
    time.sleep(1.5)
    assert PlacementView.objects.filter(user=uma).count() == 0
