"""n-gram overlap rewards: sacrebleu's BLEU, and ROUGE-1/2/L with rouge-score's numbers (a fast
re-implementation: word-by-word cached stemming and a bit-parallel LCS)."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from training.rewards.completions import solution_pairs


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
# reference. Here each distinct word is stemmed once (`_rouge_word_tokens`) and the LCS length is
# bit-parallel (`_lcs_length`: O(words x words / bits per machine word) in Python big ints).


@functools.cache
def _rouge_tokenizer():  # -> rouge_score.tokenizers.DefaultTokenizer
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True)


@functools.lru_cache(maxsize=65536)
def _rouge_word_tokens(word: str) -> tuple[str, ...]:
    """rouge-score's tokens of one whitespace-free word (lowercased, split at every character outside
    [a-z0-9], words of more than 3 characters Porter-stemmed), cached per word."""
    return tuple(_rouge_tokenizer().tokenize(word))


def _rouge_tokens(text: str) -> list[str]:
    """rouge-score's DefaultTokenizer(use_stemmer=True).tokenize(text), word by word: whitespace is a
    separator before and after its lowercasing and [^a-z0-9] replacement, so the tokens of the whole
    text are those of its words, in order (the tests check it on arbitrary text)."""
    tokens: list[str] = []
    for word in text.split():
        tokens.extend(_rouge_word_tokens(word))
    return tokens


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences, bit-parallel (Allison & Dix
    1986; Crochemore et al. 2001; Hyyrö 2004): bit i of V stands for position i of the longer
    sequence, and each token of the shorter one updates all of them with a few big-int operations.
    The LCS length is the number of zero bits of V at the end."""
    if len(a) < len(b):
        a, b = b, a  # bit masks over the longer sequence, the Python loop over the shorter one
    if not b:
        return 0
    masks: dict[str, int] = {}
    bit = 1
    for token in a:
        masks[token] = masks.get(token, 0) | bit
        bit <<= 1
    full = bit - 1  # len(a) ones
    v = full
    get = masks.get
    for token in b:
        m = get(token)
        if m:  # a token absent from `a` leaves V as it is
            u = v & m
            v = ((v + u) | (v - u)) & full  # (V + (V & M)) | (V & ~M)
    return len(a) - v.bit_count()


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
    pred = _rouge_tokens(candidate)
    target = _rouge_tokens(reference)
    rouge1_f = _ngram_fmeasure(Counter(target), Counter(pred), len(target), len(pred))
    rouge2_f = _ngram_fmeasure(
        Counter(itertools.pairwise(target)),
        Counter(itertools.pairwise(pred)),
        max(len(target) - 1, 0),
        max(len(pred) - 1, 0),
    )
    if target and pred:
        lcs = _lcs_length(target, pred)
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
    for cached in (_bleu_metric, _rouge_tokenizer, _rouge_word_tokens):
        cached.cache_clear()
