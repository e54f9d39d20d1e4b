"""Everything the writer needs from brands, in one module: whether a request may carry a brand, which
brands' assets match the story (pgvector over sentence-transformers vectors, after the safety filters),
and how the matches are spread over the options (`OptionPlan`: a brief for the prompt, the terms to find).

The writer calls `brand_use_for_request` when a request is made and `option_plans_for_request` when it is
written, and `place_in_drafts` puts a brand into chapters written without it; a reader's view of an
approved placement is counted with `placement_view_record`.

Placement integrity (the last section): `option_placement` scans each new option's chapter and reasoning
for every name of every brand (`brand_catalogue`) and decides whether it needs a brand's review;
`option_acceptance` checks an accepted (perhaps edited) text against the approval it claims, and
`chapter_placement_sync` does the same for a chapter edited after it was accepted, and
`chapter_placement_check` reads the result for the chapter page.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, Max, QuerySet
from django.urls import reverse
from pgvector.django import CosineDistance

from brands.approval import APPROVED
from brands.brief import PLACEMENT_HINTS, BriefAsset, BriefBrand, placement_terms, render_brand_brief
from brands.campaigns import offerable_assets, reader_cap_room
from brands.embedder import bertscore_f1, get_embedder
from brands.insertion import (
    Passage,
    Placed,
    RewritePrompt,
    add_sentence,
    added_sentence,
    closest,
    passages,
    place,
    placement_similarity,
    ranked_passages,
    rewrite_messages,
    rewritten_passage,
    sentence_prompt,
)
from brands.models import Brand, BrandAsset, BrandSuitability, PlacementView, text_hash
from brands.placements import Name, NameCatalogue, NameHit, find_mentions, quoted_runs
from brands.selectors import sponsorship_allowed, story_excluded_brand_ids
from mesu_web.notifications.services import notification_create
from writer.models import Chapter, GenerationOption, GenerationRequest, ReviewStatus, Story
from writer.quality import rouge_l

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
    campaign_id: int | None = None  # the live campaign that pays for the asset here (brands.campaigns)


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
    from brands.suitability import brands_blocked_by_suitability

    blocked: dict[int, list[str]] = {}
    for brand_id, reasons in brands_blocked_by_suitability(story=story).items():
        blocked.setdefault(brand_id, []).extend(reasons)
    text = story_safety_text(story, preference)
    for brand_id, themes in Brand.objects.exclude(banned_themes=[]).values_list("pk", "banned_themes"):
        hits = banned_themes_hit(text=text, themes=themes)
        if hits:
            blocked.setdefault(brand_id, []).extend(f"banned theme: {t}" for t in hits)
    for brand_id in story_excluded_brand_ids(story=story):
        blocked.setdefault(brand_id, []).append("excluded by the author")
    return blocked


def _mean_unit(vectors: Sequence[Sequence[float]]) -> list[float]:
    sums = [sum(column) for column in zip(*vectors, strict=True)]
    norm = sum(x * x for x in sums) ** 0.5 or 1.0
    return [x / norm for x in sums]


def nearest_assets_queryset(
    *,
    query: Sequence[float],
    model_id: str,
    excluded_brand_ids: Iterable[int],
    max_distance: float,
    asset_ids: Iterable[int] | None = None,
) -> QuerySet[BrandAsset]:
    """Assets by cosine distance to `query`, nearest first, leaving out `excluded_brand_ids`, and only
    `asset_ids` when given (the assets in play in a live campaign).

    One table, ordered by the distance alone, and only a NOT IN on brands (which no other index can
    serve) and an IN on the few assets in play: so the planner walks the HNSW index (or, with few assets
    in play, reads those by key) instead of sorting every asset of a few brands.
    """
    qs = BrandAsset.objects.filter(embedding__isnull=False, embedding_model=model_id)
    if asset_ids is not None:
        qs = qs.filter(pk__in=list(asset_ids))
    return (
        qs.exclude(brand_id__in=list(excluded_brand_ids))
        .annotate(distance=CosineDistance("embedding", list(query)))
        .filter(distance__lte=max_distance)
        .order_by("distance")
    )


def brand_match_for_story(
    *,
    story: Story,
    preference: str = "",
    k: int = 5,
    max_distance: float | None = None,
    only_brand_id: int | None = None,
    reader: AbstractBaseUser | None = None,
) -> list[BrandMatch]:
    """The `k` brand assets nearest to the story's context, nearest first, after safety filtering.

    Never returns an inactive brand, a brand whose banned themes occur in the story (or the wish), a
    brand the author excluded, or an asset farther than `max_distance` (BRAND_MATCH_MAX_DISTANCE).
    Only assets in play in a live campaign (active, inside its flight) with budget left today, whose caps
    this story (and `reader`, for a reader's chapter) have not reached (`campaigns.offerable_assets`);
    each match names the campaign that pays for it. Only vectors of the current embedder count;
    `services.assets_embed_missing` fills the others. Does not check the story's opt-in or the reader's
    switch: `brand_use_for_request` does.
    """
    if k < 1:
        return []
    limit = settings.BRAND_MATCH_MAX_DISTANCE if max_distance is None else max_distance
    offer = offerable_assets(story_id=story.pk, reader_id=reader.pk if reader is not None else None)
    if not offer:
        return []
    excluded = set(brands_blocked_for_story(story=story, preference=preference))
    excluded |= set(Brand.objects.filter(is_active=False).values_list("pk", flat=True))
    if only_brand_id is not None:  # a partner's request: that brand or nothing
        excluded |= set(Brand.objects.exclude(pk=only_brand_id).values_list("pk", flat=True))
    embedder = get_embedder()
    query = _mean_unit(embedder.embed(story_context_parts(story, preference)))
    qs = nearest_assets_queryset(
        query=query, model_id=embedder.model_id, excluded_brand_ids=excluded, max_distance=limit, asset_ids=offer
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
    return [
        BrandMatch(brand=a.brand, asset=a, distance=float(a.distance), campaign_id=offer[a.pk].pk) for a in assets
    ]


def brand_categories(brand_ids: Iterable[int]) -> dict[int, str]:
    """Brand id -> its own IAB category (BrandSuitability.category), for brands that have one."""
    return {
        brand_id: category.strip().lower()
        for brand_id, category in BrandSuitability.objects.filter(brand_id__in=list(brand_ids))
        .exclude(category="")
        .values_list("brand_id", "category")
        if category.strip()
    }


def competing_pairs(brand_ids: Iterable[int]) -> list[tuple[int, int, str]]:
    """The pairs of `brand_ids` that compete (the same non-empty category), with that category."""
    ids = list(dict.fromkeys(brand_ids))
    categories = brand_categories(ids)
    return [
        (a, b, categories[a])
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
        if a in categories and categories.get(b) == categories[a]
    ]


# --- The writer's side: may a request carry a brand, and what each option is asked to carry ---------


def brand_use_for_request(
    *, story: Story, reader: AbstractBaseUser | None, use_brands: bool | None
) -> tuple[bool, str]:
    """Whether a new request places brands, and why not when it was asked to.

    `reader`: who asks, for a reader's chapter (None for the author's). `use_brands`: None follows the
    story's opt-in and the reader's switch; True asks for placements (still only where both allow them);
    False never places brands.
    """
    from brands.suitability import reader_placement_block

    blocked = reader_placement_block(reader=reader)
    if blocked:  # never a placement for this reader, whatever was asked
        return False, f"No brand placement: {blocked}"
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
    campaign_id: int | None = None  # the live campaign that pays for the asset (brands.campaigns)
    hint: str = ""
    brief: str = ""
    terms: tuple[str, ...] = ()

    def mentions_in(self, text: str) -> list[list[int]]:
        """Where the option's text names the asset ([[start, end], ...]); none for a plain option.

        The terms follow `NameCatalogue`'s rules (a term that is an ordinary word, "Glide", counts only
        where it reads as a name), plus `find_mentions`' typos; `option_placement` looks for every brand."""
        if not self.brand_id or not self.terms:
            return []
        [hits] = _with_typos(_plan_catalogue(self.terms).scan(text), [text], self.terms, owner=0)
        return [[h.start, h.end] for h in hits]


