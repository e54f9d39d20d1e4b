"""Reads: brands a manager may see, story and reader settings, and matching brands to a story."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page, Paginator
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Window
from django.db.models.functions import TruncWeek
from django.http import Http404
from django.utils import timezone
from pgvector.django import CosineDistance

from brands.brief import BriefAsset, BriefBrand
from brands.embedder import get_embedder
from brands.models import (
    Brand,
    BrandAsset,
    PlacementDecision,
    PlacementView,
    ReaderSponsorshipPreference,
    StoryBrandSettings,
    text_hash,
)
from writer import roles
from writer.models import Chapter, GenerationOption, ReviewStatus, Story

AnyUser = AbstractBaseUser | AnonymousUser

CONTEXT_CHAPTERS = 2  # the latest chapters that describe "where the story is now"
# The end of each of those chapters: MiniLM reads at most 256 word pieces (~1,100 characters of
# English prose at ~4.5 characters a piece); more would be cut off unread.
CHAPTER_TAIL_CHARS = 1100
METADATA_CHARS = 1100  # the same limit for each other part
HNSW_EF_SEARCH = 100  # candidates the index keeps per query (pgvector's default is 40)
HNSW_MAX_SCAN_TUPLES = 2000  # tuples an iterative scan may visit before it gives up


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


# --- Matching --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrandMatch:
    brand: Brand
    asset: BrandAsset
    distance: float  # cosine distance between the story context and the asset: 0 = same meaning


def _tail(text: str, chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    space = cut.find(" ")
    return cut[space + 1 :] if 0 <= space < 40 else cut  # start at a word


def _latest_chapters(story: Story) -> list[Chapter]:
    return list(reversed(Chapter.objects.filter(story=story).order_by("-number")[:CONTEXT_CHAPTERS]))


def story_context_parts(story: Story, preference: str = "") -> list[str]:
    """What the story is about now, as short texts that are embedded one by one and averaged.

    Genre and tags, summary, setting, the end of each latest chapter, and the reader's wish. One
    vector per part keeps a long context from being cut off at the embedder's input limit, and every
    part counts the same. The title (often a metaphor) and the character list (names) were measured
    to blur matches, so they are left out.
    """
    labels = ", ".join(story.tags)
    head = f"{story.genre}: {labels}" if story.genre and labels else story.genre or labels
    parts = [head, story.summary, story.setting]
    parts += [_tail(c.text, CHAPTER_TAIL_CHARS) for c in _latest_chapters(story)]
    if preference.strip():
        parts.append(f"The reader wishes: {preference.strip()}")
    parts = [" ".join(p.split())[:METADATA_CHARS] for p in parts]
    return [p for p in parts if p] or [story.title]


def story_context_text(story: Story, preference: str = "") -> str:
    """The context as one text (for display and logs); matching embeds its parts."""
    return "\n\n".join(story_context_parts(story, preference))


def _theme_pattern(theme: str) -> re.Pattern[str]:
    # "self-harm" also hits "self harm" and "self_harm"; a trailing "s"/"es" hits plurals ("drugs").
    words = [re.escape(w) for w in re.split(r"[\s_-]+", theme.strip().lower()) if w]
    return re.compile(r"\b" + r"[\s_-]+".join(words) + r"(?:s|es)?\b", re.IGNORECASE)


def story_safety_text(story: Story, preference: str = "") -> str:
    """Everything a banned theme is looked for in: metadata, the latest chapters in full, the wish."""
    fields = [
        story.title,
        story.genre,
        ", ".join(story.tags),
        story.summary,
        story.setting,
        story.characters,
        story.intent_notes,
        preference,
    ]
    fields += [c.text for c in _latest_chapters(story)]
    return "\n".join(f for f in fields if f)


def banned_themes_hit(*, text: str, themes: Iterable[str]) -> list[str]:
    """The themes that occur in `text` as words or phrases, case-insensitively."""
    return [t for t in themes if t.strip() and _theme_pattern(t).search(text)]


def brands_blocked_for_story(*, story: Story, preference: str = "") -> dict[int, list[str]]:
    """Brand id -> why it may not appear: its banned themes found in the story, or the author's exclusion.

    Lexical on purpose: predictable, and it errs on the safe side (a story that says "no violence"
    still blocks a brand that bans violence; missing a placement costs less than a bad one).
    """
    blocked: dict[int, list[str]] = {}
    text = story_safety_text(story, preference)
    for brand_id, themes in Brand.objects.exclude(banned_themes=[]).values_list("pk", "banned_themes"):
        hits = banned_themes_hit(text=text, themes=themes)
        if hits:
            blocked[brand_id] = [f"banned theme: {t}" for t in hits]
    for brand_id in story_excluded_brand_ids(story=story):
        blocked.setdefault(brand_id, []).append("excluded by the author")
    return blocked


def _mean_unit(vectors: Sequence[Sequence[float]]) -> list[float]:
    sums = [sum(column) for column in zip(*vectors, strict=True)]
    norm = sum(x * x for x in sums) ** 0.5 or 1.0
    return [x / norm for x in sums]


def nearest_assets_queryset(
    *, query: Sequence[float], model_id: str, excluded_brand_ids: Iterable[int], max_distance: float
) -> QuerySet[BrandAsset]:
    """Assets by cosine distance to `query`, nearest first, leaving out `excluded_brand_ids`.

    One table, ordered by the distance alone, and only a NOT IN on brands (which no other index can
    serve): so the planner walks the HNSW index instead of sorting every asset of a few brands.
    """
    return (
        BrandAsset.objects.filter(embedding__isnull=False, embedding_model=model_id)
        .exclude(brand_id__in=list(excluded_brand_ids))
        .annotate(distance=CosineDistance("embedding", list(query)))
        .filter(distance__lte=max_distance)
        .order_by("distance")
    )


def brand_match_for_story(
    *, story: Story, preference: str = "", k: int = 5, max_distance: float | None = None
) -> list[BrandMatch]:
    """The `k` brand assets nearest to the story's context, nearest first, after safety filtering.

    Never returns an inactive brand, a brand whose banned themes occur in the story (or the wish), a
    brand the author excluded, or an asset farther than `max_distance` (BRAND_MATCH_MAX_DISTANCE).
    Only vectors of the current embedder count; `services.assets_embed_missing` fills the others.
    Does not check the story's opt-in or the reader's switch: generation does (`sponsorship_allowed`).
    """
    if k < 1:
        return []
    limit = settings.BRAND_MATCH_MAX_DISTANCE if max_distance is None else max_distance
    excluded = set(brands_blocked_for_story(story=story, preference=preference))
    excluded |= set(Brand.objects.filter(is_active=False).values_list("pk", flat=True))
    embedder = get_embedder()
    query = _mean_unit(embedder.embed(story_context_parts(story, preference)))
    qs = nearest_assets_queryset(
        query=query, model_id=embedder.model_id, excluded_brand_ids=excluded, max_distance=limit
    )
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Filters apply after the HNSW scan: keep scanning (in exact order) until k rows pass them,
            # instead of returning fewer than k when excluded brands sit nearest (pgvector >= 0.8).
            cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            cursor.execute(f"SET LOCAL hnsw.ef_search = {int(HNSW_EF_SEARCH)}")
            # A story with fewer than k safe assets within the distance limit would otherwise scan on to
            # pgvector's default cap of 20,000 tuples: p95 137 ms at 1M assets, 12 ms at 2,000 with the
            # same recall (docs/benchmarks.md, brand matching).
            cursor.execute(f"SET LOCAL hnsw.max_scan_tuples = {int(HNSW_MAX_SCAN_TUPLES)}")
        assets = list(qs[:k])
    brands = Brand.objects.in_bulk({a.brand_id for a in assets})
    for asset in assets:
        asset.brand = brands[asset.brand_id]
    return [BrandMatch(brand=a.brand, asset=a, distance=float(a.distance)) for a in assets]


# --- The review queue and the dashboard ------------------------------------------------------------


_QUEUE_ORDER = ("created_at", "request_id", "index")  # oldest first, then in each request's order


def _review_queue_pending(user: AnyUser) -> QuerySet[GenerationOption]:
    approved_sibling = GenerationOption.objects.filter(
        request=OuterRef("request"), review_status=ReviewStatus.APPROVED
    )
    return GenerationOption.objects.filter(
        review_status=ReviewStatus.PENDING, brand__in=_brand_pks_for_manager(user)
    ).exclude(Exists(approved_sibling))


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
    option drops out (exactly one option per request is approved). The whole queue: pages show it
    through `review_queue_page` (a brand can have thousands waiting)."""
    return _with_queue_columns(_review_queue_pending(user))


