"""Campaigns (issue 17): flights, budgets, prices and pacing, and the one place spend is charged.

Spend is charged exactly once per billable event, in the database: the campaign row is locked
(`select_for_update`) while its spend row is written and `spent` moves, a unique constraint refuses a
second row for the same event, and a CHECK constraint refuses `spent` above `budget_total`.

Also here: the caps' counts and the live campaigns matching reads (`offerable_assets`), the campaign pages'
reads (`campaign_rows`, `pacing_state`) and writes (`campaign_create`, `campaign_update`,
`campaign_set_status`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.http import Http404
from django.utils import timezone

from brands.approval import approved_q, is_approved
from brands.models import Brand, BrandAsset, Campaign, CampaignSpend, PlacementView
from mesu_web.errors import ApplicationError
from writer.models import GenerationOption, GenerationRequest, ReviewStatus

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
        campaign = Campaign.objects.select_for_update(of=("self",)).select_related("brand").get(pk=option.campaign_id)
        if not is_approved(campaign.brand):  # brands.approval: a brand staff have not approved pays nothing
            return None
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
    """Raise ApplicationError when approving `option` would pass its campaign's cap per story, or, for a
    reader's chapter, the cap per reader a day counted as what the reader actually gets: their approved
    placements of the brand approved today (plans already keep to the cap, but two requests of one reader
    planned at the same moment could both pass there; this locked check is the hard one).

    Called by `option_approve` after the option is saved as approved, in the same transaction: the campaign
    row is locked first, so two approvals in one story at once queue up here and the second one counts the
    first (READ COMMITTED: the count after the lock sees what committed before it)."""
    if option.campaign_id is None or option.brand_id is None:
        return
    campaign = (
        Campaign.objects.select_for_update(of=("self",)).select_related("brand").filter(pk=option.campaign_id).first()
    )
    if campaign is None or (campaign.cap_per_story is None and campaign.cap_per_reader_per_day is None):
        return
    story_id, kind, reader_id = (
        GenerationRequest.objects.filter(pk=option.request_id).values_list("story_id", "kind", "requested_by_id").get()
    )
    if campaign.cap_per_story is not None:
        approved = story_approved_count(story_id=story_id, brand_id=option.brand_id)
        if approved > campaign.cap_per_story:  # the count includes this option, saved as approved already
            raise ApplicationError(
                f"The campaign {campaign.name!r} allows at most {campaign.cap_per_story} approved placement(s) "
                f"of {campaign.brand.name} in one story, and this story has {approved - 1} already."
            )
    if campaign.cap_per_reader_per_day is not None and kind == GenerationRequest.Kind.READER:
        got = GenerationOption.objects.filter(
            brand_id=option.brand_id,
            request__requested_by_id=reader_id,
            request__kind=GenerationRequest.Kind.READER,
            review_status=ReviewStatus.APPROVED,
            reviewed_at__date=timezone.localdate(),
        ).count()
        if got > campaign.cap_per_reader_per_day:  # this option included
            raise ApplicationError(
                f"The campaign {campaign.name!r} allows at most {campaign.cap_per_reader_per_day} placement(s) "
                f"of {campaign.brand.name} a day for one reader, and this reader has {got - 1} today."
            )


# --- Caps: what counts ---------------------------------------------------------------------------------
#
# A reader's placements of a brand today (cap_per_reader_per_day): the options carrying the brand in chapters
# the reader asked for today (planned or found, whatever their review: the reader may see each of them),
# together with the reader's viewable impressions of the brand's placements today (chapters someone else
# asked for), each option counted once. A story's placements of a brand (cap_per_story): its options of the
# brand approved now. Caps belong to a campaign: a capped campaign stops paying for the brand in that
# story or for that reader; the brand's other campaigns (capped or not on their own terms) go on.


def reader_placements_today(*, reader_id: int, brand_id: int, day: date | None = None) -> int:
    """The reader's placements of `brand_id` on `day` (today), as the comment above counts them."""
    day = day or timezone.localdate()
    asked = GenerationOption.objects.filter(
        brand_id=brand_id,
        request__requested_by_id=reader_id,
        request__kind=GenerationRequest.Kind.READER,
        created_at__date=day,
    ).exclude(review_status=ReviewStatus.NOT_SENT)
    seen = PlacementView.objects.filter(brand_id=brand_id, user_id=reader_id, created_at__date=day)
    return len(set(asked.values_list("pk", flat=True)) | set(seen.values_list("option_id", flat=True)))


