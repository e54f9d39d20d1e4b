"""The one book reader: a .txt/.md/.markdown/.epub file into its chapters, split by their headings.

No Django: the writer's import, the training library (`import_books`) and `build_dataset` read books
through `read_book` / `read_book_file`, so the same file gives the same chapters everywhere. A text
book is decoded and cleaned as an upload is (`writer.text_input`) and split by `split_book`; an EPUB
is read page by page in its reading order, within a size limit for the file and for what it unpacks
to (a "zip bomb"), leaving out its navigation page and pages without text.

Two kinds of books:
- Markdown: chapters are `#`..`######` headings. A single top-level `# Title` followed by deeper
  headings is the book's title (front matter), and the chapters are the next level down; headings
  deeper than the chapter level stay inside the chapter's text (scene titles).
- Plain text: chapters are short whole lines such as "Chapter 1", "Chapter 12: The Storm",
  "CHAPTER XIV", "Chapter Twenty-Three", "Ch. 3", "Prologue" and "Epilogue". "chapter" inside a
  sentence ("In chapter 3 of his life...") or a long line starting with it is never a heading.
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


# Headings are short; a longer line starting with "Chapter" is prose.
MAX_HEADING_CHARS = 80

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


def unwrap_emphasis(line: str) -> str:
    """`line` stripped, without the bold/italic markers around all of it ("**By A. Writer**")."""
    line = line.strip()
    m = _EMPHASIS.match(line)
    return m.group("inner").strip() if m else line


def plain_chapter_title(line: str) -> str | None:
    """The chapter title if `line` (stripped) is a plain chapter heading ("Chapter 12: The Storm" ->
    "The Storm", "CHAPTER II" -> "CHAPTER II"), else None."""
    if not line or len(line) > MAX_HEADING_CHARS:
        return None
    line = unwrap_emphasis(line)
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
    return plain_chapter_title(title.strip()) or title.strip()


def markdown_heading_title(line: str) -> str | None:
    """The chapter title `split_book` takes from a markdown heading line, or None if it is none."""
    m = _MD_HEADING.match(line)
    return _chapter_title_of_markdown(m.group("title")) if m else None


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
        chapter_like = [h.level for h in md if plain_chapter_title(h.title) is not None]
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
        title = plain_chapter_title(line.strip())
        if title is not None:
            plain.append(_Heading(i, 0, title))
    return title_line, plain


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
    return replace(split_book(text), notes=notes)


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
