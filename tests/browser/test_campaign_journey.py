"""Browser journey (issue 17): a brand manager creates a campaign, in real Chromium against the live app.

mina manages Saltwick Lanterns (two assets). From the brand's page she opens its campaigns, creates one
(assets in play, flight dates, budgets, CPM price), is told plainly when its last day comes before its
first, fixes it, activates the draft, and finds it listed as live with its spend against its budget.

Nothing here asks the writer for text, so the vLLM server is not started (as in test_rating_journey.py).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from brands import services as brand_services
from brands.models import Campaign
from tests.factories import PASSWORD, UserFactory, approved_brand

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def vllm_settings(settings):
    """This journey never generates: no model server."""
    return settings


def test_brand_manager_creates_activates_and_sees_a_campaign(open_journey):
    manager = UserFactory(username="mina", password=PASSWORD, roles=["brand_manager"])
    brand = approved_brand(
        name="Saltwick Lanterns", managers=[manager], description="Storm lanterns for harbours and night markets."
    )
    brand_services.asset_create(brand=brand, kind="product", name="Saltwick storm lantern", terms="Saltwick lantern")
    brand_services.asset_create(brand=brand, kind="mascot", name="Wick the gull", terms="Wick the gull")
    today = timezone.localdate()

    j = open_journey("campaign-manager")
    page = j.page
    j.log_in("mina", PASSWORD)
    j.goto(f"/brands/{brand.slug}/")
    page.get_by_role("link", name="Campaigns", exact=True).click()
    expect(page.locator("main")).to_contain_text("No campaign yet")
    page.get_by_role("link", name="New campaign").click()

    page.fill("#id_name", "Winter harbour nights")
    page.fill("#id_objective", "Lanterns for the dark evenings")
    page.get_by_label("Saltwick storm lantern").check()
    page.get_by_label("Wick the gull").check()
    page.fill("#id_starts_on", (today + timedelta(days=3)).isoformat())
    page.fill("#id_ends_on", today.isoformat())  # before the first day: refused with the reason
    page.fill("#id_budget_total", "2500")
    page.fill("#id_budget_daily", "150")
    page.select_option("#id_pricing", "cpm")
    page.fill("#id_price", "6.50")
    page.select_option("#id_pacing", "even")
    page.fill("#id_cap_per_reader_per_day", "2")
    page.get_by_role("button", name="Create the campaign").click()
    expect(page.locator("main")).to_contain_text("before it starts")
    assert not Campaign.objects.filter(brand=brand).exists()
    j.shot("end-before-start")

    page.fill("#id_starts_on", today.isoformat())
    page.fill("#id_ends_on", (today + timedelta(days=30)).isoformat())
    j.shot("new-campaign")
    page.get_by_role("button", name="Create the campaign").click()
    expect(page.locator(".messages")).to_contain_text("created as a draft")
    row = page.locator("tr.campaign", has_text="Winter harbour nights")
    expect(row).to_contain_text("Draft")
    row.get_by_role("button", name="Activate").click()
    expect(page.locator(".messages")).to_contain_text("is now active")
    row = page.locator("tr.campaign", has_text="Winter harbour nights")
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text("live")
    expect(row.locator("td.spend")).to_contain_text("0.0000 / 2500.0000")
    expect(row).to_contain_text("Saltwick storm lantern")
    j.shot("campaign-live")

    campaign = Campaign.objects.get(brand=brand)
    assert campaign.status == Campaign.Status.ACTIVE and campaign.budget_total == Decimal("2500")
    assert campaign.price == Decimal("6.5") and campaign.cap_per_reader_per_day == 2
    assert set(campaign.assets.values_list("name", flat=True)) == {"Saltwick storm lantern", "Wick the gull"}