def story_approved_count(*, story_id: int, brand_id: int) -> int:
    """Approved placements of `brand_id` in the story (any campaign's)."""
    return GenerationOption.objects.filter(
        request__story_id=story_id, brand_id=brand_id, review_status=ReviewStatus.APPROVED
    ).count()


# --- Matching's reads ----------------------------------------------------------------------------------


def live_campaigns(*, day: date | None = None) -> list[tuple[Campaign, Decimal]]:
    """Every live campaign (active, inside its flight) of an active brand that staff approved, with budget
    left today, with what it may still spend today; most budget left first, then the oldest. Matching offers
    nothing else (`offerable_assets`): this is where a pending or rejected brand is left out."""
    day = day or timezone.localdate()
    found = Campaign.objects.filter(
        approved_q("brand__"), status=Campaign.Status.ACTIVE, starts_on__lte=day, ends_on__gte=day,
        brand__is_active=True,
    ).select_related("brand")
    with_budget = [(c, budget_left(campaign=c, day=day)) for c in found]
    with_budget = [(c, left) for c, left in with_budget if left > 0]
    with_budget.sort(key=lambda pair: (-pair[1], pair[0].pk))
    return with_budget


def offerable_assets(*, story_id: int | None, reader_id: int | None) -> dict[int, Campaign]:
    """Asset id -> the live campaign that pays for it here: of the live campaigns with budget left that
    carry the asset and whose caps this story (and reader, for a reader's chapter) have not reached, the one
    with most budget left (ties: the oldest). An asset in no such campaign is not offered."""
    offer: dict[int, Campaign] = {}
    capped: dict[tuple[str, int], int] = {}  # counts, once per brand

    def count(kind: str, brand_id: int) -> int:
        if (kind, brand_id) not in capped:
            if kind == "story":
                capped[kind, brand_id] = story_approved_count(story_id=story_id, brand_id=brand_id)
            else:
                capped[kind, brand_id] = reader_placements_today(reader_id=reader_id, brand_id=brand_id)
        return capped[kind, brand_id]

    campaigns = live_campaigns()
    pairs = Campaign.assets.through.objects.filter(campaign_id__in=[c.pk for c, _ in campaigns]).values_list(
        "campaign_id", "brandasset_id"
    )
    assets_of: dict[int, list[int]] = {}
    for campaign_id, asset_id in pairs:
        assets_of.setdefault(campaign_id, []).append(asset_id)
    for campaign, _left in campaigns:  # most budget left first: the first campaign of an asset wins
        if story_id is not None and campaign.cap_per_story is not None:
            if count("story", campaign.brand_id) >= campaign.cap_per_story:
                continue
        if reader_id is not None and campaign.cap_per_reader_per_day is not None:
            if count("reader", campaign.brand_id) >= campaign.cap_per_reader_per_day:
                continue
        for asset_id in assets_of.get(campaign.pk, ()):
            offer.setdefault(asset_id, campaign)
    return offer


def reader_cap_room(*, reader_id: int, campaign_ids: Iterable[int | None]) -> dict[int, int | None]:
    """Campaign id -> how many more placements of its brand the reader may get today (None: no cap)."""
    room: dict[int, int | None] = {}
    for campaign in Campaign.objects.filter(pk__in=[c for c in campaign_ids if c is not None]):
        cap = campaign.cap_per_reader_per_day
        room[campaign.pk] = (
            None if cap is None else max(cap - reader_placements_today(reader_id=reader_id, brand_id=campaign.brand_id), 0)
        )
    return room


# --- Campaign pages: reads -------------------------------------------------------------------------------


def campaign_list(*, brand: Brand) -> list[Campaign]:
    return list(Campaign.objects.filter(brand=brand).prefetch_related("assets").order_by("-starts_on", "name"))


