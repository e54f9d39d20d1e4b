"""Demo brands with assets, banned themes and a live campaign each, approved (issue 18: a new brand waits
for staff). Safe to run again and again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from brands import approval, campaigns, services
from brands.models import Brand, BrandSuitability, Campaign, RiskTier
from writer.models import Story

DEMO_BRANDS = (
    {
        "name": "Tidewave Surf Co.",
        "description": "Surfboards, wetsuits and beach gear for cold-water coasts: learning to surf, rock pools, "
        "sunrise sessions and salty summers by the sea.",
        "tone_of_voice": "Sunny, easy-going, a little cheeky; never preachy.",
        "target_audience": "Teens and young adults who love the beach, the waves and the outdoors.",
        "banned_themes": ["violence", "self-harm", "drugs", "gambling"],
        "max_placements_per_chapter": 1,
        "assets": (
            {
                "kind": "product",
                "name": "Tidewave Glide",
                "description": "A soft-top longboard for beginners that floats like a raft on small waves.",
                "terms": ["Tidewave Glide", "Glide board"],
            },
            {
                "kind": "mascot",
                "name": "Otis the Otter",
                "description": "A cheeky sea otter on the wetsuit logos who floats on his back and rescues "
                "lost flip-flops at the beach.",
                "terms": ["Otis the Otter", "Otis"],
            },
        ),
    },
    {
        "name": "Northstar Bank",
        "description": "A mobile bank for first salaries: savings pots, budgeting, student accounts and "
        "paying bills on time.",
        "tone_of_voice": "Calm, clear and reassuring.",
        "target_audience": "Students and young professionals managing money for the first time.",
        "banned_themes": ["gambling", "crime", "violence", "drugs"],
        "max_placements_per_chapter": 1,
        "assets": (
            {
                "kind": "product",
                "name": "Northstar Starter account",
                "description": "A free current account with a savings pot and an app that tracks spending.",
                "terms": ["Northstar Starter", "Northstar app"],
            },
            {
                "kind": "slogan",
                "name": "Follow your north star",
                "description": "The slogan: money decisions made with a clear head.",
                "terms": ["Follow your north star"],
            },
        ),
    },
    {
        "name": "Bobalicious",
        "description": "Bubble tea shops and market stalls: milk teas, fruit teas and chewy tapioca pearls, "
        "open late for friends after school.",
        "tone_of_voice": "Playful, bubbly, full of puns.",
        "target_audience": "Teens and students who hang out with friends in town.",
        "banned_themes": ["alcohol", "self-harm", "violence", "horror"],
        "max_placements_per_chapter": 2,
        "assets": (
            {
                "kind": "slogan",
                "name": "Pop the pearl!",
                "description": "Said when friends share a bubble tea and a good moment.",
                "terms": ["Pop the pearl"],
            },
            {
                "kind": "product",
                "name": "Brown sugar milk tea",
                "description": "The house bubble tea: tiger-striped brown sugar syrup, cold milk, warm pearls.",
                "terms": ["Bobalicious brown sugar milk tea", "brown sugar boba"],
            },
        ),
    },
)


DEMO_FLIGHT_DAYS = 90


def demo_campaign(brand: Brand, manager: AbstractBaseUser) -> Campaign:
    """A live CPM campaign with every asset of `brand` in play, from yesterday for DEMO_FLIGHT_DAYS days:
    matching offers only assets of live campaigns (issue 17). 1,000 at 5.00 CPM, spread evenly."""
    today = timezone.localdate()
    campaign = campaigns.campaign_create(
        brand=brand,
        user=manager,
        assets=brand.assets.all(),
        name=f"{brand.name} launch",
        objective="Demo: the brand's first season in stories.",
        starts_on=today - timedelta(days=1),
        ends_on=today + timedelta(days=DEMO_FLIGHT_DAYS),
        budget_total=Decimal("1000"),
        pricing=Campaign.Pricing.CPM,
        price=Decimal("5"),
        pacing=Campaign.Pacing.EVEN,
    )
    return campaigns.campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)


# The demo brands' own IAB categories (brands.iab): sports, personal finance, food & drink.
DEMO_CATEGORIES = {"Tidewave Surf Co.": "IAB17", "Northstar Bank": "IAB13", "Bobalicious": "IAB8"}


DEMO_STAFF_USERNAME = "admin"  # writer.demo's staff user


def demo_staff_user() -> AbstractBaseUser | None:
    """The demo's staff user, who approves the demo brands; None where there is none (tests' databases)."""
    return get_user_model().objects.filter(username=DEMO_STAFF_USERNAME, is_staff=True, is_active=True).first()


@transaction.atomic
def seed_brands(manager: AbstractBaseUser, *, opt_in_stories: Iterable[Story] = ()) -> list[Brand]:
    """The demo brands, managed by `manager` (a brand manager), each with a live campaign and approved (by the
    demo's staff user, else by the seed: `approval.brand_approve_for_demo`), and `opt_in_stories` opted in to
    placements. Existing brands are left as they are (one without any campaign gets the demo campaign; one
    still pending is approved)."""
    staff = demo_staff_user()
    brands = []
    for spec in DEMO_BRANDS:
        brand = Brand.objects.filter(name=spec["name"]).first()
        if brand is None:
            fields = {k: v for k, v in spec.items() if k != "assets"}
            brand = services.brand_create(managers=[manager], **fields)
            for asset in spec["assets"]:
                services.asset_create(brand=brand, **asset)
        elif not brand.managers.filter(pk=manager.pk).exists():
            brand.managers.add(manager)
        if brand.approval == Brand.Approval.PENDING:  # a rejection by a person stands
            approval.brand_approve_for_demo(brand=brand, staff_user=staff)
        if not Campaign.objects.filter(brand=brand).exists():
            demo_campaign(brand, manager)
        # What each demo brand accepts (issue 17): its own IAB category, and stories up to medium risk.
        BrandSuitability.objects.get_or_create(
            brand=brand, defaults={"category": DEMO_CATEGORIES.get(brand.name, ""), "max_risk_tier": RiskTier.MEDIUM}
        )
        brands.append(brand)
    for story in opt_in_stories:
        services.story_brand_settings_update(story=story, opt_in=True)
    return brands
