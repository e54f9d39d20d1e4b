"""Reads: brands a manager may see, story and reader settings, embedding state, the review queue and the
dashboard. Matching a story to brands is `brands/matching.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Window
from django.db.models.functions import TruncWeek
from django.http import Http404
from django.utils import timezone

from brands.models import (
    Brand,
    BrandAsset,
    Campaign,
    PlacementDecision,
    PlacementView,
    ReaderSponsorshipPreference,
    StoryBrandSettings,
    text_hash,
)
from mesu_web import paging
from writer import roles
from writer.models import GenerationOption, GenerationRequest, ReviewStatus, Story

AnyUser = AbstractBaseUser | AnonymousUser

# --- Brands for their managers ---------------------------------------------------------------------


def user_can_manage_brands(*, user: AnyUser) -> bool:
    return user.is_authenticated and (user.is_staff or roles.BRAND_MANAGER in roles.user_roles(user))


def brand_list_for_manager(*, user: AnyUser) -> QuerySet[Brand]:
    """A manager's own brands; staff see every brand; anyone else none."""
    if not user.is_authenticated:
        return Brand.objects.none()
    qs = Brand.objects.annotate(asset_count=Count("assets", distinct=True)).order_by("name")
    if user.is_staff:
        return qs
    return qs.filter(managers=user)


def _brand_pks_for_manager(user: AnyUser) -> QuerySet[Brand]:
    """The pks of brand_list_for_manager, as a subquery without its asset count (no join, no GROUP BY)."""
    if not user.is_authenticated:
        return Brand.objects.none().values("pk")
    brands = Brand.objects.all() if user.is_staff else Brand.objects.filter(managers=user)
    return brands.values("pk")


def brand_get_for_manager(*, slug: str, user: AnyUser) -> Brand:
    """404 for a brand the user does not manage, so nobody learns another manager's brands."""
    brand = brand_list_for_manager(user=user).filter(slug=slug).first()
    if brand is None:
        raise Http404("No such brand.")
    return brand


def brand_list_active() -> QuerySet[Brand]:
    """The brands an author may exclude from a story (names only; profiles stay the managers')."""
    return Brand.objects.filter(is_active=True).order_by("name")


def asset_list(*, brand: Brand) -> QuerySet[BrandAsset]:
    return BrandAsset.objects.filter(brand=brand).order_by("kind", "name")


def asset_get_for_manager(*, pk: int, user: AnyUser) -> BrandAsset:
    asset = BrandAsset.objects.select_related("brand").filter(pk=pk).first()
    if asset is None or not brand_list_for_manager(user=user).filter(pk=asset.brand_id).exists():
        raise Http404("No such brand asset.")
    return asset


# --- Story and reader settings ---------------------------------------------------------------------


def story_brand_settings_get(*, story: Story) -> StoryBrandSettings:
    """The story's settings; an unsaved default (opted out, nothing excluded) when it has none."""
    found = StoryBrandSettings.objects.filter(story=story).first()
    return found if found is not None else StoryBrandSettings(story=story, opt_in=False)


def story_excluded_brand_ids(*, story: Story) -> set[int]:
    return set(Brand.objects.filter(excluded_by_stories__story=story).values_list("pk", flat=True))


def reader_sponsored_chapters_enabled(*, user: AnyUser) -> bool:
    """A reader gets sponsored chapters unless they turned them off (anonymous users: on)."""
    if not user.is_authenticated:
        return True
    enabled = (
        ReaderSponsorshipPreference.objects.filter(user=user)
        .values_list("sponsored_chapters_enabled", flat=True)
        .first()
    )
    return True if enabled is None else enabled


def sponsorship_allowed(*, story: Story, reader: AnyUser | None = None) -> bool:
    """Whether a new chapter of `story` (for `reader`, when a reader asks) may carry brands."""
    if not story_brand_settings_get(story=story).opt_in:
        return False
    return reader is None or reader_sponsored_chapters_enabled(user=reader)


# --- Embedding state -------------------------------------------------------------------------------


def assets_needing_embedding(*, model_id: str) -> list[BrandAsset]:
    """Assets without a vector of `model_id` for their current text (new, edited, or another model's)."""
    assets = BrandAsset.objects.select_related("brand").order_by("pk")
    return [
        a
        for a in assets
        if a.embedding is None
        or a.embedding_model != model_id
        or a.embedded_text_hash != text_hash(a.embedding_text())
    ]


# --- The review queue and the dashboard ------------------------------------------------------------


_QUEUE_ORDER = ("created_at", "request_id", "index")  # oldest first, then in each request's order


def _review_queue_pending(user: AnyUser) -> QuerySet[GenerationOption]:
    approved_sibling = GenerationOption.objects.filter(
        request=OuterRef("request"), review_status=ReviewStatus.APPROVED
    )
    # Once the author took another option of the request as the chapter, this one has nothing to decide.
    accepted_sibling = GenerationOption.objects.filter(
        request=OuterRef("request"), accepted_chapter__isnull=False
    ).exclude(pk=OuterRef("pk"))
    return GenerationOption.objects.filter(
        review_status=ReviewStatus.PENDING, brand__in=_brand_pks_for_manager(user)
    ).exclude(Exists(approved_sibling)).exclude(Exists(accepted_sibling))


