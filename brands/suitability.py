"""Suitability (issue 17): a story's IAB content categories and GARM-style risk tier, what each brand
accepts, and the reader's age.

A story is classified from its metadata ("chapter 0": title, genre, tags, summary, characters, setting,
intent notes) and the latest text of its chapters:
- categories: the embedder's cosine between the story (the mean of its parts' unit vectors) and each
  category's description in `brands/iab.py`; the best ones over CATEGORY_MIN_SCORE, at most MAX_CATEGORIES;
- risk tier: lexical, so that the author sees exactly which words decided it (`THEMES`): each theme found
  sets its tier, one step higher where it is dense; floor words found FLOOR_MIN_HITS times make the floor
  tier; a floor category among the embedder's best lifts the tier to at least high.
What was found (words, counts, scores) is kept in `StorySuitability.evidence` for the author's page.

The classification is re-done when the classified text changes (`text_hash`), never over the author's own
choice (`source` "author") until the author resets it. `brands_blocked_by_suitability` classifies a stale
story itself: matching calls it from the worker (or a POST), never from a plain GET.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from brands import iab
from brands.models import (
    AgeBracket,
    Brand,
    BrandSuitability,
    ReaderSponsorshipPreference,
    RiskTier,
    StorySuitability,
    text_hash,
)
from mesu_web.errors import ApplicationError, EngineError
from writer.models import Chapter, Story

logger = logging.getLogger(__name__)

# Bump when the lexicon, the categories or the thresholds change: every story is classified again.
CLASSIFIER_VERSION = "1"
# all-MiniLM-L6-v2: a story about a clinic scores ~0.53 against "Health & Medicine", a seaside slice of
# life ~0.08; its own subjects (travel, friendship) score 0.30-0.37. 0.30 keeps the clear subjects only.
CATEGORY_MIN_SCORE = 0.30
FLOOR_CATEGORY_MIN_SCORE = 0.40  # a floor category must be clearer still before it lifts the tier
MAX_CATEGORIES = 3
PART_CHARS = 1100  # MiniLM reads ~256 word pieces (~1,100 characters of English prose); more is cut off
MAX_CHAPTERS = 24  # chapters read for the categories (spread over the story); the tier reads them all
DENSE_PER_1000_WORDS = 2.0  # a theme this dense (and found DENSE_MIN_HITS times) is one tier higher
DENSE_MIN_HITS = 5
FLOOR_MIN_HITS = 2  # one floor word is "high"; twice or more is the floor

TIER_ORDER = (RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH, RiskTier.FLOOR)


def tier_rank(tier: str) -> int:
    return TIER_ORDER.index(RiskTier(tier))


@dataclass(frozen=True)
class Theme:
    name: str
    tier: str  # the tier the theme sets when found
    words: tuple[str, ...]  # whole words or phrases, case-insensitive; a trailing s/es/ed/ing also matches


THEMES: tuple[Theme, ...] = (
    Theme(
        "violence",
        RiskTier.MEDIUM,
        (
            "murder",
            "kill",
            "killed",
            "killing",
            "bloodshed",  # not "blood": a blood test, a blood moon
            "bloodied",
            "pool of blood",
            "stab",
            "stabbed",
            "corpse",
            "gunshot",
            "massacre",
            "torture",
            "violence",
            "violent",
            "assault",
            "strangle",
            "horror",
            "war crime",
        ),
    ),
    Theme("profanity", RiskTier.MEDIUM, ("fuck", "fucking", "shit", "bitch", "bastard", "asshole")),
    Theme(
        "drugs",
        RiskTier.MEDIUM,
        ("drug", "cocaine", "heroin", "meth", "overdose", "narcotic", "marijuana", "drug dealer", "stoned"),
    ),
    Theme("gambling", RiskTier.MEDIUM, ("casino", "gambling", "gamble", "betting", "poker")),
    Theme(
        "sex",
        RiskTier.HIGH,
        (
            "sex",
            "sexual",
            "sexy",
            "naked",
            "nude",
            "orgasm",
            "erotic",
            "erotica",
            "aroused",
            "smut",
            "explicit",
        ),
    ),
    Theme(
        "self-harm",
        RiskTier.HIGH,
        ("suicide", "suicidal", "self-harm", "self harm", "cut herself", "cut himself", "kill myself"),
    ),
    Theme("gore", RiskTier.HIGH, ("gore", "gory", "mutilated", "mutilation", "disembowel", "dismember")),
    Theme("hate", RiskTier.HIGH, ("nazi", "genocide", "hate crime", "ethnic cleansing", "white power")),
    Theme(
        "floor",
        RiskTier.FLOOR,
        (
            "rape",
            "raped",
            "child abuse",
            "child pornography",
            "pornography",
            "porn",
            "bestiality",
            "terrorist attack",
            "terrorism",
            "bomb-making",
            "suicide bomber",
            "drug trafficking",
        ),
    ),
)


def _word_pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted(
        (r"[\s_-]+".join(re.escape(w) for w in re.split(r"[\s_-]+", word) if w) for word in words),
        key=len,
        reverse=True,
    )
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")(?:s|es|ed|ing)?\b", re.IGNORECASE)


_PATTERNS = {theme.name: _word_pattern(theme.words) for theme in THEMES}


# --- What is classified -----------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def story_metadata_text(story: Story) -> str:
    """Chapter 0 as one text: what the author says the story is."""
    fields = [
        story.title,
        f"{story.genre}: {', '.join(story.tags)}" if story.tags else story.genre,
        story.summary,
        story.characters,
        story.setting,
        story.intent_notes,
    ]
    return "\n".join(_squash(f) for f in fields if f and f.strip())


def _chapter_texts(story: Story) -> list[str]:
    return [
        _squash(t)
        for t in Chapter.objects.filter(story=story).order_by("number").values_list("text", flat=True)
    ]


def _spread(items: list[str], k: int) -> list[str]:
    """At most `k` items spread evenly from first to last (a long story's beginning, middle and end)."""
    if len(items) <= k:
        return items
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


@dataclass(frozen=True)
class StoryText:
    metadata: str
    chapters: list[str]

    @property
    def hash(self) -> str:
        body = "\n\x1e".join([CLASSIFIER_VERSION, self.metadata, *self.chapters])
        return text_hash(body)

    def embedding_parts(self) -> list[str]:
        parts = [self.metadata[:PART_CHARS]] + [c[:PART_CHARS] for c in _spread(self.chapters, MAX_CHAPTERS)]
        return [p for p in parts if p.strip()]


def story_text(*, story: Story) -> StoryText:
    return StoryText(metadata=story_metadata_text(story), chapters=_chapter_texts(story))


# --- The classifier ---------------------------------------------------------------------------------


@dataclass
class Classification:
    categories: list[str]
    risk_tier: str
    evidence: dict = field(default_factory=dict)


_category_vectors: dict[str, list[list[float]]] = {}  # embedder model id -> one vector per category


def _category_matrix(embedder) -> list[list[float]]:  # noqa: ANN001
    found = _category_vectors.get(embedder.model_id)
    if found is None:
        found = embedder.embed([f"{c.name}: {c.description}" for c in iab.CATEGORIES])
        _category_vectors[embedder.model_id] = found
    return found


def _mean_unit(vectors: Sequence[Sequence[float]]) -> list[float]:
    sums = [sum(column) for column in zip(*vectors, strict=True)]
    norm = sum(x * x for x in sums) ** 0.5 or 1.0
    return [x / norm for x in sums]


def category_scores(parts: Sequence[str]) -> dict[str, float]:
    """IAB code -> cosine between the story (its parts' mean unit vector) and the category's description.
    EngineError when the embedder fails."""
    from brands.embedder import get_embedder

    if not parts:
        return {c.code: 0.0 for c in iab.CATEGORIES}
    embedder = get_embedder()
    story = _mean_unit(embedder.embed(list(parts)))
    return {
        category.code: round(sum(a * b for a, b in zip(story, vector, strict=True)), 4)
        for category, vector in zip(iab.CATEGORIES, _category_matrix(embedder), strict=True)
    }


def theme_hits(text: str) -> dict[str, dict[str, int]]:
    """Theme -> {word as found, lowercased: count}, for the themes found in `text`."""
    found: dict[str, dict[str, int]] = {}
    for theme in THEMES:
        for match in _PATTERNS[theme.name].finditer(text):
            word = match.group(0).lower()
            found.setdefault(theme.name, {})
            found[theme.name][word] = found[theme.name].get(word, 0) + 1
    return found


def risk_tier_from_words(text: str) -> tuple[str, dict[str, dict]]:
    """The tier the words of `text` set, and per theme found: its words, count and tier."""
    words = max(len(text.split()), 1)
    tier = RiskTier.LOW
    themes: dict[str, dict] = {}
    for name, hits in theme_hits(text).items():
        theme = next(t for t in THEMES if t.name == name)
        count = sum(hits.values())
        theme_tier = RiskTier(theme.tier)
        if theme_tier == RiskTier.FLOOR and count < FLOOR_MIN_HITS:
            theme_tier = RiskTier.HIGH
        elif theme_tier in (RiskTier.LOW, RiskTier.MEDIUM):
            dense = count >= DENSE_MIN_HITS and count * 1000 / words >= DENSE_PER_1000_WORDS
            if dense:
                theme_tier = TIER_ORDER[tier_rank(theme_tier) + 1]
        themes[name] = {"words": hits, "count": count, "tier": theme_tier.value}
        if tier_rank(theme_tier) > tier_rank(tier):
            tier = theme_tier
    return tier.value, themes


def classify_text(text: StoryText) -> Classification:
    """Categories (embedder) and tier (words) of a story's text. EngineError when the embedder fails."""
    scores = category_scores(text.embedding_parts())
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    categories = [
        code
        for code, score in ranked
        if score >= (FLOOR_CATEGORY_MIN_SCORE if code in iab.FLOOR_CODES else CATEGORY_MIN_SCORE)
    ][:MAX_CATEGORIES]
    tier, themes = risk_tier_from_words("\n".join([text.metadata, *text.chapters]))
    floor_categories = [c for c in categories if c in iab.FLOOR_CODES]
    if floor_categories and tier_rank(tier) < tier_rank(RiskTier.HIGH):
        tier = RiskTier.HIGH.value
    evidence = {
        "themes": themes,
        "scores": dict(ranked[:6]),  # the best categories and their cosine, chosen or not
        "floor_categories": floor_categories,
        "chapters": len(text.chapters),
        "version": CLASSIFIER_VERSION,
    }
    # Floor categories are never a story's category (no brand may accept them): they only lift the tier.
    return Classification(
        categories=[c for c in categories if c not in iab.FLOOR_CODES], risk_tier=tier, evidence=evidence
    )


# --- Reads ------------------------------------------------------------------------------------------


def story_suitability_get(*, story: Story) -> StorySuitability | None:
    """The stored row (a read: never classifies)."""
    return StorySuitability.objects.filter(story=story).first()


def story_suitability_is_stale(*, story: Story, row: StorySuitability | None = None) -> bool:
    """Whether the classification is missing or was made from another text (an author's choice is never
    stale)."""
    row = row if row is not None else story_suitability_get(story=story)
    if row is None:
        return True
    if row.source == StorySuitability.Source.AUTHOR:
        return False
    return row.text_hash != story_text(story=story).hash


def brand_suitability_get(*, brand: Brand) -> BrandSuitability:
    """The brand's row; an unsaved default (low tier, any category, no health or politics) without one."""
    found = BrandSuitability.objects.filter(brand=brand).first()
    return found if found is not None else BrandSuitability(brand=brand)


def evidence_rows(row: StorySuitability | None) -> dict[str, list]:
    """The evidence as the author's page shows it: themes (name, tier, words) and category scores."""
    if row is None or not row.evidence:
        return {"themes": [], "scores": []}
    themes = [
        {
            "name": name,
            "tier": data.get("tier", ""),
            "count": data.get("count", 0),
            "words": data.get("words", {}),
        }
        for name, data in sorted(row.evidence.get("themes", {}).items())
    ]
    scores = [
        {"code": code, "label": iab.label(code), "score": score, "chosen": code in row.categories}
        for code, score in row.evidence.get("scores", {}).items()
    ]
    return {"themes": themes, "scores": scores}


# --- Writes -----------------------------------------------------------------------------------------


def _store(*, story: Story, values: dict, unless_author: bool) -> StorySuitability:
    """Write the story's row under its lock; with `unless_author`, an author's choice is left as it is."""
    with transaction.atomic():
        row = StorySuitability.objects.select_for_update().filter(story=story).first()
        if row is None:
            try:
                with transaction.atomic():
                    return StorySuitability.objects.create(story=story, **values)
            except IntegrityError:  # another worker classified it first: update theirs
                row = StorySuitability.objects.select_for_update().get(story=story)
        if unless_author and row.source == StorySuitability.Source.AUTHOR:
            return row
        for name, value in values.items():
            setattr(row, name, value)
        row.save()
        return row


def story_suitability_classify(*, story: Story, force: bool = False) -> StorySuitability:
    """Classify `story` when its row is missing or stale (`force`: even when it is not), leaving an
    author's choice as it is. EngineError when the embedder fails."""
    row = story_suitability_get(story=story)
    if row is not None and row.source == StorySuitability.Source.AUTHOR:
        return row
    text = story_text(story=story)
    if row is not None and not force and row.text_hash == text.hash:
        return row
    result = classify_text(text)
    values = {
        "categories": result.categories,
        "risk_tier": result.risk_tier,
        "evidence": result.evidence,
        "text_hash": text.hash,
        "classified_at": timezone.now(),
        "source": StorySuitability.Source.CLASSIFIED,
    }
    return _store(story=story, values=values, unless_author=True)


def _clean_categories(codes: Sequence[str], *, what: str) -> list[str]:
    codes = [c.strip() for c in codes if c and c.strip()]
    unknown = iab.unknown_codes(codes)
    if unknown:
        raise ApplicationError(f"Unknown {what} categories: {', '.join(unknown)}. Choose from the list.")
    floor = [c for c in codes if c in iab.FLOOR_CODES]
    if floor:
        raise ApplicationError(
            f"{', '.join(iab.label(c) for c in floor)} is floor-level content: no brand is ever placed there."
        )
    return list(dict.fromkeys(codes))


def story_suitability_set(*, story: Story, categories: Sequence[str], risk_tier: str) -> StorySuitability:
    """The author's own categories and tier: they stand until the author resets them."""
    cleaned = _clean_categories(categories, what="story")
    if risk_tier not in RiskTier.values:
        raise ApplicationError(f"Unknown risk tier “{risk_tier}”.")
    if len(cleaned) > len(iab.CHOICES):
        raise ApplicationError("Too many categories.")
    values = {"categories": cleaned, "risk_tier": risk_tier, "source": StorySuitability.Source.AUTHOR}
    return _store(story=story, values=values, unless_author=False)


def story_suitability_reset(*, story: Story) -> StorySuitability:
    """Back to the classifier's word: the author's choice is dropped and the story classified again."""
    try:
        with transaction.atomic():
            row = StorySuitability.objects.select_for_update().filter(story=story).first()
            if row is not None:
                row.source = StorySuitability.Source.CLASSIFIED
                row.text_hash = ""  # stale: classified again below
                row.save(update_fields=["source", "text_hash", "updated_at"])
            return story_suitability_classify(story=story, force=True)
    except EngineError as exc:
        raise ApplicationError(f"The story could not be classified: {exc}") from exc


def brand_suitability_update(
    *,
    brand: Brand,
    category: str,
    accepted_categories: Sequence[str],
    max_risk_tier: str,
    allow_health: bool,
    allow_politics: bool,
    review_sla_days: int,
) -> BrandSuitability:
    own = _clean_categories([category], what="brand") if category else []
    accepted = _clean_categories(accepted_categories, what="accepted")
    if max_risk_tier == RiskTier.FLOOR:
        raise ApplicationError("The floor tier is never monetised: no brand may accept it.")
    if max_risk_tier not in RiskTier.values:
        raise ApplicationError(f"Unknown risk tier “{max_risk_tier}”.")
    if not 1 <= review_sla_days <= 90:
        raise ApplicationError("The review SLA is between 1 and 90 days.")
    row, _ = BrandSuitability.objects.update_or_create(
        brand=brand,
        defaults={
            "category": own[0] if own else "",
            "accepted_categories": accepted,
            "max_risk_tier": max_risk_tier,
            "allow_health": allow_health,
            "allow_politics": allow_politics,
            "review_sla_days": review_sla_days,
        },
    )
    return row


# --- Matching's hooks -------------------------------------------------------------------------------


def _names(codes: Sequence[str]) -> str:
    return ", ".join(iab.label(c) for c in codes)


def brand_block_reasons(*, story_row: StorySuitability, brand_row: BrandSuitability) -> list[str]:
    """Why this brand may not appear in this story, in plain words (empty: it may)."""
    tier = story_row.risk_tier
    if tier == RiskTier.FLOOR:
        return ["the story is in the floor tier (never monetised)"]
    reasons = []
    if tier_rank(tier) > tier_rank(brand_row.max_risk_tier):
        reasons.append(
            f"the story's risk tier ({RiskTier(tier).label.lower()}) is above the brand's highest "
            f"({RiskTier(brand_row.max_risk_tier).label.lower()})"
        )
    categories = list(story_row.categories)
    health = [c for c in categories if c in iab.HEALTH_CODES]
    if health and not brand_row.allow_health:
        reasons.append(f"the story touches health ({_names(health)}), which the brand has not opted in to")
    politics = [c for c in categories if c in iab.POLITICS_CODES]
    if politics and not brand_row.allow_politics:
        reasons.append(
            f"the story touches politics ({_names(politics)}), which the brand has not opted in to"
        )
    accepted = set(brand_row.accepted_categories)
    if accepted:
        outside = [c for c in categories if c not in accepted]
        if outside:
            reasons.append(
                f"the story's categories {_names(outside)} are not among the brand's accepted ones"
            )
        elif not categories:
            reasons.append("the story has none of the brand's accepted categories")
    return reasons


def brands_blocked_by_suitability(*, story: Story) -> dict[int, list[str]]:
    """Brand id -> why the story is not suitable for it (category, tier, sensitive topic, floor).

    Classifies the story first when its classification is missing or stale (matching calls this from the
    worker or a POST). When the embedder fails and nothing was classified before, every brand is blocked:
    missing a placement costs less than a bad one.
    """
    try:
        row = story_suitability_classify(story=story)
    except EngineError as exc:
        logger.warning("Story %s could not be classified: %s", story.pk, exc)
        row = story_suitability_get(story=story)
        if row is None:
            reason = "the story's suitability could not be classified yet"
            return {pk: [reason] for pk in Brand.objects.values_list("pk", flat=True)}
    rows = {s.brand_id: s for s in BrandSuitability.objects.all()}
    blocked: dict[int, list[str]] = {}
    for brand_id in Brand.objects.values_list("pk", flat=True):
        reasons = brand_block_reasons(story_row=row, brand_row=rows.get(brand_id) or BrandSuitability())
        if reasons:
            blocked[brand_id] = reasons
    return blocked


# --- The reader's age -------------------------------------------------------------------------------


def reader_age_bracket(*, user: AbstractBaseUser | AnonymousUser | None) -> str:
    """What the user said about their age ("" when not said, or anonymous)."""
    if user is None or not user.is_authenticated:
        return AgeBracket.UNKNOWN
    found = (
        ReaderSponsorshipPreference.objects.filter(user=user).values_list("age_bracket", flat=True).first()
    )
    return found or AgeBracket.UNKNOWN


def reader_age_set(*, user: AbstractBaseUser, adult: bool, replace: bool = True) -> str:
    """Keep the age the user gave: 18 or older, or under 18. `replace=False` (the sponsorship page) only
    fills in an age not said yet: a reader who said under 18 cannot undo it there."""
    bracket = AgeBracket.ADULT if adult else AgeBracket.UNDER_18
    with transaction.atomic():
        row, _ = ReaderSponsorshipPreference.objects.select_for_update().get_or_create(user=user)
        if row.age_bracket and not replace:
            raise ApplicationError("You have already told us your age.")
        row.age_bracket = bracket
        row.save(update_fields=["age_bracket", "updated_at"])
    return bracket


def reader_placement_block(*, reader: AbstractBaseUser | AnonymousUser | None) -> str:
    """Why no placement may reach this reader ("" when one may): a reader who said they are under 18."""
    if reader_age_bracket(user=reader) == AgeBracket.UNDER_18:
        return "the reader said they are under 18."
    return ""