@dataclass(frozen=True)
class OptionPlans:
    plans: list[OptionPlan]
    note: str  # which brands were matched, or why none was: shown on the request


def option_plans_for_request(
    *,
    story: Story,
    preference: str,
    n: int,
    with_brief: bool = True,
    reader: AbstractBaseUser | None = None,
    only_brand_id: int | None = None,
) -> OptionPlans:
    """Spread the matched brands over `n` options (nearest first; with fewer brands than options, the
    same brand placed another way). No safe match: plain options, and the note says why. `with_brief`
    False: the plans carry no brief (the chapter is written without the brand and placed after, with
    `place_in_draft`)."""
    from brands.services import assets_embed_missing

    assets_embed_missing()  # a brand saved a moment ago may not have its vector from the queue yet
    matches = brand_match_for_story(
        story=story, preference=preference, k=max(5, 2 * n), only_brand_id=only_brand_id, reader=reader
    )
    best_per_brand: dict[int, BrandMatch] = {}
    for match in matches:
        best_per_brand.setdefault(match.brand.pk, match)
    # Competing brands (one category) never share a chapter: the options of one request are versions of
    # one chapter, so only the nearest brand of each category is spread over them.
    categories = brand_categories(best_per_brand)
    seen_categories: set[str] = set()
    chosen = []
    for brand_id, match in best_per_brand.items():
        category = categories.get(brand_id)
        if category is not None:
            if category in seen_categories:
                continue
            seen_categories.add(category)
        chosen.append(match)
    if not chosen:
        return OptionPlans(
            [OptionPlan()] * n,
            "No brand matched this story safely (no live campaign with budget left, a cap reached, nearest too "
            "far, excluded, or banned themes): plain options.",
        )
    # A reader's cap per day counts every option of the brand in the reader's chapters (brands.campaigns):
    # a brand near its cap carries no more options than the cap has room for; the rest go to the other
    # brands chosen, or are plain.
    room = reader_cap_room(reader_id=reader.pk, campaign_ids=[m.campaign_id for m in chosen]) if reader else {}
    plans = []
    for i in range(n):
        hint = PLACEMENT_HINTS[i % len(PLACEMENT_HINTS)]
        match = next(
            (
                m
                for m in (chosen[(i + j) % len(chosen)] for j in range(len(chosen)))
                if room.get(m.campaign_id) is None or room[m.campaign_id] > 0
            ),
            None,
        )
        if match is None:
            plans.append(OptionPlan())
            continue
        if room.get(match.campaign_id) is not None:
            room[match.campaign_id] -= 1
        brief_brand, brief_asset = brief_parts(brand=match.brand, asset=match.asset)
        plans.append(
            OptionPlan(
                brand_id=match.brand.pk,
                asset_id=match.asset.pk,
                campaign_id=match.campaign_id,
                hint=hint,
                brief=render_brand_brief(brief_brand, asset=brief_asset, placement_hint=hint)
                if with_brief
                else "",
                terms=placement_terms(brief_brand, brief_asset),
            )
        )
    note = "Matched: " + ", ".join(
        f"{m.brand.name} ({m.asset.name}, distance {m.distance:.2f})" for m in chosen
    )
    return OptionPlans(plans, note)


