"""Disclosure and measurement (issue 17, parts 4 and 5).

Disclosure (DSA Art. 26): every sponsored chapter a reader sees says "Includes a paid placement by
<brand>", who paid (the brand, its campaign), and why the reader sees it (`Disclosure`: the story's IAB
categories and risk tier, the author's opt-in, the reader's own settings; never age, health or politics).
A reader who said they are under 18 (`brands.suitability.reader_placement_block`) never sees a placement:
the chapter page shows the chapter as written without the brand, or holds it back (`chapter_reading`).

Measurement: a viewable impression is posted by static/js/impressions.js once the placed passage has
stayed at least half on screen for a second (never written on a GET); it is recorded once per reader and
option (`PlacementView`, unique) and charged once through `brands.campaigns.impression_charge`, in one
transaction. Opening the "Why am I seeing this?" panel posts a `DisclosureOpen`. Both are flood limited
(`mesu_web.action_limits`: counted before the check, so a flood writes nothing more once over the limit).

Reports (per campaign by day, per story) and their CSV (formula-injection safe), and the public placement
register, are reads at the end of this module.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page
from django.db import transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from brands import iab
from brands.approval import approved_q
from brands.campaigns import impression_charge
from brands.matching import chapter_placement_check
from brands.models import (
    Brand,
    Campaign,
    CampaignSpend,
    DisclosureOpen,
    PlacementView,
    ReaderSponsorshipPreference,
    RiskTier,
    StoryBrandSettings,
    StorySuitability,
)
from brands.suitability import reader_placement_block
from mesu_web import paging
from mesu_web.action_limits import ActionLimited, Limit, per_minute_and_hour, spend
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus, Story

AnyUser = AbstractBaseUser | AnonymousUser

# A reader scrolling through chapters posts one impression and at most a few panel opens per chapter:
# 60 events a minute and 600 an hour are far above that, and far below a script's flood.
KEY_PREFIX = "brands-measure"
DEFAULT_PER_MINUTE = 60
DEFAULT_PER_HOUR = 600


class MeasurementLimited(ActionLimited):
    """Too many measurement events (impressions, panel opens) from one reader."""


def limits() -> tuple[Limit, Limit]:
    """Settings BRAND_MEASURE_RATE_LIMIT_PER_MINUTE / _PER_HOUR, else the defaults above."""
    return per_minute_and_hour("BRAND_MEASURE_RATE_LIMIT", DEFAULT_PER_MINUTE, DEFAULT_PER_HOUR)


def _spend(user: AbstractBaseUser) -> None:
    spend(
        key_prefix=KEY_PREFIX,
        user_id=user.pk,
        limits=limits(),
        error=MeasurementLimited,
        message=lambda most, words, wait: (
            f"More than {most} reading events in {words} from one reader; the next is counted in {wait} s."
        ),
    )


# --- Disclosure: what the reader pages show ----------------------------------------------------------


@dataclass(frozen=True)
class Disclosure:
    """Everything templates/brands/_disclosure.html shows for one sponsored option."""

    option_id: int
    brand: str
    campaign: str  # the campaign that paid; "" when the placement has none
    categories: tuple[str, ...]  # the story's IAB categories; empty with `classified` False: not classified yet
    risk_tier: str  # its label, "" when not classified
    classified: bool
    opted_in: bool  # the author's opt-in as it stands now
    reader_signed_in: bool
    sponsored_enabled: bool  # the reader's own switch (on for a visitor)
    passage: str  # the placed passage, for impressions.js to find on the page ("" : the whole text)
    impression_url: str  # "" when this viewer's views are not counted (the author, staff, the brand's managers)
    open_url: str

    @property
    def counted(self) -> bool:
        return bool(self.impression_url)


def placed_passage(option: GenerationOption, text: str | None = None) -> str:
    """The passage that names the brand in `text` (the option's by default): the placed passage of "write
    first, then place", else the span of the first mention; "" when neither is known."""
    text = option.text if text is None else text
    for span in (option.placed_passage, *(option.mentions or [])[:1]):
        if isinstance(span, (list, tuple)) and len(span) == 2:
            start, end = span
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
                return text[start:end]
    return ""


def _with_disclosure_facts(options: QuerySet[GenerationOption], user: AnyUser) -> QuerySet[GenerationOption]:
    """Sponsored options with, in the same query, all the panel shows: the brand, the campaign, the story's
    suitability and opt-in, whether `user` manages the brand (`viewer_manages`) and the reader's switch
    (`viewer_enabled`: None without a row)."""
    qs = options.select_related(
        "brand", "campaign", "request__story__suitability", "request__story__brand_settings"
    )
    if not user.is_authenticated:
        return qs
    return qs.annotate(
        viewer_manages=Exists(Brand.managers.through.objects.filter(brand_id=OuterRef("brand_id"), user_id=user.pk)),
        viewer_enabled=Subquery(
            ReaderSponsorshipPreference.objects.filter(user_id=user.pk).values("sponsored_chapters_enabled")[:1]
        ),
    )


def _counted(story: Story, user: AnyUser, manages: bool) -> bool:
    """A reader's view counts; the story's author, staff and the brand's own managers do not (they would
    spend the brand's budget on themselves)."""
    return user.is_authenticated and not user.is_staff and story.owner_id != user.pk and not manages


def _disclosure(option: GenerationOption, user: AnyUser, text: str | None) -> Disclosure:
    """`option` read through `_with_disclosure_facts`."""
    story = option.request.story
    try:
        suitability: StorySuitability | None = story.suitability
    except StorySuitability.DoesNotExist:
        suitability = None
    try:
        opted_in = story.brand_settings.opt_in
    except StoryBrandSettings.DoesNotExist:
        opted_in = False
    enabled = getattr(option, "viewer_enabled", None)
    counted = _counted(story, user, bool(getattr(option, "viewer_manages", False)))
    return Disclosure(
        option_id=option.pk,
        brand=option.brand.name,
        campaign=option.campaign.name if option.campaign_id else "",
        categories=tuple(iab.label(c) for c in suitability.categories) if suitability else (),
        risk_tier=RiskTier(suitability.risk_tier).label if suitability else "",
        classified=suitability is not None,
        opted_in=opted_in,
        reader_signed_in=user.is_authenticated,
        sponsored_enabled=True if enabled is None else enabled,
        passage=placed_passage(option, text),
        impression_url=reverse("brands:measure_impression", args=[option.pk]) if counted else "",
        open_url=reverse("brands:measure_disclosure", args=[option.pk]) if user.is_authenticated else "",
    )


def disclosures_attach(*, options: Iterable[GenerationOption], story: Story, user: AnyUser) -> None:
    """Set `option.disclosure` (a Disclosure, or None) on each option the request page shows: a sponsored
    one (an approved paid placement) gets the label and the panel. One query, only when one is sponsored."""
    options = list(options)
    for option in options:
        option.disclosure = None
    sponsored = {o.pk: o for o in options if o.is_sponsored and o.brand_id}
    if not sponsored:
        return
    for read in _with_disclosure_facts(GenerationOption.objects.filter(pk__in=list(sponsored)), user):
        sponsored[read.pk].disclosure = _disclosure(read, user, sponsored[read.pk].text)


@dataclass(frozen=True)
class ChapterReading:
    """What the chapter page shows a viewer: the text (the chapter's, or as written without the brand),
    the disclosure (None: no placement shown), and a plain note when the chapter is held back."""

    text: str
    disclosure: Disclosure | None = None
    held_back: str = ""  # why the text is not shown ("" : it is)
    without_brand: bool = False  # the text shown is the chapter as written without the brand
    withheld: bool = False  # names a brand without its approval (brands.matching rule 5)
    placement_note: str = ""  # for the author: why
    commercial_note: str = ""  # the author's own declaration


def chapter_reading(*, chapter: Chapter, story: Story, user: AnyUser) -> ChapterReading:
    """The chapter page's content for `user` (`chapter.sponsor_name` as `chapter_get_for_reading` annotates
    it). The author and staff see the chapter as it is, with its label; a reader who said they are under 18
    never sees a placement: the chapter as written without the brand when its option kept that draft, else
    the chapter is held back with a plain note. A plain chapter costs no query here; a sponsored one two
    (its option with everything the panel shows; the reader's age)."""
    placement = chapter_placement_check(chapter=chapter, sponsor_name=getattr(chapter, "sponsor_name", None))
    is_owner = user.is_authenticated and story.owner_id == user.pk
    insider = is_owner or user.is_staff
    common = {"commercial_note": chapter.commercial_note, "placement_note": placement.note if is_owner else ""}
    if placement.withheld and not insider:
        return ChapterReading(text="", withheld=True, **common)
    if not placement.sponsor:
        return ChapterReading(text=chapter.text, **common)
    option = _with_disclosure_facts(
        GenerationOption.objects.filter(
            accepted_chapter=chapter, review_status=ReviewStatus.APPROVED, brand__isnull=False
        ),
        user,
    ).first()
    if option is None:  # the label without an option to explain it: never the case once accepted
        return ChapterReading(text=chapter.text, withheld=placement.withheld, **common)
    if not insider and user.is_authenticated and reader_placement_block(reader=user):
        if option.draft.strip():
            return ChapterReading(text=option.draft, without_brand=True, **common)
        return ChapterReading(
            text="",
            held_back="This chapter carries a paid placement, which we never show to readers under 18. "
            "It is not available to you.",
            **common,
        )
    return ChapterReading(
        text=chapter.text,
        disclosure=_disclosure(option, user, chapter.text),
        withheld=placement.withheld,
        **common,
    )


# --- Recording: impressions and panel opens (POST only) ---------------------------------------------


def option_get_for_measurement(*, pk: int, user: AnyUser) -> GenerationOption:
    """The sponsored option `user` may see placed, else 404: an approved placement that is a published
    story's accepted chapter (not withheld after an edit), or the user's own reader request's option; never
    for a reader under 18."""
    option = (
        GenerationOption.objects.select_related("brand", "request", "request__story", "accepted_chapter")
        .filter(pk=pk, review_status=ReviewStatus.APPROVED, brand__isnull=False)
        .first()
    )
    if option is None or not user.is_authenticated or reader_placement_block(reader=user):
        raise Http404("No such placement.")
    story = option.request.story
    own_request = option.request.kind == GenerationRequest.Kind.READER and option.request.requested_by_id == user.pk
    shown_in_story = False
    if option.accepted_chapter_id and story.is_published:
        placement = chapter_placement_check(chapter=option.accepted_chapter, sponsor_name=option.brand.name)
        shown_in_story = bool(placement.sponsor) and not placement.withheld
    if not (own_request or shown_in_story):
        raise Http404("No such placement.")
    return option


def impression_record(*, option: GenerationOption, user: AbstractBaseUser) -> PlacementView | None:
    """A viewable impression of `option` by `user` (posted by impressions.js): one `PlacementView` per
    reader and option, and its CPM charge, in one transaction. None when this viewer is not counted or
    the impression was already recorded. Raises MeasurementLimited over the flood limit (nothing written)."""
    _spend(user)
    manages = Brand.objects.filter(pk=option.brand_id, managers=user).exists()
    if not _counted(option.request.story, user, manages):
        return None
    with transaction.atomic():
        view, created = PlacementView.objects.get_or_create(
            option=option,
            user=user,
            defaults={"brand_id": option.brand_id, "campaign_id": option.campaign_id},
        )
        if not created:
            return None
        impression_charge(option=option, user=user)
    return view


def disclosure_open_record(*, option: GenerationOption, user: AbstractBaseUser) -> DisclosureOpen:
    """`user` opened the "Why am I seeing this?" panel of `option`. Raises MeasurementLimited over the
    flood limit (nothing written)."""
    _spend(user)
    return DisclosureOpen.objects.create(
        option=option, brand_id=option.brand_id, campaign_id=option.campaign_id, user=user
    )


# --- Reports for a brand's managers -------------------------------------------------------------------


def campaign_get_for_brand(*, brand: Brand, pk: int) -> Campaign:
    campaign = Campaign.objects.filter(brand=brand, pk=pk).first()
    if campaign is None:
        raise Http404("No such campaign.")
    return campaign


def campaign_list_for_brand(*, brand: Brand) -> QuerySet[Campaign]:
    return Campaign.objects.filter(brand=brand).order_by("-starts_on", "name")


@dataclass(frozen=True)
class DayRow:
    day: date
    impressions: int
    disclosure_opens: int
    placements: int
    spend: Decimal


@dataclass(frozen=True)
class CampaignReport:
    campaign: Campaign
    days: list[DayRow]  # newest first: every day of the flight up to today, and any day with events
    impressions: int
    disclosure_opens: int
    placements: int
    spend: Decimal


def _by_day(qs: QuerySet, date_field: str, value: object) -> dict[date, object]:
    rows = qs.annotate(day=TruncDate(date_field)).values("day").annotate(v=value).values_list("day", "v")
    return dict(rows)


def campaign_report(*, campaign: Campaign) -> CampaignReport:
    """Per day: viewable impressions, panel opens, approved placements and spend of `campaign`."""
    views = _by_day(PlacementView.objects.filter(campaign=campaign), "created_at", Count("pk"))
    opens = _by_day(DisclosureOpen.objects.filter(campaign=campaign), "created_at", Count("pk"))
    placements = _by_day(
        GenerationOption.objects.filter(campaign=campaign, review_status=ReviewStatus.APPROVED, reviewed_at__isnull=False),
        "reviewed_at",
        Count("pk"),
    )
    spend_by_day = _by_day(CampaignSpend.objects.filter(campaign=campaign), "created_at", Sum("amount"))
    today = timezone.localdate()
    days = set(views) | set(opens) | set(placements) | set(spend_by_day)
    last = min(campaign.ends_on, today)
    day = campaign.starts_on
    while day <= last:
        days.add(day)
        day += timedelta(days=1)
    rows = [
        DayRow(
            day=d,
            impressions=views.get(d, 0),
            disclosure_opens=opens.get(d, 0),
            placements=placements.get(d, 0),
            spend=spend_by_day.get(d) or Decimal(0),
        )
        for d in sorted(days, reverse=True)
    ]
    return CampaignReport(
        campaign=campaign,
        days=rows,
        impressions=sum(r.impressions for r in rows),
        disclosure_opens=sum(r.disclosure_opens for r in rows),
        placements=sum(r.placements for r in rows),
        spend=sum((r.spend for r in rows), Decimal(0)),
    )


@dataclass(frozen=True)
class StoryRow:
    story_id: int
    title: str
    slug: str
    is_published: bool
    placements: int
    impressions: int
    spend: Decimal


def story_report(*, brand: Brand) -> list[StoryRow]:
    """Per story where `brand` has an approved placement, an impression or a spend: approved placements,
    viewable impressions and spend, most spend first."""
    placements = dict(
        GenerationOption.objects.filter(brand=brand, review_status=ReviewStatus.APPROVED)
        .values("request__story")
        .annotate(n=Count("pk"))
        .values_list("request__story", "n")
    )
    impressions = dict(
        PlacementView.objects.filter(brand=brand)
        .values("option__request__story")
        .annotate(n=Count("pk"))
        .values_list("option__request__story", "n")
    )
    spend_by_story = dict(
        CampaignSpend.objects.filter(campaign__brand=brand)
        .values("option__request__story")
        .annotate(s=Sum("amount"))
        .values_list("option__request__story", "s")
    )
    ids = set(placements) | set(impressions) | set(spend_by_story)
    stories = Story.objects.filter(pk__in=ids).only("title", "slug", "is_published")
    rows = [
        StoryRow(
            story_id=s.pk,
            title=s.title,
            slug=s.slug,
            is_published=s.is_published,
            placements=placements.get(s.pk, 0),
            impressions=impressions.get(s.pk, 0),
            spend=spend_by_story.get(s.pk) or Decimal(0),
        )
        for s in stories
    ]
    return sorted(rows, key=lambda r: (-r.spend, -r.impressions, r.title.lower()))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: one that starts like a formula gets a leading quote (OWASP's
    CSV injection advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def report_csv(*, header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (the csv module's quoting, a header row, every cell made formula-safe)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([csv_cell(h) for h in header])
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return out.getvalue()


CAMPAIGN_CSV_HEADER = ("date", "campaign", "viewable impressions", "disclosure opens", "placements", "spend")
STORY_CSV_HEADER = ("story", "published", "placements", "viewable impressions", "spend")


def campaign_report_csv(*, report: CampaignReport) -> str:
    name = report.campaign.name
    return report_csv(
        header=CAMPAIGN_CSV_HEADER,
        rows=(
            (r.day.isoformat(), name, r.impressions, r.disclosure_opens, r.placements, r.spend)
            for r in report.days
        ),
    )


def story_report_csv(*, rows: list[StoryRow]) -> str:
    return report_csv(
        header=STORY_CSV_HEADER,
        rows=((r.title, "yes" if r.is_published else "no", r.placements, r.impressions, r.spend) for r in rows),
    )


# --- The public placement register ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterRow:
    brand: str
    story_title: str
    story_slug: str
    chapter_number: int | None  # the story's chapter that carries it; None: a reader's own chapter
    approved_at: datetime | None
    first_impression: datetime | None
    last_impression: datetime | None


def placement_register_page(*, number: object, per_page: int = 50) -> Page:
    """One page of the approved placements in published stories of brands staff approved (brands.approval),
    newest approval first (`number` clamped as `mesu_web.paging` says). Names no reader."""
    qs = (
        GenerationOption.objects.filter(
            approved_q("brand__"),
            review_status=ReviewStatus.APPROVED,
            brand__isnull=False,
            request__story__is_published=True,
        )
        .annotate(first_view=Min("views__created_at"), last_view=Max("views__created_at"))
        .order_by("-reviewed_at", "-pk")
        .values_list(
            "brand__name",
            "request__story__title",
            "request__story__slug",
            "accepted_chapter__number",
            "reviewed_at",
            "first_view",
            "last_view",
        )
    )
    page = paging.page_get(qs, number=number, per_page=per_page)
    page.object_list = [RegisterRow(*row) for row in page.object_list]
    return page

