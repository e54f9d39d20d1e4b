"""The one book reader: a .txt/.md/.markdown/.epub file into its chapters, split by their headings.

No Django: the writer's import, the training library (`import_books`) and `build_dataset` read books
through `read_book` / `read_book_file`, so the same file gives the same chapters everywhere. A text
book is decoded and cleaned as an upload is (`writer.text_input`) and split by `split_book`; an EPUB
is read page by page in its reading order, within a size limit for the file and for what it unpacks
to (a "zip bomb"), leaving out its navigation page and pages without text.

Two kinds of books:
- Markdown: chapters are `#`..`######` headings. A single top-level `# Title` followed by deeper
  headings is the book's title (front matter), and the chapters are the next level down; headings
  deeper than the chapter level stay inside the chapter's text (scene titles). A "## Contents"
  heading is no chapter.
- Plain text, as public-domain books print it: chapters are short whole lines such as "Chapter 1",
  "Chapter 12: The Storm", "CHAPTER XIV", "Chapter Twenty-Three", "CHAPTER THE FIRST", "Ch. 3",
  "Prologue" and "Epilogue", styles mixed as a book likes. A title may end with a full stop when it
  is in title case ("CHAPTER 1. Loomings."), may be wrapped onto the next line, or may stand on its
  own line under a bare heading ("CHAPTER I." / "Down the Rabbit-Hole"). "chapter" inside a sentence
  ("In chapter 3 of his life...", or a sentence wrapped onto a line that starts "Chapter 3 ..."), a
  subtitle that is a sentence ("Chapter 3. He never came back.") or a long line is never a heading.
  A table of contents (headings listed with nothing but short non-sentences between them, whose
  chapters come again below) is no chapter, and a part heading ("VOLUME II", "Book the Second") between
  two chapters belongs to neither chapter's text.

Either kind: a Project Gutenberg header (up to "*** START OF THE PROJECT GUTENBERG EBOOK ... ***") and
licence (from "*** END OF ..." or "End of the Project Gutenberg EBook ...") are left out; the header's
"Title:" and "Author:" lines open the front matter. The book's notes say when a header, a licence or
part headings were left out.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path, PurePath

from mesu_web.errors import ApplicationError
from writer.text_input import ALLOWED_EXTENSIONS, clean_text, decode_text_file

TEXT_SUFFIXES = ALLOWED_EXTENSIONS  # what decode_text_file reads
BOOK_SUFFIXES = (*TEXT_SUFFIXES, ".epub")
# An EPUB is a ZIP archive: its unpacked size is bounded as well as its own (a "zip bomb").
EPUB_UNPACKED_FACTOR = 4


@dataclass(frozen=True)
class DetectedChapter:
    title: str
    text: str


@dataclass(frozen=True)
class DetectedBook:
    front_matter: str  # a text book's text above its first chapter: its title, author, summary
    chapters: list[DetectedChapter]
    # What an EPUB says of itself (dc:title, the dc:creators joined, dc:date, dc:description);
    # empty for a text book, whose front matter holds them.
    title: str = ""
    author: str = ""
    date: str = ""
    description: str = ""
    notes: list[str] = field(default_factory=list)  # what the reader left out or changed, for a person


# Headings are short; a longer line starting with "Chapter" is prose, unless it is a heading with
# a long title in title case ("CHAPTER 57. Of Whales in Paint; in Teeth; ... in Mountains; in Stars.").
MAX_HEADING_CHARS = 80
MAX_TITLED_HEADING_CHARS = 120

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
    "ninety": 90,
}  # fmt: skip
_ORDINAL_UNITS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
}  # fmt: skip
_ORDINAL_TENS = {
    "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60, "seventieth": 70,
    "eightieth": 80, "ninetieth": 90,
}  # fmt: skip
_WORD_VALUES = {**_UNITS, **_TENS, **_ORDINAL_UNITS, **_ORDINAL_TENS}


def _alternatives(words: dict[str, int]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))  # "seventeen" before "seven"


_UNIT_RE, _TENS_RE = _alternatives(_UNITS), _alternatives(_TENS)
_ORD_UNIT_RE, _ORD_TENS_RE = _alternatives(_ORDINAL_UNITS), _alternatives(_ORDINAL_TENS)
# "One", "Twenty", "Twenty-Three", "Twenty Three", "One Hundred and Two".
_NUMBER_WORDS = (
    rf"(?:(?:{_UNIT_RE})[ -]hundred(?:(?:[ -]and)?[ -](?:(?:{_TENS_RE})(?:[ -](?:{_UNIT_RE}))?|{_UNIT_RE}))?"
    rf"|(?:{_TENS_RE})(?:[ -](?:{_UNIT_RE}))?"
    rf"|{_UNIT_RE})"
)
# "First", "Twentieth", "Twenty-First", "One Hundred and First", "Hundredth": "CHAPTER THE FIRST".
_ORDINAL_WORDS = (
    rf"(?:(?:(?:{_UNIT_RE})[ -])?hundredth"
    rf"|(?:(?:{_UNIT_RE})[ -]hundred(?:[ -]and)?[ -])?"
    rf"(?:(?:{_TENS_RE})[ -](?:{_ORD_UNIT_RE})|{_ORD_TENS_RE}|{_ORD_UNIT_RE}))"
)
# Roman numerals; validated separately (the regex only lets the right letters through).
_ROMAN = r"[IVXLCDM]+"
_ROMAN_VALID = re.compile(r"M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})", re.IGNORECASE)
_ROMAN_VALUES = {"i": 1, "v": 5, "x": 10, "l": 50, "c": 100, "d": 500, "m": 1000}
# A chapter's number. Ordinals come before cardinals, so that "Twenty-First" is not "Twenty" with a
# subtitle "First"; Roman numerals last ("Chapter Ten" has no numeral in it).
_NUMBER = rf"\d+|(?:the\s+)?(?:{_ORDINAL_WORDS}|last)|{_NUMBER_WORDS}|{_ROMAN}"

# The separator between a heading and its subtitle: "Chapter 12: The Storm", "Chapter 3 - Fog",
# "Chapter 4. Rain", "CHAPTER II — Ash". Without a separator the subtitle must start with a capital
# or a quote ("Chapter 7 The Glass Market"), so "Chapter 3 was the worst" stays prose.
# (The capital is matched case-sensitively inside the otherwise case-insensitive pattern.)
_SUBTITLE = r"(?:\s*[:.\-–—|]\s*(?P<sub1>[^\s:.].*?)|\s+(?P<sub2>(?-i:[A-Z\"“'‘]).*?))?"

_PLAIN_HEADING = re.compile(
    rf"^(?P<head>(?:chapter|ch\.?)\s*(?P<num>{_NUMBER})\b|prologue|epilogue)\b{_SUBTITLE}\s*[:.]?\s*$",
    re.IGNORECASE,
)
# A part of the book above its chapters ("VOLUME II", "BOOK THE FIRST—RECALLED TO LIFE", "Part One"):
# never a chapter; between two chapters it belongs to neither chapter's text.
_PART_HEADING = re.compile(
    rf"^(?:book|part|volume|vol\.)\s*(?P<num>{_NUMBER})\b{_SUBTITLE}\s*[:.]?\s*$", re.IGNORECASE
)
_MD_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# Bold/italic wrappers around a plain heading line: "**Chapter 1**", "_Prologue_".
_EMPHASIS = re.compile(r"^([*_]{1,3})(?P<inner>.+?)\1$")
# A markdown "## Contents" heading is the table of contents' title, never a chapter.
_CONTENTS_TITLE = re.compile(r"^(?:table\s+of\s+)?contents?[.:]?$", re.IGNORECASE)

# Words a title leaves in lower case ("The Deck Towards the End of the First Night Watch.").
_MINOR_WORDS = frozenset(
    "a an and as at but by en for from in into nor o of off on onto or out over per the than till to "
    "unto up upon via vs with yet".split()
)
_WORD = re.compile(r"[^\W\d_][\w'’]*")
# How a line that ends a sentence (or a quotation, or an emphasis) ends.
_SENTENCE_END = (".", "!", "?", ":", ";", '"', "'", "”", "’", ")", "]", "*", "_")
# A heading line this long with a subtitle and no final stop was wrapped by the book's line width
# (Project Gutenberg wraps at about 70 characters): its title may go on on the next line.
_WRAPPED_HEADING_CHARS = 50
# A table of contents: headings with at most this many short lines between them.
_LISTING_LINES = 3
# A list of this many empty chapter headings is a contents page even when its chapters never come again.
_MIN_LISTED = 3

# Project Gutenberg's own text around a book: the header (with the licence in older files) ends at
# "*** START OF THE PROJECT GUTENBERG EBOOK ... ***" (or the old "*END*THE SMALL PRINT!"), the
# licence starts at "*** END OF ..." or the "End of (the) Project Gutenberg EBook of ..." line above it.
_PG_START = re.compile(
    r"^\s*\*{3}\s*START\s+OF\s+(?:THE\s+|THIS\s+)?PROJECT\s+GUTENBERG\b|^\s*\*END\*\s*THE\s+SMALL\s+PRINT",
    re.IGNORECASE,
)
_PG_END = re.compile(
    r"^\s*\*{3}\s*END\s+OF\s+(?:THE\s+|THIS\s+)?PROJECT\s+GUTENBERG\b"
    r"|^\s*End\s+of\s+(?:the\s+|this\s+)?Project\s+Gutenberg\b",
    re.IGNORECASE,
)
_PG_FIELD = re.compile(r"^\s*(?P<label>title|author)\s*:\s*(?P<value>\S.*?)\s*$", re.IGNORECASE)
# The edition's credit right under the start line ("Produced by Daniel Lazarus and Jonesey").
_PG_CREDIT = re.compile(
    r"^\s*(?:produced|prepared|transcribed|digitized|scanned|e-?text\s+prepared)\s+by\b", re.IGNORECASE
)


@dataclass(frozen=True)
class _Heading:
    line: int  # index into the book's lines
    level: int  # markdown level (1-6); 0 for a plain-text heading
    title: str
    end: int  # the chapter's first line: the line after the heading and its title lines


@dataclass(frozen=True)
class _PlainHeading:
    head: str  # "CHAPTER II", "Epilogue"
    subtitle: str  # "The Storm" of "Chapter 12: The Storm"; "" when there is none
    key: tuple[str, int | str]  # ("chapter", 2) for "CHAPTER II", "Chapter Two" and "Ch. 2: Fog"


def unwrap_emphasis(line: str) -> str:
    """`line` stripped, without the bold/italic markers around all of it ("**By A. Writer**")."""
    line = line.strip()
    m = _EMPHASIS.match(line)
    return m.group("inner").strip() if m else line


def _is_title_case(text: str) -> bool:
    """Whether `text` reads as a title: its first word and every word but the small ones capitalised
    ("The Deck Towards the End of the First Night Watch"), or all in capitals."""
    words = _WORD.findall(text)
    if not words or not words[0][0].isupper():
        return False
    return all(w[0].isupper() or w.lower() in _MINOR_WORDS for w in words[1:])


def _valid_number(num: str) -> bool:
    # "Chapter mix" would pass the letter class; the numeral must be valid ("Chapter DIM" is not).
    return not re.fullmatch(_ROMAN, num, re.IGNORECASE) or bool(_ROMAN_VALID.fullmatch(num))


def _number_value(num: str) -> int | str:
    """12 for "12", "XII", "Twelve" and "the Twelfth"; "last" for "the Last"."""
    num = num.lower()
    if num.isdecimal():
        return int(num)
    num = re.sub(r"^the\s+", "", num)
    if num == "last":
        return num
    if re.fullmatch(_ROMAN, num, re.IGNORECASE):
        values = [_ROMAN_VALUES[c] for c in num]
        return sum(-v if v < nxt else v for v, nxt in zip(values, [*values[1:], 0], strict=True))
    value = 0
    for word in re.split(r"[\s-]+", num):
        if word in ("hundred", "hundredth"):
            value = max(value, 1) * 100
        else:
            value += _WORD_VALUES.get(word, 0)  # "and" counts nothing
    return value


def _parse_plain(line: str) -> _PlainHeading | None:
    """`line` (stripped) as a plain chapter heading, or None if it is none."""
    if not line or len(line) > MAX_TITLED_HEADING_CHARS:
        return None
    line = unwrap_emphasis(line)
    m = _PLAIN_HEADING.match(line)
    if m is None:
        return None
    num = m.group("num")
    if num and not _valid_number(num):
        return None
    sub = (m.group("sub1") or m.group("sub2") or "").strip()
    # A subtitle is a title, not a sentence: "Chapter 3. He never came back." is prose, while a title
    # may end with a full stop, as Moby-Dick's do ("CHAPTER 1. Loomings.", "CHAPTER 9. The Sermon.").
    if sub and line[-1] in ".,;" and not line.endswith("..."):
        if not (line[-1] == "." and _is_title_case(sub)):
            return None
    if len(line) > MAX_HEADING_CHARS and not (sub and _is_title_case(sub)):
        return None  # a long line is prose, unless it is a heading with a long title
    head = m.group("head").strip()
    key = ("chapter", _number_value(num)) if num else (head.lower(), 0)
    return _PlainHeading(head=head, subtitle=sub, key=key)


def _is_part_heading(line: str) -> bool:
    line = unwrap_emphasis(line)
    if len(line) > MAX_HEADING_CHARS:
        return False
    m = _PART_HEADING.match(line)
    return bool(m) and _valid_number(m.group("num"))


def plain_chapter_title(line: str) -> str | None:
    """The chapter title if `line` (stripped) is a plain chapter heading ("Chapter 12: The Storm" ->
    "The Storm", "CHAPTER II" -> "CHAPTER II", "CHAPTER 1. Loomings." -> "Loomings"), else None."""
    parsed = _parse_plain(line)
    return None if parsed is None else (parsed.subtitle or parsed.head)


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
            found.append(_Heading(i, len(m.group("hashes")), m.group("title"), i + 1))
    return found


def _chapter_title_of_markdown(title: str) -> str:
    # "## Chapter 3: The Storm" -> "The Storm"; "## The Storm" -> "The Storm".
    return plain_chapter_title(title.strip()) or title.strip()


def markdown_heading_title(line: str) -> str | None:
    """The chapter title `split_book` takes from a markdown heading line, or None if it is none."""
    m = _MD_HEADING.match(line)
    return _chapter_title_of_markdown(m.group("title")) if m else None


def split_book(text: str) -> DetectedBook:
    """The front matter and chapters of a text or markdown book (see the module's docstring for the
    headings it knows). A Project Gutenberg header and licence are left out, the header's "Title:" and
    "Author:" lines kept as the first lines of the front matter; a table of contents is no chapter."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines, header, notes = _without_gutenberg(lines)
    title_line, headings, dropped, heading_notes = _chapter_headings(lines)
    notes += heading_notes
    if not headings:
        # No chapter headings: one chapter; a lone "# Title" above it is still the book's title.
        start = title_line + 1 if title_line is not None else 0
        front_matter = _with_header(header, _join(lines, 0, start, dropped))
        body = _join(lines, start, len(lines), dropped)
        chapters = [DetectedChapter("Chapter 1", body)] if body else []
        return DetectedBook(front_matter=front_matter, chapters=chapters, notes=notes)

    front_matter = _with_header(header, _join(lines, 0, headings[0].line, dropped))
    chapters: list[DetectedChapter] = []
    for h, nxt in zip(headings, [*headings[1:], None], strict=True):
        body = _join(lines, h.end, nxt.line if nxt else len(lines), dropped)
        if body:  # a heading with nothing under it (e.g. a table of contents entry) is no chapter
            chapters.append(DetectedChapter(h.title, body))
    return DetectedBook(front_matter=front_matter, chapters=chapters, notes=notes)


