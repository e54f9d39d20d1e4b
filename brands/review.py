"""The review workflow beyond yes and no (issue 17): policy findings, auto-approve rules, request changes,
approve with an edit of the placed passage, and the SLA of waiting placements.

Policy findings are pure functions of an option's texts and the facts around it (`PolicyFacts`): each
returns the findings of one rule as `{"rule": ..., "detail": ...}`. `options_after_store` stores them on
`GenerationOption.policy_findings` in the transaction that stores a request's options, then lets a brand's
active auto-approve rule approve a waiting option that has none (`brands.services.option_approve` with the
rule: a refused approval, for a cap or the budget, leaves it waiting).

The placed passage (`editable_span`): the span the writer rewrote (`option.placed_passage`), else the
lines that hold the brand's mentions. A reviewer's "approve with an edit" and an author's revision change
that span only: everything before and after it stays byte-identical (`edited_span` refuses otherwise).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from brands.matching import OptionPlan, banned_themes_hit, brief_parts, option_placement, placement_terms
from brands.models import (
    AutoApproveRule,
    Brand,
    BrandSuitability,
    PlacementDecision,
    RiskTier,
    StorySuitability,
)
from mesu_web.errors import ApplicationError
from mesu_web.notifications.services import notification_create
from writer.models import GenerationOption, GenerationRequest, OptionVersion, ReviewStatus, VersionCause

logger = logging.getLogger(__name__)

MAX_COMMENT_CHARS = 2000
MAX_PASSAGE_CHARS = 4000  # as the passage tools: a passage, not a chapter
# Characters either side of the placed passage read for a banned theme "near" the placement.
THEME_WINDOW_CHARS = 400
# The placed chapter's ROUGE-L against its draft below this: a finding (placement refuses under 0.9).
MIN_SIMILARITY = 0.92
DEFAULT_SLA_DAYS = 3  # BrandSuitability.review_sla_days without a row
TIER_ORDER = {RiskTier.LOW: 0, RiskTier.MEDIUM: 1, RiskTier.HIGH: 2, RiskTier.FLOOR: 3}
# Sensitive categories a brand must opt in to: their names, and the IAB tier-1 codes that stand for them.
SENSITIVE_CATEGORIES = {
    "health": ("allow_health", {"health", "iab7"}),
    "politics": ("allow_politics", {"politics", "iab11"}),
}


class Rule:
    BANNED_THEME = "banned_theme"
    OTHER_BRAND = "other_brand"
    LOW_SIMILARITY = "low_similarity"
    SENSITIVE_CATEGORY = "sensitive_category"
    RISK_TIER = "risk_tier"
    REASONING_ONLY = "reasoning_only"


def finding(rule: str, detail: str) -> dict[str, str]:
    return {"rule": rule, "detail": detail}


# --- The placed passage ----------------------------------------------------------------------------


def editable_span(
    text: str, placed_passage: Sequence[int], mentions: Sequence[Sequence[int]]
) -> tuple[int, int] | None:
    """[start, end) of the passage a reviewer or the author may change: the placed passage, else the lines
    (paragraphs) that hold the mentions; None when the option names nothing in its text."""
    if len(placed_passage) == 2 and 0 <= placed_passage[0] < placed_passage[1] <= len(text):
        return int(placed_passage[0]), int(placed_passage[1])
    spans = [(int(s), int(e)) for s, e in mentions or [] if 0 <= int(s) < int(e) <= len(text)]
    if not spans:
        return None
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    start = text.rfind("\n", 0, first) + 1
    end = text.find("\n", last)
    end = len(text) if end == -1 else end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def edited_span(old: str, new: str, span: tuple[int, int]) -> tuple[int, int]:
    """The span of the new passage in `new`, when `new` differs from `old` inside `span` only (the text
    before and after it byte-identical); ApplicationError saying where otherwise."""
    start, end = span
    tail = len(old) - end
    if len(new) < start + tail or new[:start] != old[:start]:
        raise ApplicationError(
            "The edit changes the text before the placed passage: only the placed passage may be edited. "
            "Edit that passage only (the rest must stay exactly as written)."
        )
    if tail and new[len(new) - tail :] != old[end:]:
        raise ApplicationError(
            "The edit changes the text after the placed passage: only the placed passage may be edited. "
            "Edit that passage only (the rest must stay exactly as written)."
        )
    return start, len(new) - tail


def clean_passage(passage: str) -> str:
    passage = (passage or "").replace("\r\n", "\n").replace("\r", "\n")
    if not passage.strip():
        raise ApplicationError("The passage is empty: write the passage that names the brand.")
    if len(passage) > MAX_PASSAGE_CHARS:
        raise ApplicationError(
            f"The passage has {len(passage):,} characters; keep it under {MAX_PASSAGE_CHARS:,}: it is a passage, "
            "not a chapter."
        )
    return passage


def clean_comment(comment: str) -> str:
    comment = (comment or "").strip()
    if not comment:
        raise ApplicationError(
            "Say what should change: the author (or the writer) revises the passage from it."
        )
    if len(comment) > MAX_COMMENT_CHARS:
        raise ApplicationError(
            f"The comment has {len(comment):,} characters; keep it under {MAX_COMMENT_CHARS:,}."
        )
    return comment


# --- Policy findings (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyFacts:
    """What the rules read besides the option's texts."""

    brand_name: str
    banned_themes: Sequence[str] = ()
    other_brand_names: dict[str, Sequence[str]] = field(default_factory=dict)  # brand name -> its terms
    story_categories: Sequence[str] = ()
    story_tier: str | None = None  # None: not classified
    max_tier: str = RiskTier.LOW
    allow_health: bool = False
    allow_politics: bool = False


