"""Split an uploaded book into chapters by its headings.

Pure text, no Django: the training pipeline splits the same books into the same chapters.

Two kinds of books:
- Markdown: chapters are `#`..`######` headings. A single top-level `# Title` followed by deeper
  headings is the book's title (front matter), and the chapters are the next level down; headings
  deeper than the chapter level stay inside the chapter's text (scene titles).
- Plain text: chapters are short whole lines such as "Chapter 1", "Chapter 12: The Storm",
  "CHAPTER XIV", "Chapter Twenty-Three", "Ch. 3", "Prologue" and "Epilogue". "chapter" inside a
  sentence ("In chapter 3 of his life...") or a long line starting with it is never a heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectedChapter:
    title: str
    text: str


@dataclass(frozen=True)
class DetectedBook:
    front_matter: str
    chapters: list[DetectedChapter]


# Headings are short; a longer line starting with "Chapter" is prose.
_MAX_HEADING_CHARS = 80

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
_UNIT_RE = "|".join(sorted(_UNITS, key=len, reverse=True))
_TENS_RE = "|".join(_TENS)
# "One", "Twenty", "Twenty-Three", "Twenty Three", "One Hundred and Two".
_NUMBER_WORDS = (
    rf"(?:(?:{_UNIT_RE})[ -]hundred(?:(?:[ -]and)?[ -](?:(?:{_TENS_RE})(?:[ -](?:{_UNIT_RE}))?|{_UNIT_RE}))?"
    rf"|(?:{_TENS_RE})(?:[ -](?:{_UNIT_RE}))?"
    rf"|{_UNIT_RE})"
)
# Roman numerals; validated separately (the regex only lets the right letters through).
_ROMAN = r"[IVXLCDM]+"
_ROMAN_VALID = re.compile(r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})", re.IGNORECASE)

# The separator between a heading and its subtitle: "Chapter 12: The Storm", "Chapter 3 - Fog",
# "Chapter 4. Rain", "CHAPTER II — Ash". Without a separator the subtitle must start with a capital
# or a quote ("Chapter 7 The Glass Market"), so "Chapter 3 was the worst" stays prose.
# (The capital is matched case-sensitively inside the otherwise case-insensitive pattern.)
_SUBTITLE = r"(?:\s*[:.\-–—|]\s*(?P<sub1>[^\s:.].*?)|\s+(?P<sub2>(?-i:[A-Z\"“'‘]).*?))?"

_PLAIN_HEADING = re.compile(
    rf"^(?P<head>(?:chapter|ch\.?)\s*(?P<num>\d+|{_ROMAN}|{_NUMBER_WORDS})\b"
    rf"|prologue|epilogue)\b{_SUBTITLE}\s*[:.]?\s*$",
    re.IGNORECASE,
)
_MD_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# Bold/italic wrappers around a plain heading line: "**Chapter 1**", "_Prologue_".
_EMPHASIS = re.compile(r"^([*_]{1,3})(?P<inner>.+?)\1$")


@dataclass(frozen=True)
class _Heading:
    line: int  # index into the book's lines
    level: int  # markdown level (1-6); 0 for a plain-text heading
    title: str


def _plain_title(line: str) -> str | None:
    """The chapter title if `line` (stripped) is a plain chapter heading, else None."""
    if not line or len(line) > _MAX_HEADING_CHARS:
        return None
    emphasis = _EMPHASIS.match(line)
    if emphasis:
        line = emphasis.group("inner").strip()
    m = _PLAIN_HEADING.match(line)
    if m is None:
        return None
    num = m.group("num")
    # "Chapter mix" would pass the letter class; the numeral must be valid ("Chapter DIM" is not).
    if num and re.fullmatch(_ROMAN, num, re.IGNORECASE) and not _ROMAN_VALID.fullmatch(num):
        return None
    sub = (m.group("sub1") or m.group("sub2") or "").strip()
    # A subtitle is a title, not a sentence: "Chapter 3. He never came back." is prose.
    if sub and line[-1] in ".,;" and not line.endswith("..."):
        return None
    return sub or m.group("head").strip()


def _headings_in_markdown(lines: list[str]) -> list[_Heading]:
    found: list[_Heading] = []
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _MD_HEADING.match(line)
        if m:
            found.append(_Heading(i, len(m.group("hashes")), m.group("title")))
    return found


def _chapter_title_of_markdown(title: str) -> str:
    # "## Chapter 3: The Storm" -> "The Storm"; "## The Storm" -> "The Storm".
    return _plain_title(title.strip()) or title.strip()


def split_book(text: str) -> DetectedBook:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    title_line, headings = _chapter_headings(lines)
    if not headings:
        # No chapter headings: one chapter; a lone "# Title" above it is still the book's title.
        start = title_line + 1 if title_line is not None else 0
        front_matter = "\n".join(lines[:start]).strip()
        body = "\n".join(lines[start:]).strip()
        chapters = [DetectedChapter("Chapter 1", body)] if body else []
        return DetectedBook(front_matter=front_matter, chapters=chapters)

    front_matter = "\n".join(lines[: headings[0].line]).strip()
    chapters: list[DetectedChapter] = []
    for h, nxt in zip(headings, [*headings[1:], None], strict=True):
        end = nxt.line if nxt else len(lines)
        body = "\n".join(lines[h.line + 1 : end]).strip()
        if body:  # a heading with nothing under it (e.g. a table of contents entry) is no chapter
            chapters.append(DetectedChapter(h.title, body))
    return DetectedBook(front_matter=front_matter, chapters=chapters)


def _chapter_headings(lines: list[str]) -> tuple[int | None, list[_Heading]]:
    """(the line of the book's "# Title" if it has one, the chapter headings)."""
    md = _headings_in_markdown(lines)
    top = [h for h in md if h.level == 1]
    title_line: int | None = None
    if len(top) == 1 and md[0] is top[0]:
        # One "# Title" at the top: the book's title, whether or not chapters follow.
        title_line = top[0].line
        md = md[1:]
    if md:
        # The chapter level: the shallowest one with a "Chapter ..."-like heading, so that
        # "## Part One" above "### Chapter 1" does not make parts into chapters; else the shallowest.
        chapter_like = [h.level for h in md if _plain_title(h.title) is not None]
        level = min(chapter_like) if chapter_like else min(h.level for h in md)
        chapters = [
            _Heading(h.line, h.level, _chapter_title_of_markdown(h.title)) for h in md if h.level == level
        ]
        return title_line, chapters

    # Plain text (or markdown whose only heading is the title).
    plain: list[_Heading] = []
    for i, line in enumerate(lines):
        if i == title_line:
            continue
        title = _plain_title(line.strip())
        if title is not None:
            plain.append(_Heading(i, 0, title))
    return title_line, plain