@dataclass(frozen=True)
class PlacementOutcome:
    """What "write first, then place" made of one branded option's draft."""

    text: str  # the draft with one passage rewritten to name the asset; the draft itself when not placed
    draft: str
    placed: bool
    note: str  # where it was placed, or why it could not be ("could not place naturally: ...")
    passage: tuple[int, int] | None = None  # [start, end) of the rewritten passage in `text`
    # Placed: the text's ROUGE-L against the draft and the passage's BERTScore (brands.insertion).
    similarity: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _PendingPlacement:
    """A place in a draft (a passage) with its rewrite prompt built, waiting for the writer's answers."""

    draft: str
    plan: OptionPlan
    asset: BrandAsset
    index: int  # of the passage among the draft's
    count: int  # passages in the draft
    passage: Passage
    prompt: RewritePrompt
    style: str  # "sentence" or "passage" (BRAND_PLACEMENT_STYLE)


# The least ROUGE-L F1 a placed chapter keeps against its draft (issue 14's goal for write-then-place).
MIN_PLACED_ROUGE_L = 0.9


def place_in_draft(
    *, draft: str, plan: OptionPlan, rewrite: Callable[[RewritePrompt], list[str]]
) -> PlacementOutcome:
    """Put the plan's asset into `draft`, a chapter written without it (brands/insertion.py): at the
    passage nearest the asset in meaning (MiniLM), `rewrite(prompt)`, the writer's engine asked once for
    a few candidates, either adds a sentence that starts with the asset's term or rewrites the passage
    (BRAND_PLACEMENT_STYLE). The candidates that name the asset by an exact term, keep to the length,
    stay within the brand's cap and hit none of its banned themes are kept, and the one nearest in
    meaning to the passage as written goes in. None passes: the writer is asked again at the passage where
    the asset fits next best, up to BRAND_PLACEMENT_ROUNDS calls in all; then the draft stays as it was,
    and the note says why."""
    return place_in_drafts([(draft, plan)], rewrite_all=lambda prompts: [rewrite(p) for p in prompts])[0]


def place_in_drafts(
    items: Sequence[tuple[str, OptionPlan]],
    *,
    rewrite_all: Callable[[list[RewritePrompt]], list[list[str]]],
) -> list[PlacementOutcome]:
    """`place_in_draft` for several (draft, plan) pairs, with one `rewrite_all(prompts)` for all of them
    (the candidates of each prompt, in order): the writer's engine can write the rewrites of a request's
    options together instead of one after another."""
    outcomes: list[PlacementOutcome | None] = []
    pending: list[list[_PendingPlacement]] = []
    for draft, plan in items:
        prepared = _placement_prompt(draft, plan)
        outcomes.append(prepared if isinstance(prepared, PlacementOutcome) else None)
        if not isinstance(prepared, PlacementOutcome):
            pending.append(prepared)
    # A draft none of whose candidates passed is asked again, up to BRAND_PLACEMENT_ROUNDS calls in all,
    # each time at the passage where the asset fits next best (a small writer that stumbles over one
    # passage often goes on well from another).
    results: list[PlacementOutcome | None] = [None] * len(pending)
    reasons: list[list[str]] = [[] for _ in pending]
    for round_ in range(settings.BRAND_PLACEMENT_ROUNDS):
        todo = [i for i, result in enumerate(results) if result is None or not result.placed]
        if not todo:
            break
        spots = [pending[i][round_ % len(pending[i])] for i in todo]
        got = rewrite_all([spot.prompt for spot in spots])
        if len(got) != len(todo):
            raise ValueError(f"rewrite_all answered {len(got)} prompts of {len(todo)}")
        for i, spot, candidates in zip(todo, spots, got, strict=True):
            results[i] = _placement_result(spot, candidates, reasons[i])
    finished = iter(results)
    return [outcome if outcome is not None else next(finished) for outcome in outcomes]