def banned_theme_findings(
    text: str, span: tuple[int, int] | None, facts: PolicyFacts
) -> list[dict[str, str]]:
    """A theme the brand bans within THEME_WINDOW_CHARS of the placement (the whole text without a span)."""
    near = text if span is None else text[max(0, span[0] - THEME_WINDOW_CHARS) : span[1] + THEME_WINDOW_CHARS]
    hits = banned_themes_hit(text=near, themes=facts.banned_themes)
    return [
        finding(Rule.BANNED_THEME, f"“{t}”, a theme {facts.brand_name} bans, is near the placement.")
        for t in hits
    ]


def _names_in(text: str, terms: Iterable[str]) -> list[str]:
    return [t for t in terms if t and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", text, re.IGNORECASE)]


def other_brand_findings(text: str, reasoning: str, facts: PolicyFacts) -> list[dict[str, str]]:
    found = []
    for name, terms in sorted(facts.other_brand_names.items()):
        hits = _names_in(text, terms) or _names_in(reasoning, terms)
        if hits:
            found.append(finding(Rule.OTHER_BRAND, f"Another brand is named: {name} (“{hits[0]}”)."))
    return found


def similarity_findings(
    similarity: dict[str, float] | None, *, floor: float = MIN_SIMILARITY
) -> list[dict[str, str]]:
    rouge = (similarity or {}).get("rouge_l")
    if rouge is None or rouge >= floor:
        return []
    return [
        finding(
            Rule.LOW_SIMILARITY,
            f"The placed chapter keeps ROUGE-L {rouge:.3f} of its draft (below {floor:.2f}): the placement "
            "changed more than a passage.",
        )
    ]


def sensitive_findings(facts: PolicyFacts) -> list[dict[str, str]]:
    categories = {c.lower() for c in facts.story_categories}
    found = []
    for label, (flag, codes) in SENSITIVE_CATEGORIES.items():
        if categories & codes and not getattr(facts, flag):
            found.append(
                finding(
                    Rule.SENSITIVE_CATEGORY,
                    f"The story is in a sensitive category ({label}); {facts.brand_name} did not opt in.",
                )
            )
    return found


def tier_findings(facts: PolicyFacts) -> list[dict[str, str]]:
    if facts.story_tier is None:
        return []
    if TIER_ORDER.get(facts.story_tier, 3) > TIER_ORDER.get(facts.max_tier, 0):
        return [
            finding(
                Rule.RISK_TIER,
                f"The story's risk tier ({facts.story_tier}) is above what {facts.brand_name} accepts ({facts.max_tier}).",
            )
        ]
    return []


def reasoning_only_findings(
    mentions: Sequence, reasoning_mentions: Sequence, facts: PolicyFacts
) -> list[dict[str, str]]:
    if not mentions and reasoning_mentions:
        return [
            finding(
                Rule.REASONING_ONLY,
                f"{facts.brand_name} is named in the writer's reasoning only, not in the chapter.",
            )
        ]
    return []


def policy_findings(
    *,
    text: str,
    reasoning: str,
    mentions: Sequence,
    reasoning_mentions: Sequence,
    placed_passage: Sequence[int],
    similarity: dict[str, float] | None,
    facts: PolicyFacts,
) -> list[dict[str, str]]:
    """Every rule's findings, in a fixed order."""
    span = editable_span(text, placed_passage, mentions)
    return [
        *banned_theme_findings(text, span, facts),
        *other_brand_findings(text, reasoning, facts),
        *similarity_findings(similarity),
        *sensitive_findings(facts),
        *tier_findings(facts),
        *reasoning_only_findings(mentions, reasoning_mentions, facts),
    ]


# --- Policy findings (the facts, from the database) -----------------------------------------------


def _other_brand_terms(exclude: Iterable[int]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for brand in Brand.objects.exclude(pk__in=list(exclude)).prefetch_related("assets"):
        names[brand.name] = [brand.name, *(t for a in brand.assets.all() for t in a.terms)]
    return names


def _facts(
    option: GenerationOption, others: dict[str, list[str]], story_suit: StorySuitability | None
) -> PolicyFacts:
    brand = option.brand
    suit = BrandSuitability.objects.filter(brand=brand).first()
    return PolicyFacts(
        brand_name=brand.name,
        banned_themes=brand.banned_themes,
        other_brand_names={name: terms for name, terms in others.items() if name != brand.name},
        story_categories=story_suit.categories if story_suit else (),
        story_tier=story_suit.risk_tier if story_suit else None,
        max_tier=suit.max_risk_tier if suit else RiskTier.LOW,
        allow_health=bool(suit and suit.allow_health),
        allow_politics=bool(suit and suit.allow_politics),
    )


def option_findings(
    *, option: GenerationOption, others: dict[str, list[str]] | None = None
) -> list[dict[str, str]]:
    """The policy findings of one branded option as it is now."""
    if option.brand_id is None or option.brand is None:
        return []
    if others is None:
        others = _other_brand_terms([option.brand_id])
    story_id = (
        GenerationRequest.objects.filter(pk=option.request_id).values_list("story_id", flat=True).first()
    )
    story_suit = StorySuitability.objects.filter(story_id=story_id).first()
    return policy_findings(
        text=option.text,
        reasoning=option.reasoning,
        mentions=option.mentions or [],
        reasoning_mentions=option.reasoning_mentions or [],
        placed_passage=option.placed_passage or [],
        similarity=option.placement_similarity,
        facts=_facts(option, others, story_suit),
    )


def option_findings_refresh(*, option: GenerationOption) -> list[dict[str, str]]:
    option.policy_findings = option_findings(option=option)
    GenerationOption.objects.filter(pk=option.pk).update(policy_findings=option.policy_findings)
    return option.policy_findings


# --- Auto-approve ----------------------------------------------------------------------------------


def rule_matches(
    *, rule: AutoApproveRule, story_tier: str | None, similarity: dict[str, float] | None, findings: Sequence
) -> bool:
    """An active rule approves an option with no finding, of a classified story at most the rule's tier,
    at least the rule's similarity to its draft (an option with no measured similarity: never)."""
    if not rule.is_active or findings or story_tier is None:
        return False
    if TIER_ORDER.get(story_tier, 3) > TIER_ORDER.get(rule.max_risk_tier, 0):
        return False
    rouge = (similarity or {}).get("rouge_l")
    return rouge is not None and rouge >= rule.min_similarity


def _auto_approve(option: GenerationOption, story_tier: str | None) -> bool:
    from brands.services import option_approve  # local: services is the writes' module, imported late

    rules = AutoApproveRule.objects.filter(brand_id=option.brand_id, is_active=True).order_by("pk")
    for rule in rules:
        if not rule_matches(
            rule=rule,
            story_tier=story_tier,
            similarity=option.placement_similarity,
            findings=option.policy_findings,
        ):
            continue
        try:
            with transaction.atomic():
                option_approve(
                    option=option, reviewer=None, action=PlacementDecision.Action.AUTO_APPROVED, rule=rule
                )
        except ApplicationError as exc:  # a cap, the budget, another option approved: it waits for a person
            logger.info("Auto-approve rule %s left option %s waiting: %s", rule.pk, option.pk, exc.message)
            return False
        return True
    return False


def options_after_store(*, options: Sequence[GenerationOption]) -> None:
    """Called in the transaction that stores a request's options: each option's policy findings, then the
    brand's auto-approve rules."""
    branded = [o for o in options if o.brand_id is not None and o.pk is not None]
    if not branded:
        return
    others = _other_brand_terms([])
    for option in branded:
        option.policy_findings = option_findings(option=option, others=others)
        GenerationOption.objects.filter(pk=option.pk).update(policy_findings=option.policy_findings)
    for option in branded:
        if option.review_status != ReviewStatus.PENDING:
            continue
        story_id = (
            GenerationRequest.objects.filter(pk=option.request_id).values_list("story_id", flat=True).first()
        )
        tier = StorySuitability.objects.filter(story_id=story_id).values_list("risk_tier", flat=True).first()
        _auto_approve(option, tier)


# --- Versions of a changed option ------------------------------------------------------------------


def option_version_keep(
    *, option: GenerationOption, created_by: AbstractBaseUser | None, before: dict[str, object]
) -> OptionVersion:
    """Keep the option's new text as a version (cause "edited"), its text before as version 1 when it had
    none (the writer.versions rule, written here: brands does not import writer.versions, which imports
    brands.matching)."""
    fields = ("raw_output", "reasoning", "text", "format_ok", "tokens", "finish_reason")
    request = option.request
    if not OptionVersion.objects.filter(option=option).exists():
        first = OptionVersion.objects.create(
            option=option,
            number=1,
            cause=VersionCause.WRITTEN,
            **{n: before[n] for n in fields},
            model_name=request.model_name[:128],
            created_by_id=request.requested_by_id,
            request=request,
        )
        OptionVersion.objects.filter(pk=first.pk).update(created_at=option.created_at)
    last = OptionVersion.objects.filter(option=option).aggregate(last=Max("number"))["last"] or 0
    return OptionVersion.objects.create(
        option=option,
        number=last + 1,
        cause=VersionCause.EDITED,
        **{n: getattr(option, n) for n in fields},
        created_by=created_by,
        request=request,
    )


@dataclass(frozen=True)
class PassageChange:
    text: str
    span: tuple[int, int]
    mentions: list[list[int]]
    reasoning_mentions: list[list[int]]


def passage_change(*, option: GenerationOption, new_text: str) -> PassageChange:
    """Check an edit of the placed passage of the locked `option`: inside the passage only, and still a
    placement of the option's brand alone. ApplicationError with what to do otherwise."""
    span = editable_span(option.text, option.placed_passage or [], option.mentions or [])
    if span is None:
        raise ApplicationError(
            "This option names its brand nowhere in its text: there is no placed passage to edit."
        )
    new_text = new_text.replace("\r\n", "\n").replace("\r", "\n")
    new_span = edited_span(option.text, new_text, span)
    clean_passage(new_text[new_span[0] : new_span[1]])
    if new_text == option.text:
        raise ApplicationError("The passage is unchanged: edit it, or approve it as it is.")
    brand, asset = option.brand, option.asset
    plan = OptionPlan(
        brand_id=brand.pk,
        asset_id=asset.pk if asset else None,
        terms=placement_terms(*brief_parts(brand=brand, asset=asset)),
    )
    placement = option_placement(request=option.request, plan=plan, text=new_text, reasoning=option.reasoning)
    if placement.review_status != ReviewStatus.PENDING or placement.brand_id != brand.pk:
        why = placement.note or f"it must still name {brand.name}"
        raise ApplicationError(f"The edited passage is not a placement of {brand.name} alone: {why}")
    if not placement.mentions:
        raise ApplicationError(f"The edited passage must still name {brand.name} in the chapter.")
    return PassageChange(new_text, new_span, placement.mentions, placement.reasoning_mentions)


def text_with_passage(*, option: GenerationOption, passage: str) -> str:
    """The option's text with its placed passage replaced by `passage` (the rest as it is)."""
    span = editable_span(option.text, option.placed_passage or [], option.mentions or [])
    if span is None:
        raise ApplicationError(
            "This option names its brand nowhere in its text: there is no placed passage to edit."
        )
    passage = clean_passage(passage)
    return option.text[: span[0]] + passage + option.text[span[1] :]


def passage_apply(*, option: GenerationOption, change: PassageChange, user: AbstractBaseUser | None) -> None:
    """Write the checked change on the locked option, keep it as a version, refresh its findings."""
    before = {
        n: getattr(option, n)
        for n in ("raw_output", "reasoning", "text", "format_ok", "tokens", "finish_reason")
    }
    option.text = change.text
    option.mentions = change.mentions
    option.reasoning_mentions = change.reasoning_mentions
    option.placed_passage = list(change.span) if len(option.placed_passage or []) == 2 else []
    option.save(update_fields=["text", "mentions", "reasoning_mentions", "placed_passage"])
    option.__dict__.pop("quality", None)
    option_version_keep(option=option, created_by=user, before=before)
    option.policy_findings = option_findings(option=option)
    option.save(update_fields=["policy_findings"])


# --- The author's revision -------------------------------------------------------------------------


def option_revise(
    *, option: GenerationOption, user: AbstractBaseUser, passage: str | None = None, text: str | None = None
) -> GenerationOption:
    """The story's author rewrites the placed passage of an option whose brand asked for changes (`passage`:
    the new passage; or `text`: the whole new text, as the writer's passage tool gives it, which must differ
    inside the placed passage only): the option waits for the brand's review again (the revision kept as a
    version, its findings refreshed)."""
    if (passage is None) == (text is None):
        raise ApplicationError("Give the revised passage.")
    with transaction.atomic():
        request = (
            GenerationRequest.objects.select_for_update().select_related("story").get(pk=option.request_id)
        )
        locked = (
            GenerationOption.objects.select_for_update(of=("self",))
            .select_related("brand", "asset")
            .get(pk=option.pk)
        )
        locked.request = request
        if request.story.owner_id != user.pk:
            raise ApplicationError("Only the story's author can revise its placements.")
        if locked.brand_id is None:
            raise ApplicationError("This option carries no brand placement.")
        if locked.review_status != ReviewStatus.CHANGES:
            raise ApplicationError(
                f"{locked.label} is {locked.get_review_status_display().lower()}: only a placement whose brand "
                "asked for changes can be revised."
            )
        new_text = text if text is not None else text_with_passage(option=locked, passage=passage)
        change = passage_change(option=locked, new_text=new_text)
        passage_apply(option=locked, change=change, user=user)
        locked.review_status = ReviewStatus.PENDING
        locked.reviewed_by = None
        locked.reviewed_at = None
        locked.approved_text_hash = ""
        locked.save(update_fields=["review_status", "reviewed_by", "reviewed_at", "approved_text_hash"])
        url = reverse("brands:review_detail", args=[locked.pk])
        for manager_id in locked.brand.managers.values_list("pk", flat=True):
            notification_create(
                user_id=manager_id,
                message=f"The author revised {locked.label} of “{request.story.title}” as you asked: it waits for "
                "your review again.",
                url=url,
            )
    return locked


# --- SLA -------------------------------------------------------------------------------------------


def sla_overdue(*, waiting_since: datetime, sla_days: int | None, now: datetime | None = None) -> bool:
    days = DEFAULT_SLA_DAYS if sla_days is None else sla_days
    return (now or timezone.now()) - waiting_since > timedelta(days=days)


RULE_LABELS = {
    Rule.BANNED_THEME: "Banned theme near the placement",
    Rule.OTHER_BRAND: "Another brand named",
    Rule.LOW_SIMILARITY: "Far from its draft",
    Rule.SENSITIVE_CATEGORY: "Sensitive category",
    Rule.RISK_TIER: "Risk tier above the brand's",
    Rule.REASONING_ONLY: "Placement in the reasoning only",
}


def findings_labelled(findings: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    return [{**f, "label": RULE_LABELS.get(f.get("rule", ""), f.get("rule", ""))} for f in findings or []]


# --- Auto-approve rules (a brand manager's pages) --------------------------------------------------

MAX_RULES = 20  # per brand, active or not: a brand needs a few, never hundreds


def auto_approve_rule_create(
    *, brand: Brand, user: AbstractBaseUser, max_risk_tier: str, min_similarity: float
) -> AutoApproveRule:
    tiers = [t for t in RiskTier.values if t != RiskTier.FLOOR]
    if max_risk_tier not in tiers:
        raise ApplicationError(f"Choose a risk tier of {', '.join(tiers)}: the floor tier is never sold.")
    try:
        similarity = float(min_similarity)
    except (TypeError, ValueError):
        raise ApplicationError("The similarity must be a number from 0 to 1, e.g. 0.95.") from None
    if not 0.0 <= similarity <= 1.0 or similarity != similarity:  # NaN is no similarity
        raise ApplicationError("The similarity must be a number from 0 to 1, e.g. 0.95.")
    if AutoApproveRule.objects.filter(brand=brand).count() >= MAX_RULES:
        raise ApplicationError(
            f"{brand.name} has {MAX_RULES} rules already: switch one off and reuse it instead."
        )
    return AutoApproveRule.objects.create(
        brand=brand, max_risk_tier=max_risk_tier, min_similarity=similarity, created_by=user
    )


def auto_approve_rule_switch(*, rule: AutoApproveRule, active: bool) -> AutoApproveRule:
    rule.is_active = bool(active)
    rule.save(update_fields=["is_active"])
    return rule
