"""What a reader notices first in a chapter, measured: loops (the share of repeated 4-grams and the
longest passage written twice) and length. Pure text, no Django: the options of a request, the
leaderboard and the `repetition` reward (training/rewards/quality.py) measure the same way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

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
        words=len(words), repetition=round(repeated_ngram_share(words), 4), longest_repeat=longest_repeat(words)
    )