def _placement_prompt(draft: str, plan: OptionPlan) -> PlacementOutcome | list[_PendingPlacement]:
    """The places to try, best first: one per round (fewer passages than rounds: the best again)."""
    asset = BrandAsset.objects.select_related("brand").get(pk=plan.asset_id)
    brand = asset.brand
    found = passages(draft)
    if not found or not plan.terms:
        return PlacementOutcome(draft, draft, False, "Could not place naturally: the chapter is empty.")
    # A brand never appears in a chapter that touches a theme it bans, wherever the writer put it (the
    # 2026-12-07 benchmark placed a surfboard into a draft that "smells of drugs").
    banned = banned_themes_hit(text=draft, themes=brand.banned_themes)
    if banned:
        why = f"the chapter touches a theme {brand.name} bans ({', '.join(banned)})"
        return PlacementOutcome(draft, draft, False, f"Could not place: {why}.")
    ranked = ranked_passages(
        found, f"{asset.kind}: {asset.name}. {asset.description}".strip(), embed=get_embedder().embed
    )
    style = settings.BRAND_PLACEMENT_STYLE
    spots = []
    for index, _ in ranked[: settings.BRAND_PLACEMENT_ROUNDS]:
        passage = found[index]
        if style == "sentence":
            prompt = sentence_prompt(draft=draft, passage=passage, term=plan.terms[0])
        else:
            prompt = RewritePrompt(
                rewrite_messages(
                    passage=passage,
                    before=draft[: passage.start],
                    after=draft[passage.end :],
                    term=plan.terms[0],
                    asset_line=f"{asset.get_kind_display().lower()} of {brand.name}: {asset.description}".strip(
                        ": "
                    ),
                    brand_line=f"The brand's tone: {brand.tone_of_voice}." if brand.tone_of_voice else "",
                    hint=plan.hint,
                )
            )
        spots.append(_PendingPlacement(draft, plan, asset, index, len(found), passage, prompt, style))
    return spots


def _placement_result(
    pending: _PendingPlacement, answers: Sequence[str], reasons: list[str]
) -> PlacementOutcome:
    """The best of `answers` placed in `pending`'s passage; none passes: the draft, with `reasons` (the
    earlier rounds', extended with this one's) in the note."""
    draft, plan, asset, passage = pending.draft, pending.plan, pending.asset, pending.passage
    brand = asset.brand
    good: list[Placed] = []
    for answer in answers:
        try:
            if pending.style == "sentence":
                sentence = added_sentence(answer, pending.prompt, plan.terms[0])
                placed = add_sentence(
                    draft, passage, sentence, terms=plan.terms, cap=brand.max_placements_per_chapter
                )
            else:
                candidate = rewritten_passage(answer)
                placed = place(
                    draft, passage, candidate, terms=plan.terms, cap=brand.max_placements_per_chapter
                )
        except ValueError as exc:
            reasons.append(str(exc))
            continue
        banned = banned_themes_hit(text=placed.rewrite, themes=brand.banned_themes)
        if banned:
            reasons.append(f"the rewrite touches a banned theme ({', '.join(banned)})")
            continue
        # The placed chapter reads as its draft did (ROUGE-L of the whole texts): in a short chapter one
        # long added sentence is too much of it (0.869 on a 157-word chapter, 2026-12-07).
        overlap = rouge_l(placed.text, draft)
        if overlap < MIN_PLACED_ROUGE_L:
            reasons.append(f"the rewrite changes too much of a short chapter (ROUGE-L {overlap:.2f})")
            continue
        good.append(placed)
    if not good:
        why = "; ".join(dict.fromkeys(reasons)) or "the writer returned nothing"
        return PlacementOutcome(draft, draft, False, f"Could not place naturally: {why}.")
    placed = good[0]
    if len(good) > 1:  # the candidate that reads most like the passage as written
        placed = good[closest(passage.text, [p.rewrite for p in good], embed=get_embedder().embed)]
    span = (passage.start, passage.start + len(placed.rewrite))
    how = "added a sentence to" if pending.style == "sentence" else "rewrote"
    note = (
        f"Placed {asset.name}: {how} passage {pending.index + 1} of {pending.count} of the chapter written "
        f"without the brand ({len(good)} of {len(answers)} candidates passed)."
    )
    similarity = placement_similarity(text=placed.text, draft=draft, passage=span, bertscore=bertscore_f1)
    return PlacementOutcome(placed.text, draft, True, note, span, similarity)


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