def check_chapter_count(book: DetectedBook, *, max_chapters: int) -> None:
    """ApplicationError when the book splits into more than `max_chapters` chapters (a file of thousands
    of headings would be as many rows): the caller refuses the book whole, before writing anything."""
    count = len(book.chapters)
    if count > max_chapters:
        raise ApplicationError(
            f"The book splits into {count:,} chapters; an import takes at most {max_chapters:,}. "
            "Check its chapter headings, or split it into parts and import each as its own story.",
            {"max_chapters": max_chapters, "chapters": count},
        )


def _join(lines: list[str], start: int, stop: int, dropped: set[int]) -> str:
    """lines[start:stop] as text, stripped, without the `dropped` lines and the blank lines they leave."""
    out: list[str] = []
    after_drop = False
    for i in range(start, stop):
        if i in dropped:
            after_drop = True
            continue
        blank = not lines[i].strip()
        if after_drop and blank and (not out or not out[-1].strip()):
            continue
        after_drop = after_drop and blank
        out.append(lines[i])
    return "\n".join(out).strip()


def _with_header(header: list[str], front_matter: str) -> str:
    return "\n\n".join(part for part in ("\n".join(header), front_matter) if part)


def _without_gutenberg(lines: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(the book's lines without Project Gutenberg's header and licence, the header's "Title: ..." and
    "Author: ..." lines, a note for a person) — the lines unchanged when there is neither."""
    end = next((i for i, line in enumerate(lines) if _PG_END.match(line)), None)
    start = None
    for i in range(end if end is not None else len(lines)):
        if _PG_START.match(lines[i]):
            start = i  # the last one: an old file's small print ends after an earlier start line
    if start is None and end is None:
        return lines, [], []
    header: list[str] = []
    for line in lines[:start] if start is not None else []:
        m = _PG_FIELD.match(line)
        if m and not any(h.lower().startswith(m.group("label").lower()) for h in header):
            header.append(f"{m.group('label').title()}: {m.group('value')}")
    body = lines[start + 1 if start is not None else 0 : end]
    first = next((i for i, line in enumerate(body) if line.strip()), None)
    if first is not None and _PG_CREDIT.match(body[first]):
        last = next((i for i in range(first, len(body)) if not body[i].strip()), len(body))
        body = body[last:]
    left_out = {(True, True): "header and licence were", (True, False): "header was"}.get(
        (start is not None, end is not None), "licence was"
    )
    return body, header, [f"The Project Gutenberg {left_out} left out."]


def _chapter_headings(lines: list[str]) -> tuple[int | None, list[_Heading], set[int], list[str]]:
    """(the line of the book's "# Title" if it has one, the chapter headings, the lines that belong to
    no text (table of contents entries, part headings between chapters), notes for a person)."""
    md = [h for h in _headings_in_markdown(lines) if not _CONTENTS_TITLE.match(unwrap_emphasis(h.title))]
    top = [h for h in md if h.level == 1]
    title_line: int | None = None
    if len(top) == 1 and md[0] is top[0]:
        # One "# Title" at the top: the book's title, whether or not chapters follow.
        title_line = top[0].line
        md = md[1:]
    if md:
        # The chapter level: the shallowest one with a "Chapter ..."-like heading, so that
        # "## Part One" above "### Chapter 1" does not make parts into chapters; else the shallowest.
        chapter_like = [h.level for h in md if plain_chapter_title(h.title) is not None]
        level = min(chapter_like) if chapter_like else min(h.level for h in md)
        chapters = [
            _Heading(h.line, h.level, _chapter_title_of_markdown(h.title), h.end)
            for h in md
            if h.level == level
        ]
        return title_line, chapters, set(), []
    # Plain text (or markdown whose only heading is the title).
    return (title_line, *_plain_headings(lines, skip=title_line))


def _plain_headings(lines: list[str], *, skip: int | None) -> tuple[list[_Heading], set[int], list[str]]:
    found: list[_Heading] = []
    keys: list[tuple[str, int | str]] = []
    for i, line in enumerate(lines):
        if i == skip or (found and i < found[-1].end):
            continue
        parsed = _parse_plain(line.strip())
        if parsed is None:
            continue
        prev = lines[i - 1].strip() if i else ""
        if (
            len(prev) > MAX_HEADING_CHARS // 2
            and not prev.endswith(_SENTENCE_END)
            and not (found and found[-1].end == i)
        ):
            continue  # a sentence wrapped onto this line: "...described in\nChapter 3 The Storm, a poem"
        title, end = _title_and_end(lines, i, parsed)
        found.append(_Heading(i, 0, title, end))
        keys.append(parsed.key)
    toc = _table_of_contents(lines, found, keys)
    dropped = {line for k in toc for line in range(found[k].line, found[k].end)}
    headings = [h for k, h in enumerate(found) if k not in toc]
    parts: list[str] = []
    for before, h in zip(headings, headings[1:], strict=False):
        part = _part_heading_above(lines, before.end, h.line)
        if part:
            dropped.update(part)
            parts.append(lines[min(part)].strip())
    notes = []
    if parts:
        shown = ", ".join(parts[:3]) + (", ..." if len(parts) > 3 else "")
        notes.append(
            f"{len(parts)} part heading(s) between chapters ({shown}) were left out of the chapters' text."
        )
    return headings, dropped, notes


def _title_and_end(lines: list[str], i: int, parsed: _PlainHeading) -> tuple[str, int]:
    """The title of the heading at line `i` and the line its chapter's text starts at: a long title
    wrapped onto the next line is joined ("CHAPTER 57. Of Whales in Paint; ... in\nStone; in Mountains;
    in Stars."); a heading without a title takes one from its own short line below ("CHAPTER I."
    "Down the Rabbit-Hole")."""
    line = unwrap_emphasis(lines[i])

    def at(j: int) -> str:
        return lines[j].strip() if j < len(lines) else ""

    if parsed.subtitle:
        nxt = at(i + 1)
        if (
            len(line) >= _WRAPPED_HEADING_CHARS
            and line[-1] not in ".!?"
            and nxt
            and not at(i + 2)
            and len(nxt) <= MAX_HEADING_CHARS
            and _parse_plain(nxt) is None
            and _is_title_case(f"{parsed.subtitle} {nxt}")
        ):
            return _without_stop(f"{parsed.subtitle} {nxt}"), i + 2
        return parsed.subtitle, i + 1
    j = i + 1
    while j <= i + 2 and not at(j) and j < len(lines):
        j += 1  # up to two blank lines between a heading and its title
    candidate = unwrap_emphasis(at(j))
    after = at(j + 1)
    if _is_title_line(candidate) and (not after or _parse_plain(after) is not None):
        return _without_stop(candidate), j + 1
    return parsed.head, i + 1


def _is_title_line(text: str) -> bool:
    """Whether a one-line paragraph under a bare heading is the chapter's title ("Down the Rabbit-Hole",
    "JONATHAN HARKER'S JOURNAL", "Who Stole the Tarts?") rather than its first sentence ("It rained.",
    "“TOM!”", "[Illustration]")."""
    if (
        not text
        or len(text) > MAX_HEADING_CHARS
        or not text[0].isupper()
        or text.endswith((".", ",", ";", ":"))
    ):
        return False
    if text.endswith(("?", "!")) and len(text.split()) < 2:
        return False
    return _is_title_case(text) and _parse_plain(text) is None and not _is_part_heading(text)


def _without_stop(title: str) -> str:
    return title[:-1].rstrip() if title.endswith((".", ":")) and not title.endswith("...") else title


def _table_of_contents(
    lines: list[str], found: list[_Heading], keys: list[tuple[str, int | str]]
) -> set[int]:
    """Which of the `found` headings are entries of a table of contents: headings listed one after
    another (at most _LISTING_LINES short lines between them) whose chapter comes again further on.
    The list's last entry has the book's next text under it; it is an entry too when its chapter comes
    again, or when it goes on counting a list of at least _MIN_LISTED empty entries (a contents page
    whose chapters the book heads in another way: its last entry must not take the book as its text),
    but not when it starts the chapters over (the list's first chapter again: the book's chapter 1
    right under its contents)."""
    last_seen = {key: k for k, key in enumerate(keys)}
    toc: set[int] = set()
    k = 0
    while k < len(found):
        run = [k]
        while run[-1] + 1 < len(found) and _is_listing(lines, found[run[-1]].end, found[run[-1] + 1].line):
            run.append(run[-1] + 1)
        *listed, last = run
        entries = [m for m in listed if last_seen[keys[m]] > m]
        if listed and keys[last] != keys[run[0]]:
            counts_on = (
                len(run) >= _MIN_LISTED
                and _follows(keys[listed[-1]], keys[last])
                and all(_is_empty(lines, found[m].end, found[m + 1].line) for m in listed)
                and not _is_empty(
                    lines, found[last].end, found[last + 1].line if last + 1 < len(found) else len(lines)
                )
            )
            if last_seen[keys[last]] > last or counts_on:
                entries.append(last)
        if entries:
            # The contents come first: every heading listed above an entry is an entry too (else the
            # one above would take the entries' lines as its text).
            toc.update(range(run[0], max(entries) + 1))
        k = last + 1
    return toc


def _follows(before: tuple[str, int | str], after: tuple[str, int | str]) -> bool:
    """Whether chapter `after` is the one after chapter `before` (2 after 1, "XV" after "XIV")."""
    (kind, number), (next_kind, next_number) = before, after
    return (
        kind == next_kind == "chapter"
        and isinstance(number, int)
        and isinstance(next_number, int)
        and next_number == number + 1
    )


def _is_empty(lines: list[str], start: int, stop: int) -> bool:
    return all(not line.strip() or _is_part_heading(line.strip()) for line in lines[start:stop])


def _is_listing(lines: list[str], start: int, stop: int) -> bool:
    """Whether the lines between two headings are what a contents page has between its entries:
    nothing, or a few short lines that are no sentences ("ETYMOLOGY.", "Book the Second--the Golden
    Thread", a page number); a chapter, even a short one, has a sentence."""
    text = [line.strip() for line in lines[start:stop] if line.strip()]
    return len(text) <= _LISTING_LINES and all(
        len(line) <= MAX_HEADING_CHARS and (_is_title_case(line) or not _WORD.search(line)) for line in text
    )


def _part_heading_above(lines: list[str], start: int, stop: int) -> range | None:
    """The lines of a part heading ("VOLUME II", with a title line under it or not) that ends the text
    between `start` and the next chapter's heading at `stop`, when it stands as its own paragraph."""
    last = stop - 1
    while last >= start and not lines[last].strip():
        last -= 1
    first = last
    while first - 1 >= start and lines[first - 1].strip():
        first -= 1
    if last < start or last - first > 1 or first - 1 < start or not _is_part_heading(lines[first].strip()):
        return None
    return range(first, last + 1)


# ---------------------------------------------------------------------------------------------
# Reading a book file

# Tags of real HTML (not "<3" or "a < b" or a made-up "<Static>"): a book with any of them is markup.
_HTML_TAG = re.compile(
    r"<\s*/?\s*(?:p|br|div|span|i|b|u|em|strong|script|style|a|img|h[1-6]|ul|ol|li|blockquote|hr|table|"
    r"tr|td|th|font|center|sup|sub|iframe|object|embed|html|head|body|meta|link|title|pre|code|small|"
    r"section|article|header|footer|nav|svg|form|input|button)\b[^>]*>|<!--",
    re.IGNORECASE,
)


def describe_size(n: int) -> str:
    """A file size as the reader's errors give it: "12.3 MB (12,897,484 bytes)" or "2,048 bytes"."""
    return f"{n / (1024 * 1024):.1f} MB ({n:,} bytes)" if n >= 1024 * 1024 else f"{n:,} bytes"


def _check_size(name: str, size: int, *, max_bytes: int) -> None:
    if size > max_bytes:
        raise ApplicationError(f"'{name}' is {describe_size(size)}; the limit is {describe_size(max_bytes)}.")


def read_book_file(
    path: Path | str, *, max_bytes: int, filename: str | None = None, markup_to_text: bool = False
) -> DetectedBook:
    """`read_book` of a file, refused before reading when it is over `max_bytes` (a 10 GB file should
    not be loaded to learn that it is too big). `filename` names it in errors instead of its path."""
    path = Path(path)
    name = PurePath(filename).name if filename else path.name
    if not path.is_file():
        raise ApplicationError(f"No such book file: {path}")
    _check_size(name, path.stat().st_size, max_bytes=max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ApplicationError(f"Cannot read '{path}': {exc.strerror or exc}.") from exc
    return read_book(data, name, max_bytes=max_bytes, markup_to_text=markup_to_text)


def read_book(data: bytes, filename: str, *, max_bytes: int, markup_to_text: bool = False) -> DetectedBook:
    """The front matter and chapters of a .txt/.md/.markdown/.epub book (its format by `filename`);
    ApplicationError saying why for anything that is not a readable book within `max_bytes` (an
    EPUB also within EPUB_UNPACKED_FACTOR x `max_bytes` unpacked).

    With `markup_to_text`, HTML markup in a text book is turned into text before it is split (the
    training library does; a book read back from the library, or a story import, is text as written).
    A book may have no chapters (only a title): the caller says whether that is an error."""
    name = PurePath(filename).name
    suffix = PurePath(name).suffix.lower()
    if suffix == ".epub":
        return _read_epub(data, name, max_bytes=max_bytes)
    if suffix not in TEXT_SUFFIXES:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise ApplicationError(
            f"'{name}' is {kind}; a book is one of {', '.join(BOOK_SUFFIXES)} "
            "(save Word or PDF documents as plain text first)."
        )
    text = clean_text(decode_text_file(data, filename=name, max_bytes=max_bytes))
    notes: list[str] = []
    if markup_to_text and _HTML_TAG.search(text):
        tags = sorted(
            {m.group(0).lower().split()[0].strip("</>") or "<!--" for m in _HTML_TAG.finditer(text)}
        )
        text = _tidy_paragraphs(_html_to_text(text, html_whitespace=False))
        notes.append(
            f"HTML markup was turned into text ({', '.join('<' + t + '>' for t in tags[:6])}"
            f"{', ...' if len(tags) > 6 else ''}; scripts and styles dropped)."
        )
        try:
            text = clean_text(text)
        except ApplicationError as exc:
            raise ApplicationError(f"'{name}' has no text once its HTML markup is removed.") from exc
    book = split_book(text)
    return replace(book, notes=[*notes, *book.notes])


def _read_epub(data: bytes, name: str, *, max_bytes: int) -> DetectedBook:
    _check_size(name, len(data), max_bytes=max_bytes)
    if not data:
        raise ApplicationError(f"'{name}' is empty.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            # zipfile never inflates a part past its declared size, so this bounds the work below too.
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > EPUB_UNPACKED_FACTOR * max_bytes:
                raise ApplicationError(
                    f"'{name}' unpacks to {describe_size(unpacked)}; the limit is "
                    f"{describe_size(EPUB_UNPACKED_FACTOR * max_bytes)}."
                )
            broken = archive.testzip()  # the first part whose checksum is wrong, or None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise ApplicationError(
            f"'{name}' is not a readable EPUB: it is not a complete ZIP archive, which an EPUB is ({exc})."
        ) from exc
    if broken is not None:
        raise ApplicationError(f"'{name}' is not a readable EPUB: its part '{broken}' is damaged.")
    try:
        import ebooklib
        from ebooklib import epub
    except ImportError as exc:  # a dependency (pyproject.toml); only a broken install lacks it
        raise ApplicationError(
            f"'{name}' is an EPUB, and reading EPUB needs the ebooklib package, which is not installed here."
        ) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about its own future defaults
            book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as exc:  # ebooklib raises bare KeyError/lxml/zip errors on a broken book
        raise ApplicationError(f"'{name}' is not a readable EPUB: {type(exc).__name__}: {exc}.") from exc

    def meta(field_name: str, *, join: bool = False) -> str:
        try:
            values = [str(v[0]) for v in book.get_metadata("DC", field_name) if v and v[0]]
        except Exception:
            return ""
        values = [_html_to_text(v, html_whitespace=True).strip() for v in values]
        values = [v for v in values if v]
        return (", ".join(values) if join else (values[0] if values else "")).strip()

    chapters: list[DetectedChapter] = []
    skipped_pages = 0
    for item_id, linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        if not item.is_chapter() or str(linear).lower() == "no":
            # The navigation page (a table of contents), or a page outside the reading order.
            skipped_pages += 1
            continue
        parser = _HTMLToText(html_whitespace=True, capture_heading=True)
        parser.feed(item.get_content().decode("utf-8", errors="replace"))
        parser.close()
        try:
            text = clean_text(_tidy_paragraphs("".join(parser.parts)))
        except ApplicationError:
            skipped_pages += 1  # a cover image, a blank page, or a part title with nothing under it
            continue
        # A page without a heading is numbered, as a text book without headings is "Chapter 1".
        heading = " ".join("".join(parser.heading).split()) or f"Chapter {len(chapters) + 1}"
        chapters.append(DetectedChapter(title=heading, text=text))
    notes = []
    if skipped_pages:
        notes.append(
            f"{skipped_pages} EPUB page(s) without story text (navigation, cover, blank) were left out."
        )
    date = meta("date")
    if re.match(r"^\d{4}-\d{2}-\d{2}T", date):
        date = date[:10]  # "2024-05-01T00:00:00+00:00": the day is what a reader means by a date
    return DetectedBook(
        front_matter="",
        chapters=chapters,
        title=meta("title"),
        author=meta("creator", join=True),
        date=date,
        description=meta("description"),
        notes=notes,
    )


class _HTMLToText(HTMLParser):
    """The visible text of HTML: blocks become paragraphs, <br> a line break, scripts and styles are
    dropped, entities decoded. With `html_whitespace` (real HTML, EPUB), runs of spaces and newlines
    inside the text are one space, as a browser shows them; without it (markup inside a text book)
    the book's own line breaks are kept. With `capture_heading`, the first h1-h3 is the page's title
    and is kept out of the text (as an EPUB chapter's heading)."""

    _BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "tr", "hr",
                         "section", "article", "header", "footer", "ul", "ol", "table", "pre"})  # fmt: skip
    _HIDDEN = frozenset({"script", "style", "head", "title", "svg", "iframe", "object", "noscript"})

    def __init__(self, *, html_whitespace: bool, capture_heading: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.heading: list[str] = []
        self._html_whitespace = html_whitespace
        self._capture = capture_heading
        self._hidden = 0
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        if self._capture and tag in {"h1", "h2", "h3"} and not self.heading:
            self._in_heading = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n\n")
        if tag in {"h1", "h2", "h3"}:
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._html_whitespace:
            data = re.sub(r"\s+", " ", data)
        (self.heading if self._in_heading else self.parts).append(data)


def _html_to_text(text: str, *, html_whitespace: bool) -> str:
    parser = _HTMLToText(html_whitespace=html_whitespace)
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def _tidy_paragraphs(text: str) -> str:
    # HTML's indentation and the blank lines around every block: one blank line between paragraphs.
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
