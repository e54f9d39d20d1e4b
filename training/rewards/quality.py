"""The chapter's own quality: `repetition` (a chapter that loops scores low; writer/quality.py measures it
the same way for every option and on the leaderboard) and `length_room` (a chapter that closes with room to
spare before the served token cap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.rewards.completions import completion_text, solution_text, with_prefill
from training.rewards.settings import get_settings
from writer.parsing import MATCH_FORMAT
from writer.quality import repeated_ngram_share, words_of


def repetition(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1 - the share of repeated 4-grams in the chapter (the SOLUTION part): 1.0 for prose that never
    repeats itself, near 0 for one sentence written over and over. An empty chapter scores 0."""
    scores: list[float | None] = []
    for c in completions:
        words = words_of(solution_text(c))
        scores.append(1.0 - repeated_ngram_share(words) if words else 0.0)
    return scores


def length_room(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Room to spare (issue 15): 1.0 for a chapter that closes (the answer format matched) within
    `length_target_words` words, falling linearly to 0 at `length_zero_words`; 0 for one that never closes.

    Every completion gets a gradient, not only the few that overrun the cap: GRPO ranks a long chapter
    below a shorter one of the same group before it runs out of tokens (run13's smaller training cap scored
    only the 1-2 completions in 16 that overran, and the held-out misses stayed)."""
    settings = get_settings()
    target, zero = settings.length_target_words, settings.length_zero_words
    scores: list[float | None] = []
    for c in completions:
        if not MATCH_FORMAT.search(with_prefill(completion_text(c))):
            scores.append(0.0)
            continue
        words = len(words_of(solution_text(c)))
        scores.append(1.0 if words <= target else max(0.0, (zero - words) / (zero - target)))
    return scores