# --- Placement integrity: every name of every brand ----------------------------------------------
#
# The rules, in one place:
# 1. An option is a placement when its chapter or its reasoning names any brand, active or not, by any
#    name (the brand's name, an asset's name or term, a coined first word of one of those; folded as
#    `NameCatalogue` says), or when a branded option repeats its brand's brief word for word. Typos are
#    looked for in the names of the brand the option was asked to carry.
# 2. A placement of exactly one brand waits for that brand's review (PENDING): the planned brand, or
#    another one that this request may carry. One naming several brands, or a brand this chapter may
#    not carry (no opt-in, reader's switch off, excluded, banned theme, inactive, not approved by staff:
#    brands/approval.py), is HELD: never shown to a reader, never accepted. An option naming nothing
#    stays NONE (plain) or NOT_SENT (asked to carry a brand, did not).
# 3. Readers never see a brand's brief: the writer's pages show the reasoning of plain options only
#    (`GenerationOption.shows_reasoning`), and chapter text that repeats the brief goes to review.
# 4. An approval binds to the exact text approved (`approved_text_hash` on the option, `text_hash` on the
#    decision). Its passage is the sentences that name the brand. Accepting an edited text keeps the
#    label only while that passage is unchanged and no other brand is named; a changed passage sends
#    the edited text back to review instead of making a chapter. The author may edit everything else.
# 5. A chapter edited after acceptance is checked when it is saved (`chapter_placement_sync`, from
#    `writer.services.chapter_update`) and shown as that left it (`chapter_placement_check`): with
#    its approved passage intact it keeps the label; changed, the option goes back to review with the
#    chapter's text and readers get a notice instead of the text until the brand approves it (or the
#    author takes the brand out); edited to name another brand, it is held until that name goes. The
#    label never shows over text the brand did not approve, and readers never read a brand name that no
#    review let through.


@dataclass(frozen=True)
class BrandCatalogue:
    """Every brand's names, compiled, with what the integrity checks need about each brand."""

    names: NameCatalogue
    brand_names: dict[int, str]
    active: frozenset[int]
    terms: dict[int, tuple[str, ...]]  # brand id -> every name, for the typo search
    # Brands staff have not approved (pending or rejected, brands.approval): named, they are held back.
    unapproved: frozenset[int] = frozenset()
    briefs: dict[int, tuple[str, ...]] = field(default_factory=dict)  # brand id -> what its brief quotes
    asset_briefs: dict[int, str] = field(default_factory=dict)  # asset id -> its description

    def brief_sources(self, brand_id: int, asset_id: int | None) -> tuple[str, ...]:
        extra = (self.asset_briefs.get(asset_id, ""),) if asset_id is not None else ()
        return self.briefs.get(brand_id, ()) + extra


_catalogue_lock = threading.Lock()
_catalogue: tuple[tuple, BrandCatalogue] | None = None


def _catalogue_version() -> tuple:
    """Changes whenever a brand or an asset is added, changed (updated_at) or deleted."""
    stamp = {"n": Count("pk"), "top": Max("pk"), "at": Max("updated_at")}
    brands = Brand.objects.aggregate(**stamp)
    assets = BrandAsset.objects.aggregate(**stamp)
    return tuple(brands.values()) + tuple(assets.values())


def brand_catalogue() -> BrandCatalogue:
    """Every name of every brand, compiled once per process and version of the catalogue (two aggregate
    queries per call check the version). Building it for 1,000 brands of 5 assets takes ~0.1 s."""
    global _catalogue
    version = _catalogue_version()
    cached = _catalogue
    if cached is not None and cached[0] == version:
        return cached[1]
    with _catalogue_lock:
        if _catalogue is not None and _catalogue[0] == version:
            return _catalogue[1]
        brands = list(
            Brand.objects.values_list(
                "pk", "name", "is_active", "description", "tone_of_voice", "target_audience", "approval"
            )
        )
        assets = list(
            BrandAsset.objects.order_by("brand_id", "pk").values_list(
                "pk", "brand_id", "name", "terms", "description"
            )
        )
        names = [Name(pk, None, name) for pk, name, *_ in brands]
        names += [
            Name(brand_id, pk, term) for pk, brand_id, name, terms, _ in assets for term in (name, *terms)
        ]
        terms: dict[int, list[str]] = {}
        for name in names:
            terms.setdefault(name.owner, []).append(name.term)
        built = BrandCatalogue(
            names=NameCatalogue(names),
            brand_names={pk: name for pk, name, *_ in brands},
            active=frozenset(pk for pk, _, active, *_ in brands if active),
            terms={owner: tuple(t) for owner, t in terms.items()},
            briefs={pk: (description, tone, audience) for pk, _, _, description, tone, audience, _ in brands},
            unapproved=frozenset(pk for pk, *_, approval in brands if approval != APPROVED),
            asset_briefs={pk: description for pk, _, _, _, description in assets},
        )
        _catalogue = (version, built)
        return built


