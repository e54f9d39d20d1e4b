"""The registry: reward names -> functions, the default job's weights, the lookup that names the
valid choices on a typo, and `score_all` (every reward of one candidate).

`REWARDS` work anywhere and are "all rewards" (score_all's default, the score command, the leaderboard).
`OPT_IN_REWARDS` need something made first (human_preference: a preference model trained from people's
choices), so they are chosen by name only and have no default weight."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from mesu_web.errors import ApplicationError
from training.rewards.brand import brand_subtlety
from training.rewards.format import format_exact, format_partial
from training.rewards.meteor_score import meteor
from training.rewards.model_based import bertscore, embedding_cosine, perplexity
from training.rewards.overlap import bleu, rouge1, rouge2, rougeL
from training.rewards.preference import human_preference
from training.rewards.quality import length_room, repetition
from training.rewards.vrcli import vrcli

RewardFunc = Callable[..., list[float | None]]


REWARDS: dict[str, RewardFunc] = {
    "format_exact": format_exact,
    "format_partial": format_partial,
    "bleu": bleu,
    "rouge1": rouge1,
    "rouge2": rouge2,
    "rougeL": rougeL,
    "meteor": meteor,
    "bertscore": bertscore,
    "perplexity": perplexity,
    "embedding_cosine": embedding_cosine,
    "brand_subtlety": brand_subtlety,
    "repetition": repetition,
    "length_room": length_room,
    "vrcli": vrcli,
}
# Chosen by name only: human_preference scores with a model trained from readers' and authors' choices
# (`manage.py train_preference_reward`); it raises a clear error where none is configured.
OPT_IN_REWARDS: dict[str, RewardFunc] = {
    "human_preference": human_preference,
}
# Rewards that load a model on first use (seconds and hundreds of MB; see docs/benchmarks.md).
MODEL_REWARDS = frozenset({"bertscore", "perplexity", "embedding_cosine", "vrcli"})

# The default job's weights. Format first: without it nothing else can be parsed reliably (the seed
# scored a format match 3.0, like this weight). Content rewards overlap (BLEU, ROUGE and METEOR all
# count shared words), so each gets a share; meaning-level ones (BERTScore, embedding cosine) weigh
# as much as the word-level group. Perplexity only guards fluency. brand_subtlety is None on rows
# with no brand brief, so its weight only counts where a brief was given.
DEFAULT_WEIGHTS: dict[str, float] = {
    "format_exact": 3.0,
    "format_partial": 0.5,
    "bleu": 0.25,
    "rouge1": 0.25,
    "rouge2": 0.25,
    "rougeL": 0.5,
    "meteor": 0.5,
    "bertscore": 1.0,
    "perplexity": 0.5,
    "embedding_cosine": 1.0,
    "brand_subtlety": 1.0,
    # A looping chapter (the same sentence again and again) is what readers reject first.
    "repetition": 1.0,
    # A chapter that closes with room to spare before the served cap (the held-out format misses of run12
    # and run13 were all chapters that ran out of tokens, at about twice the median length).
    "length_room": 0.5,
    # The one reward of the reasoning's content (every other scores the chapter): VR-CLI, the share
    # by which the reasoning lowers the real chapter's perplexity. Its values are small (a few
    # hundredths for a plan that helps, up to ~0.5 for one that quotes the chapter), so the weight of
    # a word-level reward would drown it; GRPO ranks within a group, where small gaps still count.
    "vrcli": 1.0,
}


def get_reward_funcs(names: Sequence[str] | str) -> list[RewardFunc]:
    """The reward functions called `names` (a list, or one comma-separated string), in order,
    duplicates dropped. ApplicationError naming the closest valid names on a typo."""
    if isinstance(names, str):
        names = names.split(",")
    known = {**REWARDS, **OPT_IN_REWARDS}
    by_lower = {name.lower(): name for name in known}
    funcs: list[RewardFunc] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        canonical = by_lower.get(name.lower())
        if canonical is None:
            close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
            hint = f" did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
            raise ApplicationError(
                f"Unknown reward '{name}';{hint} Valid: {', '.join(known)}.",
                {"unknown": name, "suggestions": [by_lower[c] for c in close], "valid": list(known)},
            )
        if known[canonical] not in funcs:
            funcs.append(known[canonical])
    if not funcs:
        raise ApplicationError(f"Choose at least one reward. Valid: {', '.join(known)}.")
    return funcs


def score_all(
    candidate: str,
    reference: str,
    *,
    names: Sequence[str] | str | None = None,
    brand_terms: Sequence[str] | None = None,
    brand_cap: int = 1,
    brand_slogans: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, float | None]:
    """Every reward (or `names`) of one candidate (a raw model answer, or plain chapter text) against
    one reference chapter: {name: score}. None where a reward does not apply (brand_subtlety without
    `brand_terms`)."""
    funcs = get_reward_funcs(list(REWARDS) if names is None else names)
    call = {
        "prompts": [kwargs.pop("prompt", "")],
        "answer": [reference],
        "brand_terms": [list(brand_terms) if brand_terms else None],
        "brand_cap": [brand_cap],
        "brand_slogans": [list(brand_slogans) if brand_slogans else None],
        **kwargs,
    }
    return {func.__name__: func([candidate], **call)[0] for func in funcs}