def review_queue_page(*, user: AnyUser, number: object, per_page: int) -> Page:
    """One page of `review_queue_for_manager` (`number` as in `Paginator.get_page`: past the end, the last).

    Two queries: the page's option ids with the queue's length (a window count) from the options table
    alone, then those options joined to their request, story, brand and asset. Joining the whole queue
    before cutting it, plus a COUNT, cost 2.4 ms of planning and execution against 1.4 ms this way
    (EXPLAIN ANALYZE, 400 pending of a manager's 2 brands among 100,000 options)."""
    pending = _review_queue_pending(user).order_by(*_QUEUE_ORDER)
    paginator = Paginator(pending.values("pk"), per_page)
    try:
        number = max(1, int(number))
    except (TypeError, ValueError):
        number = 1
    ids, total = _review_queue_ids(pending, number, per_page)
    if not ids and number > 1:  # past the end: count, then the last page
        paginator.count = pending.count()
        number = paginator.num_pages
        ids, total = _review_queue_ids(pending, number, per_page)
    paginator.count = total  # Paginator's cached count, here from the window: no COUNT query of its own
    rows = list(_with_queue_columns(GenerationOption.objects.filter(pk__in=ids))) if ids else []
    return Page(rows, number, paginator)


def _review_queue_ids(pending: QuerySet[GenerationOption], number: int, per_page: int) -> tuple[list[int], int]:
    start = (number - 1) * per_page
    rows = list(pending.annotate(total=Window(Count("pk"))).values_list("pk", "total")[start : start + per_page])
    return [pk for pk, _ in rows], (rows[0][1] if rows else 0)