def _with_typos(
    found: list[list[NameHit]], texts: Sequence[str], terms: Sequence[str], *, owner: int
) -> list[list[NameHit]]:
    """Add `find_mentions`' typo matches of `terms` ("Tidewav") where no name was found already."""
    for hits, text in zip(found, texts, strict=True):
        extra = [
            NameHit(m.start, m.end, Name(owner, None, m.term), m.matched)
            for m in find_mentions(text, terms)
            if not m.exact and not any(h.start < m.end and m.start < h.end for h in hits)
        ]
        if extra:
            hits += extra
            hits.sort(key=lambda h: h.start)
    return found


_plan_catalogues: dict[tuple[str, ...], NameCatalogue] = {}


def _plan_catalogue(terms: tuple[str, ...]) -> NameCatalogue:
    if terms not in _plan_catalogues:
        if len(_plan_catalogues) > 256:
            _plan_catalogues.clear()
        _plan_catalogues[terms] = NameCatalogue(Name(0, None, t) for t in terms)
    return _plan_catalogues[terms]


def _scan(catalogue: BrandCatalogue, texts: Sequence[str], planned: int | None) -> list[list[NameHit]]:
    found = catalogue.names.scan(*texts)
    if planned is not None and planned in catalogue.terms:
        found = _with_typos(found, texts, catalogue.terms[planned], owner=planned)
    return found


def _spans(hits: Iterable[NameHit], owners: Iterable[int] | None = None) -> list[list[int]]:
    keep = None if owners is None else set(owners)
    return [[h.start, h.end] for h in hits if keep is None or h.name.owner in keep]


def _owners(*hit_lists: Sequence[NameHit]) -> list[int]:
    return list(dict.fromkeys(h.name.owner for hits in hit_lists for h in hits))


@dataclass(frozen=True)
class OptionPlacement:
    """What an option is, brand-wise: the brand that reviews it (or that it was asked to carry), where it
    names brands, its review state and, when that needs saying, why."""

    brand_id: int | None
    asset_id: int | None
    review_status: str
    mentions: list[list[int]] = field(default_factory=list)  # in the chapter text
    reasoning_mentions: list[list[int]] = field(default_factory=list)
    placement_found: bool = False  # the option's brand is named (or its brief repeated)
    note: str = ""


def _not_placeable(catalogue: BrandCatalogue, brand_id: int, request: GenerationRequest) -> str:
    """Why this request may not carry `brand_id`, or "" when it may."""
    if not request.use_brands:
        return "this chapter may not carry (no brand placements for this story or reader)"
    if brand_id not in catalogue.active:
        return "is not active"
    if brand_id in catalogue.unapproved:
        return "staff have not approved yet"
    blocked = brands_blocked_for_story(story=request.story, preference=request.preference).get(brand_id)
    return f"may not appear in this story ({', '.join(blocked)})" if blocked else ""


def _names(catalogue: BrandCatalogue, owners: Iterable[int]) -> str:
    return ", ".join(catalogue.brand_names.get(o, "a deleted brand") for o in owners)


def option_placement(
    *, request: GenerationRequest, plan: OptionPlan, text: str, reasoning: str
) -> OptionPlacement:
    """Rules 1-3 above for a new option (`plan`: what it was asked to carry)."""
    catalogue = brand_catalogue()
    text_hits, reasoning_hits = _scan(catalogue, [text, reasoning], plan.brand_id)
    named = _owners(text_hits, reasoning_hits)
    planned = plan.brand_id
    if not named:
        if planned is None:
            return OptionPlacement(None, None, ReviewStatus.NONE)
        if quoted_runs(text, catalogue.brief_sources(planned, plan.asset_id)):
            return OptionPlacement(
                planned,
                plan.asset_id,
                ReviewStatus.PENDING,
                placement_found=True,
                note=f"Repeats {_names(catalogue, [planned])}'s brief word for word without naming it: sent for review.",
            )
        return OptionPlacement(planned, plan.asset_id, ReviewStatus.NOT_SENT)
    if len(named) > 1:
        competing = competing_pairs(named)
        why = ""
        if competing:
            why = " " + "; ".join(
                f"{_names(catalogue, [a])} and {_names(catalogue, [b])} compete (both in category {category}) "
                "and never share a chapter"
                for a, b, category in competing
            ) + "."
        return OptionPlacement(
            planned,
            plan.asset_id,
            ReviewStatus.HELD,
            mentions=_spans(text_hits),
            reasoning_mentions=_spans(reasoning_hits),
            placement_found=planned in named,
            note=(
                f"Names several brands ({_names(catalogue, named)}): a chapter carries at most one brand's "
                f"placement, so it is held back (never shown to readers, never accepted).{why}"
            )[:300],
        )
    [owner] = named
    mentions, reasoning_mentions = _spans(text_hits), _spans(reasoning_hits)
    if owner == planned and owner not in catalogue.unapproved:
        return OptionPlacement(
            planned, plan.asset_id, ReviewStatus.PENDING, mentions, reasoning_mentions, placement_found=True
        )
    why_not = _not_placeable(catalogue, owner, request)
    if why_not:
        return OptionPlacement(
            planned,
            plan.asset_id,
            ReviewStatus.HELD,
            mentions,
            reasoning_mentions,
            note=f"Names {_names(catalogue, [owner])}, which {why_not}: held back (never shown to readers, "
            "never accepted).",
        )
    asset_id = next((h.name.item for h in (*text_hits, *reasoning_hits) if h.name.item is not None), None)
    asked = f" (it was asked to place {_names(catalogue, [planned])})" if planned else ""
    return OptionPlacement(
        owner,
        asset_id,
        ReviewStatus.PENDING,
        mentions,
        reasoning_mentions,
        placement_found=True,
        note=f"Names {_names(catalogue, [owner])}, which it was not asked to place{asked}: sent to its review.",
    )