def _with_queue_columns(options: QuerySet[GenerationOption]) -> QuerySet[GenerationOption]:
    return (
        options.select_related("request__story", "brand", "asset")
        # Only what the queue shows: options' texts, stories' notes and requests' reports stay in the
        # database (~2.8 KB a row otherwise).
        .only(
            "index", "created_at", "review_status", "request", "brand", "asset",
            "request__kind", "request__next_number", "request__story", "request__story__title",
            "brand__name", "asset__name",
        )
        .order_by(*_QUEUE_ORDER)
    )


def review_queue_for_manager(*, user: AnyUser) -> QuerySet[GenerationOption]:
    """Pending placements of the user's brands, oldest first; a request that already has an approved
    option drops out (exactly one option per request is approved), and so does an option whose request
    already gave the story its chapter from another option. An accepted option edited after its approval
    comes back here (`brands.matching.option_back_to_review`). The whole queue: pages show it
    through `review_queue_page` (a brand can have thousands waiting)."""
    return _with_queue_columns(_review_queue_pending(user))


@dataclass(frozen=True)
class QueueRow:
    """A placement as the review queue lists it, read with `values_list` (no model instances)."""

    pk: int
    index: int
    created_at: datetime
    request_id: int
    request_kind: str
    next_number: int
    story_title: str
    brand_name: str
    asset_name: str | None
    policy_findings: tuple[tuple[str, str], ...] = ()  # (rule, detail) of each finding (brands.review)
    sla_days: int | None = None  # the brand's review SLA (None: no BrandSuitability row, the default)

    label = GenerationOption.label  # "Option 2", as everywhere else

    @property
    def overdue(self) -> bool:
        """Waiting longer than its brand's review SLA (brands.review.DEFAULT_SLA_DAYS without one)."""
        from brands.review import sla_overdue  # local: review imports matching, which imports this module

        return sla_overdue(waiting_since=self.created_at, sla_days=self.sla_days)

    def get_kind_display(self) -> str:
        return GenerationRequest.Kind(self.request_kind).label


def review_queue_page(*, user: AnyUser, number: object, per_page: int) -> Page:
    """One page of `review_queue_for_manager` as `QueueRow`s (`number` clamped as `mesu_web.paging` says:
    not a positive integer, the first page; past the end, the last).

    Two queries: the page's option ids with the queue's length (a window count) from the options table
    alone, then those options joined to their request, story, brand and asset. Joining the whole queue
    before cutting it, plus a COUNT, cost 2.4 ms of planning and execution against 1.4 ms this way
    (EXPLAIN ANALYZE, 400 pending of a manager's 2 brands among 100,000 options)."""
    pending = _review_queue_pending(user).order_by(*_QUEUE_ORDER)
    page = paging.page_from_window(  # the number clamped (mesu_web.paging): never an OFFSET past a bigint
        number=number, per_page=per_page, rows=lambda start, stop: _review_queue_ids(pending, start, stop),
        count=pending.count,
    )
    ids = page.object_list
    rows = []
    if ids:
        rows = [
            QueueRow(
                *row[:-2],
                policy_findings=tuple((f.get("rule", ""), f.get("detail", "")) for f in row[-2] or []),
                sla_days=row[-1],
            )
            for row in GenerationOption.objects.filter(pk__in=ids)
            .order_by(*_QUEUE_ORDER)
            .values_list(
                "pk", "index", "created_at", "request_id", "request__kind", "request__next_number",
                "request__story__title", "brand__name", "asset__name", "policy_findings",
                "brand__suitability__review_sla_days",
            )
        ]
    page.object_list = rows
    return page


def review_queue_overdue_count(*, user: AnyUser, default_sla_days: int = 3) -> int:
    """How many of the user's pending placements wait longer than their brand's review SLA (one query)."""
    from django.db.models import DateTimeField, ExpressionWrapper, F, Value  # noqa: PLC0415 (this part's own)
    from django.db.models.functions import Coalesce  # noqa: PLC0415

    sla = Coalesce(F("brand__suitability__review_sla_days"), Value(default_sla_days))
    return (
        _review_queue_pending(user)
        .annotate(deadline=ExpressionWrapper(F("created_at") + sla * Value(timedelta(days=1)), output_field=DateTimeField()))
        .filter(deadline__lt=timezone.now())
        .count()
    )


def _review_queue_ids(pending: QuerySet[GenerationOption], start: int, stop: int) -> tuple[list[int], int]:
    rows = list(pending.annotate(total=Window(Count("pk"))).values_list("pk", "total")[start:stop])
    return [pk for pk, _ in rows], (rows[0][1] if rows else 0)


