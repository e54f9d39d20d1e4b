"""AI-Arena-style evaluation: a target (the base model or a LoRA) writes the next chapter of every
held-out pair through the writer engine, and every chosen reward scores it against the real chapter.

Importable without Django: it takes an engine, an adapter and pairs, so the `gpu` task, the
`evaluate_adapter` command and a GPU box run the same code. The scores are the training rewards
(`training.rewards`), so a leaderboard row reads in the same units as the reward chart of a job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesu_web.errors import ApplicationError
from training.dataset import Pair
from training.rewards import get_reward_funcs
from writer.engines.base import Adapter, Sampling, WriterEngine
from writer.parsing import parse_output
from writer.quality import text_quality

T = TypeVar("T")
R = TypeVar("R")
EXCERPT_CHARS = 400  # of each generated solution, kept with its scores for the admin to read


@dataclass
class EvaluationResult:
    metrics: dict[str, float | None]  # reward -> mean over the pairs where it applies (None: none did)
    format_ok: float  # share of answers in the exact reasoning/solution format
    samples: list[dict[str, Any]]  # per pair: book, k, scores, format_ok, tokens, an excerpt
    tokens: int  # new tokens generated in all
    seconds: float
    model: str = ""  # what the engine says produced the text
    # Means over the pairs of writer.quality: words, repetition (share of repeated 4-grams) and
    # longest_repeat (words), and the worst repetition of any answer.
    quality: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "format_ok": self.format_ok,
            "pairs": len(self.samples),
            "tokens": self.tokens,
            "seconds": round(self.seconds, 2),
            "model": self.model,
            "quality": self.quality,
        }


@dataclass
class _Scores:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.values.setdefault(name, []).append(float(value))

    def means(self, names: Sequence[str]) -> dict[str, float | None]:
        return {name: (round(sum(v) / len(v), 6) if (v := self.values.get(name)) else None) for name in names}


def reward_names(names: Sequence[str] | str) -> list[str]:
    """The canonical names of `names` (ApplicationError with suggestions on a typo)."""
    return [func.__name__ for func in get_reward_funcs(names)]


def evaluate_pairs(
    pairs: Sequence[Pair],
    *,
    engine: WriterEngine,
    adapter: Adapter | None,
    sampling: Sampling,
    rewards: Sequence[str],
    on_pair: Callable[[int, dict[str, Any]], None] | None = None,
    keep_text: bool = False,
    concurrency: int = 1,
) -> EvaluationResult:
    """Generate one answer per pair (`sampling.seed` fixed, so base and adapters see the same draws)
    and score it with `rewards`. `on_pair(done, sample)` after each pair. With `keep_text`, each sample
    keeps the whole answer as `text` (for `answer_rows`: the pairwise judge reads them). `concurrency`:
    answers asked at the same time (a vLLM server writes them in one batch; the local engine wants 1).
    Engine errors propagate: a half-scored run must not look like a finished one."""
    if not pairs:
        raise ApplicationError("There are no held-out pairs to evaluate on.")
    funcs = get_reward_funcs(list(rewards))
    names = [func.__name__ for func in funcs]
    scores = _Scores()
    samples: list[dict[str, Any]] = []
    tokens = 0
    formatted = 0
    model = ""
    started = time.monotonic()
    results = map_ordered(
        lambda pair: engine.generate(pair.prompt, n=1, sampling=sampling, adapter=adapter), pairs, concurrency
    )
    for index, (pair, result) in enumerate(zip(pairs, results, strict=True), start=1):
        if not result.completions:
            raise ApplicationError(f"The writer returned no text for {pair.book} k={pair.k}.")
        completion = result.completions[0]
        model = result.model or model
        tokens += completion.tokens
        parsed = parse_output(completion.text)
        formatted += bool(parsed.format_ok)
        quality = text_quality(parsed.text).to_dict()
        call = {"prompts": [pair.prompt], "answer": [pair.answer]}
        pair_scores: dict[str, float | None] = {}
        for name, func in zip(names, funcs, strict=True):
            value = func([completion.text], **call)[0]
            pair_scores[name] = None if value is None else round(float(value), 6)
            scores.add(name, value)
        sample = {
            "book": pair.book,
            "k": pair.k,
            "scores": pair_scores,
            "format_ok": bool(parsed.format_ok),
            "quality": quality,
            "tokens": completion.tokens,
            "excerpt": (parsed.text or completion.text)[:EXCERPT_CHARS],
        }
        if keep_text:
            sample["text"] = completion.text
        samples.append(sample)
        if on_pair is not None:
            on_pair(index, sample)
    return EvaluationResult(
        metrics=scores.means(names),
        format_ok=round(formatted / len(pairs), 6),
        samples=samples,
        tokens=tokens,
        seconds=time.monotonic() - started,
        model=model,
        quality=quality_summary([sample["quality"] for sample in samples]),
    )


def answer_rows(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """{book, k, text} per sample kept with its text (`keep_text`): the answers file that
    `manage.py judge_pairs --a/--b` reads. ApplicationError when the samples kept no text."""
    rows = [{"book": s["book"], "k": s["k"], "text": s["text"]} for s in samples if "text" in s]
    if samples and not rows:
        raise ApplicationError("This evaluation kept no answer texts (evaluate with keep_text).")
    return rows


def map_ordered(call: Callable[[T], R], items: Sequence[T], concurrency: int = 1) -> Iterator[R]:
    """`call` on every item, in order, up to `concurrency` at a time: the first one alone (an adapter the
    server loads on first use is loaded once), then the rest in threads. The results come as each
    one's turn finishes; the first exception is raised in its place."""
    if concurrency <= 1 or len(items) <= 1:
        yield from map(call, items)
        return
    yield call(items[0])
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        yield from pool.map(call, items[1:])


def quality_summary(qualities: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each writer.quality measure over the answers, and the worst repetition."""
    if not qualities:
        return {}
    summary = {name: round(sum(q[name] for q in qualities) / len(qualities), 4) for name in qualities[0]}
    summary["worst_repetition"] = max(q["repetition"] for q in qualities)
    return summary
