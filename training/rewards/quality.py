"""The repetition reward: a chapter that loops scores low (writer/quality.py measures it the same way
for every option and on the leaderboard)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.rewards.completions import solution_text
from writer.quality import repeated_ngram_share, words_of


def repetition(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1 - the share of repeated 4-grams in the chapter (the SOLUTION part): 1.0 for prose that never
    repeats itself, near 0 for one sentence written over and over. An empty chapter scores 0."""
    scores: list[float | None] = []
    for c in completions:
        words = words_of(solution_text(c))
        scores.append(1.0 - repeated_ngram_share(words) if words else 0.0)
    return scores