def campaign_get(*, brand: Brand, pk: int) -> Campaign:
    """A campaign of `brand` (whose manager the view checked already); 404 for any other."""
    campaign = Campaign.objects.filter(brand=brand, pk=pk).select_related("brand").first()
    if campaign is None:
        raise Http404("No such campaign.")
    return campaign


@dataclass(frozen=True)
class CampaignRow:
    """A campaign as its list shows it: spend against budget, today's spend and limit, and pacing."""

    campaign: Campaign
    spent_share: float  # of the total budget, 0..1
    spent_today: Decimal
    today_limit: Decimal | None
    expected: Decimal | None  # with even pacing: what an even spend would have spent by the end of today
    pacing_state: str  # "not started", "on pace", "ahead", "behind", "as fast as possible", "over", ...
    live: bool
    assets: list[BrandAsset] = field(default_factory=list)
    next_statuses: list[tuple[str, str]] = field(default_factory=list)  # (value, label) a manager may choose


def pacing_state(*, campaign: Campaign, day: date | None = None) -> tuple[str, Decimal | None]:
    """Where the spend stands against an even spread of the budget over the flight, and that even spend by
    the end of `day`. Within 10 % of the even spend: on pace."""
    day = day or timezone.localdate()
    if campaign.status == Campaign.Status.ENDED or day > campaign.ends_on:
        return "ended", None
    if day < campaign.starts_on:
        return "not started", None
    if campaign.spent >= campaign.budget_total:
        return "budget spent", None
    if campaign.pacing == Campaign.Pacing.ASAP:
        return "as fast as possible", None
    flight_days = (campaign.ends_on - campaign.starts_on).days + 1
    elapsed = (day - campaign.starts_on).days + 1
    expected = _money(campaign.budget_total * elapsed / flight_days)
    if campaign.spent > expected * Decimal("1.1"):
        return "ahead", expected
    if campaign.spent < expected * Decimal("0.9"):
        return "behind", expected
    return "on pace", expected


def campaign_rows(*, brand: Brand) -> list[CampaignRow]:
    today = timezone.localdate()
    approved = is_approved(brand)  # a campaign of a brand staff have not approved is never live
    rows = []
    for campaign in campaign_list(brand=brand):
        state, expected = pacing_state(campaign=campaign, day=today)
        rows.append(
            CampaignRow(
                campaign=campaign,
                spent_share=float(campaign.spent / campaign.budget_total) if campaign.budget_total else 0.0,
                spent_today=spent_on(campaign=campaign, day=today),
                today_limit=daily_limit(campaign=campaign, day=today) if is_live(campaign=campaign) else None,
                expected=expected,
                pacing_state=state,
                live=approved and is_live(campaign=campaign, day=today),
                assets=list(campaign.assets.all()),
                next_statuses=[(s.value, s.label) for s in TRANSITIONS[Campaign.Status(campaign.status)]],
            )
        )
    return rows


# --- Campaign pages: writes ------------------------------------------------------------------------------

MAX_BUDGET = Decimal("10000000")  # 10 million in the brand's currency: more is a typo, not a campaign
MAX_PRICE = Decimal("100000")  # per 1,000 impressions or per placement
MAX_FLIGHT_DAYS = 366 * 3
MAX_CAP = 1000
CAMPAIGN_FIELDS = (
    "name",
    "objective",
    "starts_on",
    "ends_on",
    "budget_total",
    "budget_daily",
    "pricing",
    "price",
    "pacing",
    "cap_per_reader_per_day",
    "cap_per_story",
)
# Status changes a manager may make; `ended` is final.
TRANSITIONS = {
    Campaign.Status.DRAFT: (Campaign.Status.ACTIVE, Campaign.Status.ENDED),
    Campaign.Status.ACTIVE: (Campaign.Status.PAUSED, Campaign.Status.ENDED),
    Campaign.Status.PAUSED: (Campaign.Status.ACTIVE, Campaign.Status.ENDED),
    Campaign.Status.ENDED: (),
}


