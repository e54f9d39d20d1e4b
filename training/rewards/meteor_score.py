"""The METEOR reward (nltk), with WordNet synonyms that work on Porter stems.

Named meteor_score, not meteor: the package re-exports the `meteor` function, and a submodule of the
same name would be shadowed by it (`from training.rewards import meteor` gives the function)."""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

from training.rewards.completions import solution_pairs
from training.rewards.settings import get_settings

logger = logging.getLogger(__name__)


class _NoSynonyms:
    """Stands in for WordNet: METEOR then matches exact words and Porter stems only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class _Lemma:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


class _Synset:
    __slots__ = ("_lemmas",)

    def __init__(self, names: frozenset[str]) -> None:
        self._lemmas = [_Lemma(n) for n in sorted(names)]

    def lemmas(self) -> list[_Lemma]:
        return self._lemmas


@functools.lru_cache(maxsize=65536)
def _synonym_stems(word: str) -> frozenset[str]:
    """Porter stems of the one-word WordNet synonyms of `word` (cached: WordNet lookups dominate)."""
    wn = _wordnet()
    if wn is None:
        return frozenset()
    stem = _porter().stem
    return frozenset(
        stem(lemma.name())
        for synset in wn.synsets(word)
        for lemma in synset.lemmas()
        if "_" not in lemma.name()
    )


@functools.cache
def _porter():  # -> nltk PorterStemmer
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


class _StemmedSynonyms:
    """Stemmer and WordNet for one nltk METEOR call, so that its synonym stage works.

    nltk's meteor_score (3.10) runs the synonym stage on what the stem stage leaves, which are Porter
    STEMS ("automobile" -> "automobil"), and compares synonyms with the reference's stems: WordNet
    knows no "automobil", so almost no synonym ever matched. Used as both the stemmer (it remembers
    which words gave each stem) and the WordNet (it looks those words up and answers with the stems
    of their synonyms), it lets "automobile" meet "car" and "large" meet "big", as METEOR intends.
    """

    def __init__(self) -> None:
        self._words: dict[str, set[str]] = {}

    def stem(self, word: str) -> str:
        stem = _porter().stem(word)
        self._words.setdefault(stem, set()).add(word)
        return stem

    def synsets(self, stem: str) -> list[_Synset]:
        names: set[str] = set()
        for word in self._words.get(stem, {stem}):
            names |= _synonym_stems(word)
        return [_Synset(frozenset(names))] if names else []


@functools.cache
def _wordnet():  # -> nltk WordNetCorpusReader | None
    import nltk

    root = str(get_settings().nltk_data)
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    try:
        with warnings.catch_warnings():
            # "The multilingual functions are not available": we only need English synonyms.
            warnings.simplefilter("ignore", UserWarning)
            from nltk.corpus import wordnet

            wordnet.synsets("dog")  # loads it (~3 s: nltk maps index.sense at load)
        return wordnet
    except (LookupError, OSError) as exc:
        logger.warning(
            "WordNet is not available (%s): METEOR matches exact words and stems only, without "
            "synonyms. Run scripts/setup_wordnet.sh to install it at %s/corpora/wordnet.",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            root,
        )
        return None


def wordnet_available() -> bool:
    """Whether METEOR has WordNet synonyms (loads WordNet on first call)."""
    return _wordnet() is not None


_METEOR_TOKENS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def meteor(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """nltk METEOR (exact, stem and WordNet-synonym matches; alpha 0.9, beta 3, gamma 0.5), in [0, 1].
    Synonyms go through `_StemmedSynonyms`, which works around nltk's synonym stage seeing stems.

    Without WordNet (see scripts/setup_wordnet.sh) it falls back to exact and stem matches, logs a
    warning once, and says so: `meteor.wordnet_available` is then False (None before the first call),
    and under TRL the metric `meteor/wordnet` (1 or 0) is logged with every step."""
    from nltk.translate.meteor_score import meteor_score

    wn = _wordnet()
    meteor.wordnet_available = wn is not None  # type: ignore[attr-defined]
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric("meteor/wordnet", 1.0 if wn is not None else 0.0)
    scores: list[float | None] = []
    for pair in solution_pairs(completions, kwargs, "meteor"):
        if pair is None:
            scores.append(None)
            continue
        hyp = _METEOR_TOKENS.findall(pair[0].lower())
        ref = _METEOR_TOKENS.findall(pair[1].lower())
        if not hyp or not ref:
            scores.append(0.0)
            continue
        if wn is not None:
            adapter = _StemmedSynonyms()
            value = meteor_score([ref], hyp, stemmer=adapter, wordnet=adapter)
        else:
            value = meteor_score([ref], hyp, stemmer=_porter(), wordnet=_NoSynonyms())
        scores.append(min(1.0, float(value)))
    return scores


meteor.wordnet_available = None  # type: ignore[attr-defined]


def clear_caches() -> None:
    """Forget WordNet and the synonyms looked up in it (see `reset_caches`)."""
    for cached in (_wordnet, _synonym_stems):
        cached.cache_clear()
    meteor.wordnet_available = None  # type: ignore[attr-defined]
