"""The brand placement reward: how well a chapter places the brief's brand (not like an ad)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from brands.placements import find_mentions
from training.rewards.completions import nonempty_strings, per_item, solution_text

# Sales language that does not belong in a novel's sentence next to a brand: calls to action,
# shop talk, prices, web addresses, trademark signs.
_AD_MARKERS = re.compile(
    r"""
    \b(?:buy|order|shop|call|click|subscribe|sign\ up|try\ it|get\ yours|grab\ yours|book)\ (?:now|today)\b
    | \b(?:available|sold|on\ sale|in\ stock)\ (?:now\ )?(?:at|in\ (?:stores|shops)|online|everywhere)\b
    | \bget\ (?:yours|one)\ (?:at|from|today|now)\b
    | \b(?:visit|ask\ for|look\ for|don['’]t\ miss|limited[-\ ]time|free\ shipping|order\ online)\b
    | \b(?:only|just)\ (?:for\ )?[$€£¥]
    | [$€£¥]\s?\d | \d(?:[.,]\d+)?\s?(?:[$€£¥]|dollars|euros|pounds|usd|eur|gbp)\b
    | \d+\s?%\ off\b | \bper\ cent\ off\b
    | \bwww\.|https?://|\.(?:com|net|shop)\b
    | [™®]
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Sentence ends (with closing quotes) or line breaks.
_SENTENCE_END = re.compile(r"""(?<=[.!?…])["'”’»)\]]*\s+|\n+""")
# Quoted stretches: dialogue, or a sign/cup seen in passing. A single curly or straight quote opens
# only after a non-letter and closes only before one, so apostrophes ("don’t") never do.
_QUOTED = re.compile(r"""“[^”]*”|"[^"\n]*"|«[^»]*»|(?<!\w)‘[^‘’\n]*’(?!\w)|(?<!\w)'[^'\n]*'(?!\w)""")


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _sentence_at(spans: list[tuple[int, int]], pos: int) -> tuple[int, int]:
    for start, end in spans:
        if start <= pos < end:
            return start, end
    return pos, pos


def brand_placements(
    solution: str, terms: Sequence[str], slogans: Sequence[str] = ()
) -> list[tuple[int, int, bool]]:
    """(start, end, ad_like) of each placement in the chapter text: every mention of a term
    (`brands.placements.find_mentions`, as the UI highlights them) and every verbatim slogan; a term
    mention inside a slogan is that slogan's placement, not a second one. A placement is ad-like when
    its sentence carries sales language (`_AD_MARKERS`: a call to action, "available at", a price, a
    web address, ™/®), or it is a slogan dropped verbatim outside quotation marks (a character saying
    it, or a sign or cup showing it, is quoted; a sales line is not)."""
    slogan_spans = [
        (m.start, m.end) for m in find_mentions(solution, nonempty_strings(list(slogans)), fuzzy=False)
    ]
    term_spans = [
        (m.start, m.end)
        for m in find_mentions(solution, nonempty_strings(list(terms)))
        if not any(s <= m.start and m.end <= e for s, e in slogan_spans)
    ]
    quoted = [(m.start(), m.end()) for m in _QUOTED.finditer(solution)]
    sentences = _sentence_spans(solution)
    out: list[tuple[int, int, bool]] = []
    for start, end, is_slogan in sorted(
        [(s, e, True) for s, e in slogan_spans] + [(s, e, False) for s, e in term_spans]
    ):
        s_start, s_end = _sentence_at(sentences, start)
        ad_like = _AD_MARKERS.search(solution, s_start, max(s_end, end)) is not None
        if is_slogan and not any(q <= start and end <= qe for q, qe in quoted):
            ad_like = True
        out.append((start, end, ad_like))
    return out


def brand_subtlety(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """How well a brand placement follows the brief, for prompts that carried one, in [0, 1]:

        (placements not ad-like / placements) x min(1, brand_cap / placements)

    0.0 when the chapter text names no asset (a name only in the reasoning does not count: the
    reader never sees it); 1.0 for 1..cap clean placements; over the cap it falls as cap / count; each
    ad-like placement (see `brand_placements`) takes its share away. None (not applicable) for a
    completion whose `brand_terms` is None or empty: the prompt had no brand brief."""
    n = len(completions)
    terms_per = per_item(kwargs, "brand_terms", n)
    caps = per_item(kwargs, "brand_cap", n)
    slogans_per = per_item(kwargs, "brand_slogans", n)
    scores: list[float | None] = []
    for completion, terms, cap, slogans in zip(completions, terms_per, caps, slogans_per, strict=True):
        terms = nonempty_strings(terms)
        if not terms:
            scores.append(None)
            continue
        cap = max(1, int(cap)) if cap is not None else 1
        placements = brand_placements(solution_text(completion), terms, nonempty_strings(slogans))
        if not placements:
            scores.append(0.0)
            continue
        count = len(placements)
        clean = sum(1 for _, _, ad in placements if not ad)
        scores.append((clean / count) * min(1.0, cap / count))
    return scores
