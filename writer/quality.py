"""What a reader notices first in a chapter, measured: loops (the share of repeated 4-grams and the
longest passage written twice) and length; and how close a placed chapter stays to its draft (ROUGE-L).
Pure text, no Django: the options of a request, the leaderboard, the `repetition` reward
(training/rewards/quality.py) and the ROUGE rewards (training/rewards/overlap.py) measure the same way.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from writer.parsing import sentence_ends

REPEAT_NGRAM = 4  # 4-grams: short enough to catch a looping sentence, long enough to spare idioms
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words_of(text: str) -> list[str]:
    """The words of `text`, lower-cased (letters and digits; "don't" is one word)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def repeated_ngram_share(words: list[str], n: int = REPEAT_NGRAM) -> float:
    """The share of the text's n-grams that repeat an earlier one: 0.0 for prose that never repeats
    itself, about 1.0 for one sentence written over and over. 0.0 when there are no n-grams."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(Counter(grams))) / len(grams)


def longest_repeat(words: list[str]) -> int:
    """The length in words of the longest passage that occurs twice without overlapping itself."""

    def repeats(length: int) -> bool:
        first: dict[tuple[str, ...], int] = {}
        for start in range(len(words) - length + 1):
            gram = tuple(words[start : start + length])
            seen = first.setdefault(gram, start)
            if start - seen >= length:
                return True
        return False

    # A passage that repeats has every shorter prefix repeating too: search the length by halves.
    low, high = 0, len(words) // 2
    while low < high:
        middle = (low + high + 1) // 2
        if repeats(middle):
            low = middle
        else:
            high = middle - 1
    return low


def cut_loop(text: str, max_share: float) -> str | None:
    """`text` cut where it starts to repeat itself: its longest beginning that ends a sentence and has
    a repeated-4-gram share of at most `max_share`. None when `text` is within `max_share` already, or
    when no sentence end gives such a beginning (it loops from its first sentence)."""
    if repeated_ngram_share(words_of(text)) <= max_share:
        return None
    for end in reversed(sentence_ends(text)):
        head = text[:end]
        if repeated_ngram_share(words_of(head)) <= max_share:
            return head.rstrip()
    return None


@dataclass(frozen=True)
class TextQuality:
    words: int
    repetition: float  # repeated_ngram_share, 4-grams
    longest_repeat: int  # words

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def text_quality(text: str) -> TextQuality:
    words = words_of(text)
    return TextQuality(
        words=len(words),
        repetition=round(repeated_ngram_share(words), 4),
        longest_repeat=longest_repeat(words),
    )


# --- ROUGE -----------------------------------------------------------------------------------
# rouge-score's numbers (RougeScorer(use_stemmer=True)), fast: each distinct word is stemmed once and the
# LCS is bit-parallel. tests/training/test_rouge_fast.py checks both against the library.


@functools.cache
def _rouge_tokenizer():  # -> rouge_score.tokenizers.DefaultTokenizer
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True)


@functools.lru_cache(maxsize=65536)
def _rouge_word_tokens(word: str) -> tuple[str, ...]:
    """rouge-score's tokens of one whitespace-free word (lowercased, split at every character outside
    [a-z0-9], words of more than 3 characters Porter-stemmed), cached per word."""
    return tuple(_rouge_tokenizer().tokenize(word))


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's DefaultTokenizer(use_stemmer=True).tokenize(text), word by word: whitespace is a
    separator before and after its lowercasing and [^a-z0-9] replacement, so the tokens of the whole
    text are those of its words, in order (the tests check it on arbitrary text)."""
    tokens: list[str] = []
    for word in text.split():
        tokens.extend(_rouge_word_tokens(word))
    return tokens


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
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


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of `candidate` against `reference` (the LCS of the whole texts, Porter stemmer on), as
    RougeScorer(["rougeL"], use_stemmer=True).score(reference, candidate) gives it; 0.0 for an empty text."""
    pred, target = rouge_tokens(candidate), rouge_tokens(reference)
    if not pred or not target:
        return 0.0
    lcs = lcs_length(target, pred)
    precision, recall = lcs / len(pred), lcs / len(target)
    return 2 * precision * recall / (precision + recall) if lcs else 0.0


def clear_rouge_caches() -> None:
    """Forget the ROUGE tokenizer and the per-word tokens."""
    for cached in (_rouge_tokenizer, _rouge_word_tokens):
        cached.cache_clear()
