"""Format rewards: the seed's exact regex, and partial credit per tag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training.rewards.completions import completion_text, with_prefill
from writer.parsing import MATCH_FORMAT
from writer.prompting import REASONING_END, REASONING_START, SOLUTION_END, SOLUTION_START


def format_exact(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion matches the seed's regex (`writer.parsing.MATCH_FORMAT`, applied with
    .search as the writer does), else 0.0. The seed notebook scored a match 3.0; here the scale lives
    in the weight (DEFAULT_WEIGHTS), so every reward stays in [0, 1] and the weights compare."""
    return [1.0 if MATCH_FORMAT.search(with_prefill(completion_text(c))) else 0.0 for c in completions]


_FORMAT_TAGS = (REASONING_START, REASONING_END, SOLUTION_START, SOLUTION_END)


def format_partial(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Partial credit per tag, as the Unsloth GRPO notebook's `match_format_approximately`: each of
    the 4 tags (exact spelling) present once +0.25, missing 0, present more than once -0.25. In
    -1..1: all four once is 1.0; a model that repeats its tags scores below one that forgets them."""
    scores: list[float | None] = []
    for c in completions:
        text = with_prefill(completion_text(c))
        score = 0.0
        for tag in _FORMAT_TAGS:
            count = text.count(tag)
            score += 0.25 if count == 1 else (-0.25 if count > 1 else 0.0)
        scores.append(score)
    return scores
