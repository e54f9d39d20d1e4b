"""The human preference reward: what a scorer learned from readers' and authors' choices says of a chapter.

The scorer (`training.preference_reward`: Bradley-Terry on frozen MiniLM embeddings) is trained with
`manage.py train_preference_reward` from the pairs `export_preferences` writes, and found through
`RewardSettings.preference_model_path` (`PREFERENCE_REWARD_MODEL`, or `train_grpo --preference-model
DIR`). The reward is opt-in (`registry.OPT_IN_REWARDS`): without a model it cannot score anything.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError
from training.rewards.completions import per_item, solution_text
from training.rewards.settings import get_settings

NO_MODEL = (
    "The human_preference reward needs a preference model: train one with manage.py train_preference_reward "
    "--data FILE.jsonl --out DIR (the pairs from export_preferences), then pass train_grpo --preference-model "
    "DIR or set PREFERENCE_REWARD_MODEL=DIR."
)

_lock = threading.Lock()


def preference_model_dir() -> Path:
    """The configured model folder; ApplicationError (NO_MODEL) when none is set."""
    path = get_settings().preference_model_path
    if not path:
        raise ApplicationError(NO_MODEL)
    return Path(path)


@functools.lru_cache(maxsize=2)
def _load(folder: str, stamp: float):  # -> PreferenceModel
    # Imported here: training.preference_reward imports this package (embed_texts, solution_text).
    from training.preference_reward import load

    return load(Path(folder))


def preference_model():  # -> training.preference_reward.PreferenceModel
    """The configured scorer, loaded once per process (again when its folder is replaced)."""
    folder = preference_model_dir().resolve()
    card = folder / "card.json"
    stamp = card.stat().st_mtime if card.is_file() else 0.0
    with _lock:
        return _load(str(folder), stamp)


def preference_model_meta() -> dict[str, Any]:
    """What a GRPO run records of the scorer it used: the folder and its card (ApplicationError when the
    reward has no usable model; the trainer asks before it loads the writer)."""
    model = preference_model()
    return {"path": str(preference_model_dir().resolve()), "card": model.card}


def human_preference(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """sigmoid(score) of the chapter after its prompt, in [0, 1]: 0.5 for a chapter as liked as the
    training pairs' average, towards 1 for what readers and authors chose, towards 0 for what they passed
    over. The prompt is TRL's `prompts` (its last user message's last 150 words are read); an empty
    chapter scores 0."""
    model = preference_model()
    prompts = per_item(kwargs, "prompts", len(completions))
    chapters = [solution_text(c).strip() for c in completions]
    scores: list[float | None] = [0.0] * len(completions)
    todo = [i for i, text in enumerate(chapters) if text]
    if todo:
        from training.preference_reward import prompt_tail

        values = model.score_chapters([chapters[i] for i in todo], [prompt_tail(prompts[i]) for i in todo])
        for i, value in zip(todo, values, strict=True):
            scores[i] = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, value))))
    return scores


def clear_caches() -> None:
    """Forget the loaded scorer (see `reset_caches`)."""
    _load.cache_clear()
