"""n-gram overlap rewards: sacrebleu's BLEU, and ROUGE-1/2/L with rouge-score's numbers (a fast
re-implementation: word-by-word cached stemming and a bit-parallel LCS)."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from training.rewards.completions import solution_pairs
from writer.quality import clear_rouge_caches, lcs_length, rouge_tokens


@functools.cache
def _bleu_metric():  # -> sacrebleu.metrics.BLEU
    from sacrebleu.metrics import BLEU

    # effective_order: a short candidate with no 4-gram match still gets a score from its 1-3-grams.
    return BLEU(effective_order=True)


def bleu(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """sacrebleu sentence BLEU (13a tokens, exp smoothing, effective order) / 100, in [0, 1]."""
    metric = _bleu_metric()
    scores: list[float | None] = []
    for pair in solution_pairs(completions, kwargs, "bleu"):
        if pair is None:
            scores.append(None)
        elif not pair[0].strip() or not pair[1].strip():
            scores.append(0.0)
        else:
            # Identical texts come out a hair above 100 (floating point): clamp to [0, 1].
            scores.append(min(1.0, metric.sentence_score(pair[0], [pair[1]]).score / 100.0))
    return scores


_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# ROUGE is computed here, not by rouge-score's RougeScorer, with the same numbers (tests/training/
# test_rouge_fast.py checks them against RougeScorer(use_stemmer=True) to 1e-12): on the GPU a GRPO
# step takes ~3 s and the rewards must stay under 10 % of it, but RougeScorer spent 0.15-0.3 s a step
# on rougeL alone: its LCS is an O(words x words) pure-Python table, and it Porter-stems every token
# of every (candidate, reference) pair again, although the G completions of a prompt share one
# reference. Here each distinct word is stemmed once and the LCS length is bit-parallel (writer/quality.py's
# `rouge_tokens` and `lcs_length`, which the options' placement similarity uses too).


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngram_fmeasure(
    target: Counter[Any], prediction: Counter[Any], n_target: int, n_prediction: int
) -> float:
    # rouge_score.rouge_scorer._score_ngrams: n_target / n_prediction are the n-gram counts.
    overlap = sum(min(count, prediction[gram]) for gram, count in target.items())
    return _fmeasure(overlap / max(n_prediction, 1), overlap / max(n_target, 1))


def _rouge_scores(candidate: str, reference: str) -> dict[str, float]:
    """rouge1, rouge2 and rougeL F-measures as RougeScorer(use_stemmer=True).score(reference,
    candidate) gives them (rougeL: the LCS of the whole texts, not rougeLsum)."""
    pred = rouge_tokens(candidate)
    target = rouge_tokens(reference)
    rouge1_f = _ngram_fmeasure(Counter(target), Counter(pred), len(target), len(pred))
    rouge2_f = _ngram_fmeasure(
        Counter(itertools.pairwise(target)),
        Counter(itertools.pairwise(pred)),
        max(len(target) - 1, 0),
        max(len(pred) - 1, 0),
    )
    if target and pred:
        lcs = lcs_length(target, pred)
        rouge_l_f = _fmeasure(lcs / len(pred), lcs / len(target))
    else:
        rouge_l_f = 0.0
    return {"rouge1": rouge1_f, "rouge2": rouge2_f, "rougeL": rouge_l_f}


@functools.lru_cache(maxsize=1024)
def _rouge_all(candidate: str, reference: str) -> dict[str, float]:
    # rouge1, rouge2 and rougeL of one pair are computed together and cached: the three rewards of a
    # step ask for the same pairs.
    if not candidate.strip() or not reference.strip():
        return dict.fromkeys(_ROUGE_TYPES, 0.0)
    return _rouge_scores(candidate, reference)


def clear_score_cache() -> None:
    """Forget the ROUGE scores of the pairs seen so far (`reset_caches` keeps them)."""
    _rouge_all.cache_clear()


def _rouge(name: str, completions: Sequence[Any], kwargs: dict[str, Any]) -> list[float | None]:
    return [None if p is None else _rouge_all(*p)[name] for p in solution_pairs(completions, kwargs, name)]


def rouge1(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """ROUGE-1 F1 (rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rouge1", completions, kwargs)


def rouge2(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """ROUGE-2 F1 (rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rouge2", completions, kwargs)


def rougeL(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:  # noqa: N802 (ROUGE-L)
    """ROUGE-L F1 (longest common subsequence; rouge-score, Porter stemmer on), in [0, 1]."""
    return _rouge("rougeL", completions, kwargs)


def clear_caches() -> None:
    """Forget the BLEU metric, the ROUGE tokenizer and its per-word tokens (see `reset_caches`)."""
    _bleu_metric.cache_clear()
    clear_rouge_caches()