def option_get_for_manager(*, pk: int, user: AnyUser) -> GenerationOption:
    """404 unless the option carries a brand the user manages (staff: any branded option)."""
    option = (
        GenerationOption.objects.select_related("request", "request__story", "brand", "asset", "reviewed_by")
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
class BrandDashboard:
    proposed: int  # options whose text names one of the brand's assets
    approved: int
    rejected: int
    pending: int
    views: int  # readers who saw an approved chapter, once per reader and chapter
    rows: list[WeekRow]  # newest week first

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
    return BrandDashboard(views=views.count(), rows=rows, **totals)


def decision_list_for_brand(*, brand: Brand, limit: int = 50) -> list[PlacementDecision]:
    return list(
        PlacementDecision.objects.filter(brand=brand)
        .select_related("reviewer", "option", "option__request", "option__request__story")
        .order_by("-created_at")[:limit]
    )


def brief_parts(*, brand: Brand, asset: BrandAsset | None) -> tuple[BriefBrand, BriefAsset | None]:
    """The brand and asset as the (Django-free) brief builder takes them."""

    def convert(a: BrandAsset) -> BriefAsset:
        return BriefAsset(kind=a.kind, name=a.name, description=a.description, terms=tuple(a.terms))

    brief_brand = BriefBrand(
        name=brand.name,
        description=brand.description,
        tone_of_voice=brand.tone_of_voice,
        target_audience=brand.target_audience,
        max_placements=brand.max_placements_per_chapter,
        assets=tuple(convert(a) for a in brand.assets.all()),
    )
    return brief_brand, convert(asset) if asset is not None else None