# Sentences: up to an end mark (with a closing quote or bracket after it), a line break, or the end.
_SENTENCE = re.compile(r"[^.!?…\n]*(?:[.!?…]+[\"'”’)\]]*|\n|$)")


def placement_passage(text: str, spans: Iterable[Sequence[int]]) -> str:
    """The sentences of `text` that hold any of `spans`, in order, spaces collapsed: what a brand approves."""
    spans = list(spans)
    picked = []
    for m in _SENTENCE.finditer(text):
        start, end = m.span()
        if end > start and any(s < end and start < e for s, e in spans):
            picked.append(" ".join(text[start:end].split()))
    return "\n".join(picked)


def _approval_covers(option: GenerationOption) -> bool:
    """The option's text is the text its brand approved (an approval from before the hash binds the text
    as it is)."""
    return not option.approved_text_hash or option.approved_text_hash == text_hash(option.text)


def _approved_passage_kept(
    catalogue: BrandCatalogue, option: GenerationOption, text: str, hits: Sequence[NameHit]
) -> bool:
    """`text` (whose brand names are `hits`) keeps the passage the option's brand approved, and the
    approval covers the option's text."""
    [approved_hits] = _scan(catalogue, [option.text], option.brand_id)
    same = placement_passage(text, _spans(hits)) == placement_passage(option.text, _spans(approved_hits))
    return same and _approval_covers(option)


@dataclass(frozen=True)
class Acceptance:
    """What accepting `text` from an option gives: "plain" (a chapter with no placement), "sponsored" (the
    approved placement, labelled), "review" (the edited text goes back to the brand's review, no chapter)
    or "refused" (`message` says why)."""

    verdict: str
    message: str = ""
    mentions: list[list[int]] = field(default_factory=list)


def option_acceptance(*, option: GenerationOption, text: str) -> Acceptance:
    """Rule 4 above: may `text` (the author's final text of `option`) become a chapter, and with a label?"""
    catalogue = brand_catalogue()
    brand = option.brand_id
    [hits] = _scan(catalogue, [text], brand)
    named = _owners(hits)
    brand_name = _names(catalogue, [brand]) if brand else ""
    others = [o for o in named if o != brand]
    if others:
        return Acceptance(
            "refused",
            f"The text names {_names(catalogue, others)}: a chapter from the writer carries only a placement "
            "its brand approved. Take the name out, or write the chapter yourself.",
        )
    quotes = brand is not None and quoted_runs(text, catalogue.brief_sources(brand, option.asset_id))
    if option.review_status == ReviewStatus.APPROVED:
        if not named:
            return Acceptance("plain")  # the author took the placement out: nothing left to label
        if _approved_passage_kept(catalogue, option, text, hits):
            return Acceptance("sponsored", mentions=_spans(hits))
        return Acceptance(
            "review",
            f"Your edit changed the passage {brand_name} approved, so the edited text went back to "
            f"{brand_name} for review; accept it once they approve it, or accept the approved text as it is.",
            _spans(hits),
        )
    if not named and not quotes:
        return Acceptance("plain")
    if brand is None:  # a plain option whose text names a brand (only `others` can be named here)
        return Acceptance("refused", "The text names a brand: take the name out.")
    return Acceptance(
        "review",
        f"The text names {brand_name} (or repeats its brief): it went to {brand_name} for review; accept it "
        "once they approve it.",
        _spans(hits),
    )


@transaction.atomic
def option_back_to_review(
    *, option: GenerationOption, text: str, mentions: list[list[int]], note: str
) -> None:
    """The brand reviews `text` as this option's (its approval, if any, no longer holds): the option waits
    in its brand's queue again and the brand's managers are told."""
    GenerationOption.objects.select_for_update().filter(pk=option.pk).update(
        text=text,
        mentions=mentions,
        placement_found=True,
        review_status=ReviewStatus.PENDING,
        reviewed_by=None,
        reviewed_at=None,
        review_reason="",
        approved_text_hash="",
        placement_note=note[:300],
    )
    brand = Brand.objects.filter(pk=option.brand_id).first()
    if brand is None:
        return
    request = GenerationRequest.objects.select_related("story").get(pk=option.request_id)
    for manager_id in brand.managers.values_list("pk", flat=True):
        notification_create(
            user_id=manager_id,
            message=f"{option.label} of chapter {request.next_number} of “{request.story.title}” changed after "
            f"review: it waits for {brand.name} again.",
            url=reverse("brands:review_detail", args=[option.pk]),
        )


