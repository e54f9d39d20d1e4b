"""Everything the writer needs from brands, in one module: whether a request may carry a brand, which
brands' assets match the story (pgvector over sentence-transformers vectors, after the safety filters),
and how the matches are spread over the options (`OptionPlan`: a brief for the prompt, the terms to find).

The writer calls `brand_use_for_request` when a request is made and `option_plans_for_request` when it is
written; an option's placements are found with `OptionPlan.mentions_in`; a reader's view of an approved
placement is counted with `placement_view_record`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet
from pgvector.django import CosineDistance

from brands.brief import PLACEMENT_HINTS, BriefAsset, BriefBrand, placement_terms, render_brand_brief
from brands.embedder import get_embedder
from brands.models import Brand, BrandAsset, PlacementView
from brands.placements import find_mentions, mention_spans
from brands.selectors import sponsorship_allowed, story_excluded_brand_ids
from writer.models import Chapter, GenerationOption, ReviewStatus, Story

CONTEXT_CHAPTERS = 2  # the latest chapters that describe "where the story is now"
# The end of each of those chapters: MiniLM reads at most 256 word pieces (~1,100 characters of
# English prose at ~4.5 characters a piece); more would be cut off unread.
CHAPTER_TAIL_CHARS = 1100
METADATA_CHARS = 1100  # the same limit for each other part
HNSW_EF_SEARCH = 100  # candidates the index keeps per query (pgvector's default is 40)
HNSW_MAX_SCAN_TUPLES = 2000  # tuples an iterative scan may visit before it gives up


# --- Matching: the nearest safe assets to a story -------------------------------------------------


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
    Does not check the story's opt-in or the reader's switch: `brand_use_for_request` does.
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


# --- The writer's side: may a request carry a brand, and what each option is asked to carry ---------


def brand_use_for_request(*, story: Story, reader: AbstractBaseUser | None, use_brands: bool | None) -> tuple[bool, str]:
    """Whether a new request places brands, and why not when it was asked to.

    `reader`: who asks, for a reader's chapter (None for the author's). `use_brands`: None follows the
    story's opt-in and the reader's switch; True asks for placements (still only where both allow them);
    False never places brands.
    """
    allowed = sponsorship_allowed(story=story, reader=reader)
    note = ""
    if use_brands and not allowed:
        note = (
            "No brand placement: the reader turned sponsored chapters off."
            if reader is not None and sponsorship_allowed(story=story)
            else "No brand placement: the author has not opted this story in."
        )
    return allowed and use_brands is not False, note


def story_brands_opt_in(*, story: Story) -> None:
    """The author opts `story` in to brand placements (`import_book --brands-opt-in`); the brands it
    excluded stay excluded."""
    from brands.services import story_brand_settings_update

    excluded = story_excluded_brand_ids(story=story)
    story_brand_settings_update(story=story, opt_in=True, excluded_brand_ids=excluded)


@dataclass(frozen=True)
class OptionPlan:
    """What one option is asked to carry: nothing, or one brand asset placed a given way."""

    brand_id: int | None = None
    asset_id: int | None = None
    hint: str = ""
    brief: str = ""
    terms: tuple[str, ...] = ()

    def mentions_in(self, text: str) -> list[list[int]]:
        """Where the option's text names the asset ([[start, end], ...]); none for a plain option."""
        return mention_spans(find_mentions(text, self.terms)) if self.brand_id else []


@dataclass(frozen=True)
class OptionPlans:
    plans: list[OptionPlan]
    note: str  # which brands were matched, or why none was: shown on the request


def option_plans_for_request(*, story: Story, preference: str, n: int) -> OptionPlans:
    """Spread the matched brands over `n` options (nearest first; with fewer brands than options, the
    same brand placed another way). No safe match: plain options, and the note says why."""
    from brands.services import assets_embed_missing

    assets_embed_missing()  # a brand saved a moment ago may not have its vector from the queue yet
    matches = brand_match_for_story(story=story, preference=preference, k=max(5, 2 * n))
    best_per_brand: dict[int, BrandMatch] = {}
    for match in matches:
        best_per_brand.setdefault(match.brand.pk, match)
    chosen = list(best_per_brand.values())
    if not chosen:
        return OptionPlans(
            [OptionPlan()] * n,
            "No brand matched this story safely (nearest too far, excluded, or banned themes): plain options.",
        )
    plans = []
    for i in range(n):
        match = chosen[i % len(chosen)]
        hint = PLACEMENT_HINTS[i % len(PLACEMENT_HINTS)]
        brief_brand, brief_asset = brief_parts(brand=match.brand, asset=match.asset)
        plans.append(
            OptionPlan(
                brand_id=match.brand.pk,
                asset_id=match.asset.pk,
                hint=hint,
                brief=render_brand_brief(brief_brand, asset=brief_asset, placement_hint=hint),
                terms=placement_terms(brief_brand, brief_asset),
            )
        )
    note = "Matched: " + ", ".join(f"{m.brand.name} ({m.asset.name}, distance {m.distance:.2f})" for m in chosen)
    return OptionPlans(plans, note)


def placement_view_record(*, option: GenerationOption, user: AbstractBaseUser) -> None:
    """Count a reader's view of an approved branded chapter once per reader and chapter."""
    if option.review_status != ReviewStatus.APPROVED or option.brand_id is None or not user.is_authenticated:
        return
    PlacementView.objects.get_or_create(option=option, user=user, defaults={"brand_id": option.brand_id})


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