def option_get_for_manager(*, pk: int, user: AnyUser) -> GenerationOption:
    """404 unless the option carries a brand the user manages (staff: any branded option)."""
    option = (
        GenerationOption.objects.select_related(
            "request", "request__story", "brand", "asset", "reviewed_by", "accepted_chapter"
        )
        .filter(pk=pk, brand__in=brand_list_for_manager(user=user).values("pk"))
        .first()
    )
    if option is None:
        raise Http404("No such placement.")
    return option


@dataclass(frozen=True)
class WeekRow:
    week_start: date
    proposed: int
    approved: int
    rejected: int
    views: int


@dataclass(frozen=True)
class CampaignPacing:
    """A campaign's spend against its budget, and for even pacing what it should have spent by today (an
    equal share of the total budget per flight day, today included)."""

    pk: int
    name: str
    status: str
    pacing: str
    budget_total: Decimal
    spent: Decimal
    expected: Decimal | None  # None: paced as fast as possible, nothing expected
    flight_day: int  # today's day of the flight (0 before it starts, flight_days after it ends)
    flight_days: int

    @property
    def spent_percent(self) -> int:
        return round(100 * self.spent / self.budget_total) if self.budget_total else 0

    @property
    def expected_percent(self) -> int | None:
        return None if self.expected is None else round(100 * self.expected / self.budget_total)

    @property
    def pace(self) -> str:
        """"ahead", "behind" or "on pace" (within 10 % of the expected spend); "" without even pacing."""
        if self.expected is None or self.flight_day == 0:
            return ""
        if self.spent > self.expected * Decimal("1.1"):
            return "ahead"
        if self.spent < self.expected * Decimal("0.9"):
            return "behind"
        return "on pace"


def campaign_pacing_list(*, brand: Brand, today: date | None = None) -> list[CampaignPacing]:
    """Each campaign of `brand` (newest flight first) with its spend against budget and pacing."""
    today = today or timezone.localdate()
    rows = []
    for c in Campaign.objects.filter(brand=brand).order_by("-starts_on", "name"):
        flight_days = (c.ends_on - c.starts_on).days + 1
        flight_day = min(max((today - c.starts_on).days + 1, 0), flight_days)
        expected = None
        if c.pacing == Campaign.Pacing.EVEN:
            expected = (c.budget_total * flight_day / flight_days).quantize(Decimal("0.0001"))
        rows.append(
            CampaignPacing(
                c.pk, c.name, c.get_status_display(), c.get_pacing_display(), c.budget_total, c.spent,
                expected, flight_day, flight_days,
            )
        )
    return rows


@dataclass(frozen=True)
class BrandDashboard:
    proposed: int  # options whose text names one of the brand's assets
    approved: int
    rejected: int
    pending: int
    views: int  # readers who saw an approved chapter, once per reader and chapter
    rows: list[WeekRow]  # newest week first
    campaigns: list[CampaignPacing] = field(default_factory=list)  # spend against budget and pacing

    @property
    def approval_rate(self) -> float | None:
        decided = self.approved + self.rejected
        return self.approved / decided if decided else None


def _count_by_week(qs: QuerySet, field: str, since: datetime) -> dict[date, int]:
    rows = (
        qs.filter(**{f"{field}__gte": since})
        .annotate(week=TruncWeek(field))
        .values("week")
        .annotate(n=Count("pk"))
    )
    return {row["week"].date(): row["n"] for row in rows}


def brand_dashboard(*, brand: Brand, weeks: int = 12) -> BrandDashboard:
    options = GenerationOption.objects.filter(brand=brand, placement_found=True)
    decisions = PlacementDecision.objects.filter(brand=brand)
    views = PlacementView.objects.filter(brand=brand)
    totals = options.aggregate(
        proposed=Count("pk"),
        approved=Count("pk", filter=Q(review_status=ReviewStatus.APPROVED)),
        rejected=Count("pk", filter=Q(review_status=ReviewStatus.REJECTED)),
        pending=Count("pk", filter=Q(review_status=ReviewStatus.PENDING)),
    )
    today = timezone.now()
    this_week = (today - timedelta(days=today.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    since = this_week - timedelta(weeks=weeks - 1)
    proposed = _count_by_week(options, "created_at", since)
    approved = _count_by_week(decisions.filter(action=PlacementDecision.Action.APPROVED), "created_at", since)
    rejected = _count_by_week(decisions.filter(action=PlacementDecision.Action.REJECTED), "created_at", since)
    seen = _count_by_week(views, "created_at", since)
    rows = []
    for i in range(weeks):
        week = (this_week - timedelta(weeks=i)).date()
        rows.append(
            WeekRow(week, proposed.get(week, 0), approved.get(week, 0), rejected.get(week, 0), seen.get(week, 0))
        )
    return BrandDashboard(views=views.count(), rows=rows, campaigns=campaign_pacing_list(brand=brand), **totals)


def decision_list_for_brand(*, brand: Brand, limit: int = 50) -> list[PlacementDecision]:
    return list(
        PlacementDecision.objects.filter(brand=brand)
        .select_related("reviewer", "option", "option__request", "option__request__story")
        .order_by("-created_at")[:limit]
    )