@dataclass(frozen=True)
class ChapterPlacement:
    sponsor: str = ""  # the brand in the disclosure label; "" for none
    withheld: bool = False  # names a brand without its approval: readers get a notice, not the text
    note: str = ""  # for the author: why


def _edited_chapter(chapter: Chapter) -> tuple[GenerationOption, list[NameHit], list[int], bool] | None:
    """For a generated chapter edited since its acceptance: its placement option, the brand names in its
    text, the other brands named, and whether the passage its brand approved is as approved (and still
    covered by the approval). None for a chapter that carries no placement."""
    if chapter.source != Chapter.Source.GENERATED or chapter.updated_at == chapter.created_at:
        return None
    option = (
        GenerationOption.objects.select_related("brand")
        .filter(accepted_chapter=chapter, brand__isnull=False)
        .exclude(review_status__in=[ReviewStatus.NONE, ReviewStatus.NOT_SENT])
        .first()
    )
    if option is None:
        return None
    catalogue = brand_catalogue()
    [hits] = _scan(catalogue, [chapter.text], option.brand_id)
    others = [o for o in _owners(hits) if o != option.brand_id]
    approved = False
    if hits and option.review_status == ReviewStatus.APPROVED and not others:
        approved = _approved_passage_kept(catalogue, option, chapter.text, hits)
    return option, hits, others, approved


def chapter_placement_check(*, chapter: Chapter, sponsor_name: str | None) -> ChapterPlacement:
    """Rule 5 above, for the chapter page: a read, it changes nothing (`chapter_placement_sync` did, when
    the chapter was saved). `sponsor_name`: the brand of the approved option accepted as this chapter, as
    `chapter_get_for_reading` annotates it.

    A chapter not edited since it was accepted is as its acceptance left it: no query (`option_accept`
    stamps a generated chapter's updated_at equal to its created_at; any later save moves it). An edited
    one keeps the label while the approved passage is as approved; one that names its brand in text the
    brand has not approved, or names another brand, is withheld from readers; one that names no brand
    any more is plain."""
    if chapter.source != Chapter.Source.GENERATED or chapter.updated_at == chapter.created_at:
        return ChapterPlacement(sponsor=sponsor_name or "")
    edited = _edited_chapter(chapter)
    if edited is None:
        return ChapterPlacement()
    option, hits, others, approved = edited
    if not hits:
        return ChapterPlacement()  # the author took every brand out: a plain chapter
    if approved:
        return ChapterPlacement(sponsor=option.brand.name)
    if others:
        names = _names(brand_catalogue(), others)
        return ChapterPlacement(
            withheld=True,
            note=f"This chapter names {names}, which its placement's review cannot cover: readers see a notice "
            "instead of it until you take that name out.",
        )
    brand = option.brand.name
    return ChapterPlacement(
        withheld=True,
        note=f"This chapter names {brand} in text {brand} has not approved, so readers see a notice instead "
        f"of it until {brand} approves it (it waits in their review queue) or you take the brand out.",
    )


def chapter_placement_sync(*, chapter: Chapter) -> None:
    """Rule 5 above, when an accepted chapter is saved (`writer.services.chapter_update`): a changed
    approved passage sends the chapter's text back to its brand's review (once per change); another
    brand named holds the option until that name goes."""
    edited = _edited_chapter(chapter)
    if edited is None:
        return
    option, hits, others, approved = edited
    if not hits or approved:
        return
    changed = option.text != chapter.text
    if others:
        # Another brand in the chapter: no review can cover it; held until the author takes it out.
        if option.review_status != ReviewStatus.HELD or changed:
            GenerationOption.objects.filter(pk=option.pk).update(
                text=chapter.text,
                mentions=_spans(hits),
                review_status=ReviewStatus.HELD,
                approved_text_hash="",
                placement_note=f"Chapter {chapter.number} was edited to name {_names(brand_catalogue(), others)}: "
                "held back until that name is taken out.",
            )
        return
    # Approved but changed, or edited again while waiting, after a rejection or after being held: the
    # brand reviews the chapter as it is now.
    if option.review_status == ReviewStatus.APPROVED or (
        changed and option.review_status in (ReviewStatus.PENDING, ReviewStatus.REJECTED, ReviewStatus.HELD)
    ):
        option_back_to_review(
            option=option,
            text=chapter.text,
            mentions=_spans(hits),
            note=f"Chapter {chapter.number} was edited after acceptance and its placement changed.",
        )