def _money_field(value: object, label: str, *, maximum: Decimal, required: bool = True) -> Decimal | None:
    if value is None or value == "":
        if required:
            raise ApplicationError(f"Give the {label}.")
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ApplicationError(f"The {label} must be a number, e.g. 2500.00.") from None
    if not amount.is_finite():
        raise ApplicationError(f"The {label} must be a number, e.g. 2500.00.")
    if amount <= 0:
        raise ApplicationError(f"The {label} must be more than 0.")
    if amount > maximum:
        raise ApplicationError(f"The {label} can be at most {maximum:,}: {amount:,} looks like a typo.")
    if amount != amount.quantize(CENT):
        raise ApplicationError(f"The {label} takes at most 4 decimal places.")
    return amount


def _cap_field(value: object, label: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        cap = int(value)
    except (TypeError, ValueError):
        raise ApplicationError(f"The {label} must be a whole number.") from None
    if not 1 <= cap <= MAX_CAP:
        raise ApplicationError(f"The {label} must be between 1 and {MAX_CAP} (leave it empty for no cap).")
    return cap


def _clean_campaign(brand: Brand, values: dict, *, campaign: Campaign | None) -> dict:
    """The fields checked and cleaned; every problem is an ApplicationError a manager can act on."""
    name = " ".join(str(values.get("name") or "").split())
    if not name:
        raise ApplicationError("Give the campaign a name.")
    if len(name) > 120:
        raise ApplicationError("Keep the campaign's name under 120 characters.")
    same = Campaign.objects.filter(brand=brand, name__iexact=name)
    if campaign is not None:
        same = same.exclude(pk=campaign.pk)
    if same.exists():
        raise ApplicationError(f"{brand.name} already has a campaign called {name!r}: choose another name.")
    starts_on, ends_on = values.get("starts_on"), values.get("ends_on")
    if not isinstance(starts_on, date) or not isinstance(ends_on, date):
        raise ApplicationError("Give the flight's first and last day.")
    if ends_on < starts_on:
        raise ApplicationError(
            f"The campaign ends ({ends_on:%d %b %Y}) before it starts ({starts_on:%d %b %Y}): "
            "the last day must be on or after the first."
        )
    if (ends_on - starts_on).days + 1 > MAX_FLIGHT_DAYS:
        raise ApplicationError(f"A flight lasts at most {MAX_FLIGHT_DAYS} days.")
    total = _money_field(values.get("budget_total"), "total budget", maximum=MAX_BUDGET)
    daily = _money_field(values.get("budget_daily"), "daily budget", maximum=MAX_BUDGET, required=False)
    if daily is not None and daily > total:
        raise ApplicationError(f"The daily budget ({daily:,}) is above the total budget ({total:,}).")
    pricing = values.get("pricing") or Campaign.Pricing.CPM
    if pricing not in Campaign.Pricing.values:
        raise ApplicationError(f"Pricing is one of: {', '.join(Campaign.Pricing.values)}.")
    price = _money_field(values.get("price"), "price", maximum=MAX_PRICE)
    if pricing == Campaign.Pricing.FIXED and price > total:
        raise ApplicationError(f"The price of one placement ({price:,}) is above the total budget ({total:,}).")
    pacing = values.get("pacing") or Campaign.Pacing.EVEN
    if pacing not in Campaign.Pacing.values:
        raise ApplicationError(f"Pacing is one of: {', '.join(Campaign.Pacing.values)}.")
    if campaign is not None:
        if total < campaign.spent:
            raise ApplicationError(
                f"The campaign has spent {campaign.spent:,} already: the total budget cannot go below that."
            )
        if pricing != campaign.pricing and campaign.spent > 0:
            raise ApplicationError("The pricing of a campaign that has spent cannot change: start a new campaign.")
    return {
        "name": name,
        "objective": " ".join(str(values.get("objective") or "").split())[:200],
        "starts_on": starts_on,
        "ends_on": ends_on,
        "budget_total": total,
        "budget_daily": daily,
        "pricing": pricing,
        "price": price,
        "pacing": pacing,
        "cap_per_reader_per_day": _cap_field(values.get("cap_per_reader_per_day"), "cap per reader a day"),
        "cap_per_story": _cap_field(values.get("cap_per_story"), "cap per story"),
    }


def _clean_assets(brand: Brand, assets: Iterable[BrandAsset | int] | None) -> list[BrandAsset]:
    ids = [a.pk if isinstance(a, BrandAsset) else int(a) for a in assets or ()]
    found = list(BrandAsset.objects.filter(pk__in=ids))
    foreign = [a for a in found if a.brand_id != brand.pk]
    if foreign or len(found) != len(set(ids)):
        raise ApplicationError(f"A campaign of {brand.name} can only put {brand.name}'s own assets in play.")
    return found


def _saved(brand: Brand, campaign: Campaign) -> Campaign:
    try:
        with transaction.atomic():
            campaign.save()
    except IntegrityError:  # two saves of one name at once: the unique constraint decides
        raise ApplicationError(
            f"{brand.name} already has a campaign called {campaign.name!r}: choose another name."
        ) from None
    return campaign


@transaction.atomic
def campaign_create(
    *, brand: Brand, user: AbstractBaseUser | None, assets: Iterable[BrandAsset | int] | None = None, **values: object
) -> Campaign:
    """A new campaign of `brand`, in draft (it pays for nothing until it is activated)."""
    unknown = set(values) - set(CAMPAIGN_FIELDS)
    if unknown:
        raise TypeError(f"campaign_create got unknown fields: {sorted(unknown)}")
    cleaned = _clean_campaign(brand, values, campaign=None)
    in_play = _clean_assets(brand, assets)
    campaign = _saved(brand, Campaign(brand=brand, created_by=user, status=Campaign.Status.DRAFT, **cleaned))
    campaign.assets.set(in_play)
    return campaign


@transaction.atomic
def campaign_update(
    *, campaign: Campaign, assets: Iterable[BrandAsset | int] | None = None, **values: object
) -> Campaign:
    """Change a campaign that has not ended; the row is locked so a charge never meets a half-saved budget."""
    unknown = set(values) - set(CAMPAIGN_FIELDS)
    if unknown:
        raise TypeError(f"campaign_update got unknown fields: {sorted(unknown)}")
    campaign = Campaign.objects.select_for_update().select_related("brand").get(pk=campaign.pk)
    if campaign.status == Campaign.Status.ENDED:
        raise ApplicationError("An ended campaign cannot change: start a new one.")
    brand = campaign.brand
    merged = {f: getattr(campaign, f) for f in CAMPAIGN_FIELDS} | values
    cleaned = _clean_campaign(brand, merged, campaign=campaign)
    in_play = _clean_assets(brand, assets) if assets is not None else None
    if campaign.status == Campaign.Status.ACTIVE and in_play is not None and not in_play:
        raise ApplicationError("An active campaign needs at least one asset in play: pause it first.")
    for key, value in cleaned.items():
        setattr(campaign, key, value)
    _saved(brand, campaign)
    if in_play is not None:
        campaign.assets.set(in_play)
    return campaign


@transaction.atomic
def campaign_set_status(*, campaign: Campaign, status: str) -> Campaign:
    """draft -> active or ended; active <-> paused; either -> ended; ended is final."""
    campaign = Campaign.objects.select_for_update().select_related("brand").get(pk=campaign.pk)
    if status not in Campaign.Status.values:
        raise ApplicationError(f"A campaign's status is one of: {', '.join(Campaign.Status.values)}.")
    if status == campaign.status:
        return campaign
    allowed = TRANSITIONS[Campaign.Status(campaign.status)]
    if status not in allowed:
        if campaign.status == Campaign.Status.ENDED:
            raise ApplicationError("The campaign has ended: an ended campaign stays ended. Start a new one.")
        raise ApplicationError(
            f"A {campaign.get_status_display().lower()} campaign cannot become "
            f"{Campaign.Status(status).label.lower()}."
        )
    if status == Campaign.Status.ACTIVE:
        if not campaign.assets.exists():
            raise ApplicationError("Put at least one asset in play before activating the campaign.")
        if campaign.ends_on < timezone.localdate():
            raise ApplicationError(
                f"The flight ended on {campaign.ends_on:%d %b %Y}: move its last day before activating it."
            )
        if campaign.spent >= campaign.budget_total:
            raise ApplicationError("The whole budget is spent: raise the total budget before activating it.")
    campaign.status = status
    campaign.save(update_fields=["status", "updated_at"])
    return campaign
