"""The training-book library: a folder of books, one normalised markdown file per book.

Importable without Django: the folder is an argument (`library_dir`); the Django default is
`settings.TRAINING_BOOKS_DIR` (var/books). `build_dataset --books <library>` trains on it as it is.

`import_book_file` reads a .txt/.md/.markdown/.epub book with the one book reader
(`writer.book_import.read_book`, as `training.dataset.load_book_file` and the writer's import do), fills chapter 0
(title, author, date, version, summary, and characters/setting/intent when the book has them: from
the front matter or the EPUB metadata, each overridable) and writes ONE file `<library>/<slug>.md`:

    # The Glass Market

    Author: A. Writer
    Date: 2024-05-01
    Version: 2

    What the book is about (the summary: the text after those lines, up to the first label).

    Characters: Juno, a courier; Static, her earpiece assistant.

    ## Chapter 1: Salt in Everything

    ...

`load_book_file` reads that file back to the same title, author and chapters (numbered 1..n; the
front matter below the title and author is chapter 0's summary text, Date/Version lines included, as
the model sees it), and `read_library_book` to the same fields: "Date:" and "Version:" are one line
each, "Characters:", "Setting:" and "Intent:" run to the next label, and text under no label is the
summary. To keep that true, the text is
normalised on the way in: markdown headings of level 1-2 inside a chapter become level 3 (they would
start a new chapter), lines opening a code fence (``` or ~~~) are spaced out ("~ ~ ~", they would
hide the headings after them), HTML markup is turned into text (a <script> is dropped), and chapter
titles that only repeat a number ("CHAPTER II") become "Chapter N". The file is written into a
temporary folder inside the library, read back with `load_book_file`, compared, and only then moved
into place, so a failed import leaves nothing behind and an existing book is replaced only when asked.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePath
from typing import Any

from mesu_web.errors import ApplicationError
from mesu_web.slugs import slug_of
from training.dataset import (
    BOOK_MAX_BYTES,
    DEFAULT_MAX_ANSWER_CHARS,
    NOT_BOOK_STEMS,
    SUMMARY_CHARS,
    find_books,
    load_book_file,
    meta_from_front_matter,
    title_from_stem,
)
from writer.book_import import (
    BOOK_SUFFIXES,
    MAX_HEADING_CHARS,
    DetectedBook,
    describe_size,
    markdown_heading_title,
    plain_chapter_title,
    read_book,
    read_book_file,
    unwrap_emphasis,
)
from writer.prompting import ChapterText
from writer.text_input import clean_text

LIBRARY_SUFFIX = ".md"
TITLE_MAX_CHARS = 200  # as writer.models.Story.title
# "Author: <name>" must stay within the 120 characters that meta_from_front_matter reads as an author.
AUTHOR_MAX_CHARS = 100
SHORT_FIELD_MAX_CHARS = 100  # date, version
# Characters, setting and intent share chapter 0 with the summary; none may take all of it.
LONG_FIELD_MAX_CHARS = 600
SLUG_MAX_CHARS = 80
# A chapter this short is more likely a title, contents or copyright page than a part of the story.
SHORT_CHAPTER_WORDS = 30

# Chapter 0 fields after title and author: label as written -> field. The first label of each field
# is the one the library writes.
_LABELS: dict[str, str] = {
    "date": "date",
    "published": "date",
    "version": "version",
    "edition": "version",
    "revision": "version",
    "summary": "summary",
    "synopsis": "summary",
    "blurb": "summary",
    "description": "summary",
    "characters": "characters",
    "setting": "setting",
    "intent": "intent",
    "author's intent": "intent",
    "the author's intent": "intent",
    "notes on intent": "intent",
}
_WRITTEN_LABELS = {"date": "Date", "version": "Version", "summary": "Summary", "characters": "Characters",
                   "setting": "Setting", "intent": "Intent"}  # fmt: skip
_SINGLE_LINE = ("date", "version")
_MULTI_LINE = ("summary", "characters", "setting", "intent")
_LABEL_LINE = re.compile(
    r"^(?P<label>"
    + "|".join(re.escape(k).replace("'", "['’]") for k in sorted(_LABELS, key=len, reverse=True))
    + r")\s*:\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_HEADING_LINE = re.compile(r"^(?P<hashes>#{1,6})(?=\s+\S)")
_FENCE_LINE = re.compile(r"^(?P<indent>\s*)(?P<run>`{3,}|~{3,})")


class BookExistsError(ApplicationError):
    """The library already holds a book under this slug (and overwrite was not asked for)."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message, {"path": str(path)})
        self.path = path


@dataclass(frozen=True)
class BookMetadata:
    """Chapter 0 of a training book."""

    title: str
    author: str = ""
    date: str = ""
    version: str = ""
    summary: str = ""
    characters: str = ""
    setting: str = ""
    intent: str = ""


@dataclass
class SourceBook:
    """A book as read from its file, before it is normalised and written."""

    metadata: BookMetadata
    chapters: list[ChapterText]
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportedBook:
    """A book in the library: its file, chapter 0, chapters 1..n, and what was noticed on the way."""

    slug: str
    path: Path
    metadata: BookMetadata
    chapters: list[ChapterText]
    source: str = ""  # the imported file's name
    notes: list[str] = field(default_factory=list)
    replaced: bool = False  # an existing book of this slug was overwritten

    @property
    def words(self) -> int:
        return sum(len(c.text.split()) for c in self.chapters)

    @property
    def pairs(self) -> int:
        return expected_pairs(self.chapters)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def to_json(self) -> dict[str, Any]:
        """Everything but the chapter texts (a command prints this)."""
        return {
            "slug": self.slug,
            "path": str(self.path),
            "source": self.source,
            **{f.name: getattr(self.metadata, f.name) for f in fields(BookMetadata)},
            "chapters": len(self.chapters),
            "words": self.words,
            "pairs": self.pairs,
            "bytes": self.bytes,
            "replaced": self.replaced,
            "notes": list(self.notes),
        }


@dataclass
class BookSummary:
    """One line of `list_books`: a book file of the library and what build_dataset will get from it."""

    slug: str
    file: str
    title: str = ""
    author: str = ""
    date: str = ""
    version: str = ""
    chapters: int = 0
    words: int = 0
    pairs: int = 0  # at most: build_dataset also skips pairs whose chapter 0 alone is over the budget
    bytes: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""  # the file cannot be read (e.g. edited by hand into something else)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------
# Reading a book file


def read_book_source(
    source: Path | str | bytes, *, filename: str | None = None, max_bytes: int = BOOK_MAX_BYTES
) -> SourceBook:
    """Chapter 0 and chapters 1..n of a .txt/.md/.markdown/.epub book (a path, or bytes + filename);
    ApplicationError saying why for anything that is not a readable book within `max_bytes`."""
    if isinstance(source, bytes | bytearray):
        if not filename:
            raise ApplicationError("A book given as bytes needs its file name (the name tells its format).")
        name = PurePath(filename).name
        book = read_book(bytes(source), name, max_bytes=max_bytes, markup_to_text=True)
    else:
        name = PurePath(filename or Path(source).name).name
        book = read_book_file(source, filename=filename, max_bytes=max_bytes, markup_to_text=True)
    if not book.chapters:
        raise ApplicationError(f"'{name}' has no chapter text (only a title or front matter).")
    chapters = [
        ChapterText(number=i, title=ch.title, text=ch.text) for i, ch in enumerate(book.chapters, start=1)
    ]
    return SourceBook(metadata=_chapter_zero(book, name), chapters=chapters, notes=list(book.notes))


def _chapter_zero(book: DetectedBook, name: str) -> BookMetadata:
    """An EPUB's metadata, or the fields of a text book's front matter; the file's name as the title
    when the book gives none."""
    fallback = title_from_stem(PurePath(name).stem)
    if PurePath(name).suffix.lower() == ".epub":
        return BookMetadata(
            title=book.title or fallback, author=book.author, date=book.date, summary=book.description
        )
    meta = meta_from_front_matter(book.front_matter, fallback_title=fallback)
    title, rest = meta.title, meta.summary
    if _LABEL_LINE.match(title):
        # No title line, and the first short line is a field ("Date: 2024-05-01"): the file name is the title.
        title, rest = fallback, f"{title}\n{rest}"
    return BookMetadata(title=title, author=meta.author_name, **_fields_from_text(rest))


def _fields_from_text(text: str) -> dict[str, str]:
    """date, version, summary, characters, setting, intent from chapter 0's text below the title and
    author: "Label: value" lines start a field (a multi-line field runs to the next label); text
    outside any label is the summary."""
    values: dict[str, list[str]] = {name: [] for name in (*_SINGLE_LINE, *_MULTI_LINE)}
    loose: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        m = _LABEL_LINE.match(line.strip())
        if m:
            name = _LABELS[m.group("label").lower().replace("’", "'")]
            value = m.group("value").strip()
            if name in _SINGLE_LINE:
                if not values[name]:
                    values[name] = [value]
                else:  # a second "Date:" line is text, not a second date
                    loose.append(line)
                current = None
            else:
                if values[name]:
                    values[name].append("")
                values[name].append(value)
                current = name
        elif current is not None:
            values[current].append(line)
        else:
            loose.append(line)
    out = {name: "\n".join(lines).strip() for name, lines in values.items()}
    unlabelled = "\n".join(loose).strip()
    if unlabelled:
        out["summary"] = f"{unlabelled}\n\n{out['summary']}".strip()
    return out


# ---------------------------------------------------------------------------------------------
# Normalising and writing


def _one_line(value: str, limit: int) -> tuple[str, bool]:
    value = " ".join(str(value).split())
    value = _HEADING_LINE.sub("", value).strip()
    if len(value) <= limit:
        return value, False
    return _cut(value, limit), True


def _cut(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters at a word boundary, ending with an ellipsis."""
    if len(value) <= limit:
        return value
    head = value[: max(0, limit - 1)]
    if " " in head[limit // 2 :]:
        head = head[: head.rindex(" ")]
    return head.rstrip(" ,;:.-") + "…"


def _plain_line(line: str) -> str:
    # meta_from_front_matter strips each line of chapter 0 and unwraps "*emphasis*": do it until it
    # changes nothing, so that reading the file back gives the same text.
    while True:
        new = unwrap_emphasis(line)
        if new == line:
            return line
        line = new


def _many_lines(value: str) -> str:
    """A multi-line chapter-0 field as it can be written: lines plain, no headings, no fences, one
    blank line at most between paragraphs."""
    out: list[str] = []
    for raw in str(value).replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw
        while True:
            new = _space_fence(_plain_line(_HEADING_LINE.sub("", line.strip()).strip()))
            if new == line:
                break
            line = new
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip()


def _space_fence(line: str) -> str:
    m = _FENCE_LINE.match(line)
    if not m:
        return line
    run = m.group("run")
    return m.group("indent") + " ".join(run) + line[m.end() :]


def _chapter_text(text: str) -> str:
    """A chapter's text as it can sit under a "## Chapter N" heading and be read back the same."""
    lines = []
    for line in text.split("\n"):
        m = _HEADING_LINE.match(line)
        if m and len(m.group("hashes")) <= 2:
            line = "###" + line[m.end() :]  # a "# Part Two" inside a chapter would start a new chapter
        lines.append(_space_fence(line))
    return clean_text("\n".join(lines))


def _heading_title(raw: str, number: int) -> str:
    """The title written as "## Chapter N: <title>": one that reads back as itself."""
    # Trailing punctuation would make "Chapter 4: The End." read as prose rather than a heading.
    title = " ".join(raw.split()).lstrip("#:.| ").rstrip(" .,;:").strip()
    head = plain_chapter_title(title)
    if head is not None:
        if head == title and re.match(r"(?i)ch(?:apter|\.|\b)", title):
            title = ""  # only a number ("CHAPTER II", "Chapter Twelve"): it is renumbered anyway
        else:
            title = head
    plain = f"Chapter {number}"
    if not title or title.lower() == plain.lower():
        return plain
    room = MAX_HEADING_CHARS - len(plain) - 2  # longer, "Chapter N: <title>" would read as prose
    for candidate in (_cut(title, room), _cut(title, room).rstrip(" .,;:#|-–—")):
        if candidate and markdown_heading_title(f"## {plain}: {candidate}") == candidate:
            return candidate
    return plain


def _heading(ch: ChapterText) -> str:
    plain = f"Chapter {ch.number}"
    return f"## {plain}" if ch.title == plain else f"## {plain}: {ch.title}"


def render_book(metadata: BookMetadata, chapters: Sequence[ChapterText]) -> str:
    """The library's markdown for a book whose metadata and chapters are already normalised."""
    lines = [f"# {metadata.title}", ""]
    facts = [("Author", metadata.author), ("Date", metadata.date), ("Version", metadata.version)]
    facts = [(label, value) for label, value in facts if value]
    if facts:
        lines += [f"{label}: {value}" for label, value in facts] + [""]
    if metadata.summary:
        lines += [metadata.summary, ""]  # unlabelled, as a book's front matter reads (and the model sees it)
    for name in _MULTI_LINE[1:]:
        value = getattr(metadata, name)
        if value:
            lines += [f"{_WRITTEN_LABELS[name]}: {value}", ""]
    for ch in chapters:
        lines += [_heading(ch), "", ch.text, ""]
    return "\n".join(lines)


def _chapter_zero_rest(metadata: BookMetadata) -> str:
    # What meta_from_front_matter keeps as the summary (at most SUMMARY_CHARS): all but title, author.
    parts = []
    short = [f"{_WRITTEN_LABELS[n]}: {getattr(metadata, n)}" for n in _SINGLE_LINE if getattr(metadata, n)]
    if short:
        parts.append("\n".join(short))
    if metadata.summary:
        parts.append(metadata.summary)
    parts += [
        f"{_WRITTEN_LABELS[n]}: {getattr(metadata, n)}" for n in _MULTI_LINE[1:] if getattr(metadata, n)
    ]
    return "\n\n".join(parts)


def normalise_metadata(metadata: BookMetadata) -> tuple[BookMetadata, list[str]]:
    """Chapter 0 as the library writes it, and notes on what had to be shortened."""
    notes: list[str] = []
    title, cut = _one_line(metadata.title, TITLE_MAX_CHARS)
    title = title.rstrip("# ").strip()  # "# C#" would read back as "C"... and "# Title #" as "Title"
    if not title:
        raise ApplicationError("A training book needs a title.")
    if cut:
        notes.append(f"The title was shortened to {TITLE_MAX_CHARS} characters.")
    values: dict[str, str] = {"title": title}
    for name, limit in (
        ("author", AUTHOR_MAX_CHARS),
        ("date", SHORT_FIELD_MAX_CHARS),
        ("version", SHORT_FIELD_MAX_CHARS),
    ):
        values[name], cut = _one_line(getattr(metadata, name), limit)
        if cut:
            notes.append(f"The {name} was shortened to {limit} characters.")
    for name in _MULTI_LINE:
        value = _many_lines(getattr(metadata, name))
        if name != "summary" and len(value) > LONG_FIELD_MAX_CHARS:
            value = _cut(value, LONG_FIELD_MAX_CHARS)
            notes.append(f"The {name} was shortened to {LONG_FIELD_MAX_CHARS} characters.")
        values[name] = value
    result = BookMetadata(**values)
    excess = len(_chapter_zero_rest(result)) - SUMMARY_CHARS
    if excess > 0:
        # load_book_file keeps SUMMARY_CHARS of chapter 0 below the title and author: the summary gives way.
        keep = max(0, len(result.summary) - excess - 1)
        summary = _cut(result.summary, keep) if keep >= 40 else ""
        result = replace(result, summary=summary)
        notes.append(
            f"The summary was shortened to {len(summary):,} characters: chapter 0 (date, version, summary, "
            f"characters, setting, intent) holds {SUMMARY_CHARS:,} characters."
        )
    return result, notes


def normalise_chapters(chapters: Sequence[ChapterText]) -> list[ChapterText]:
    """Chapters numbered 1..n with texts and titles that read back unchanged from the library file."""
    out: list[ChapterText] = []
    for ch in chapters:
        try:
            text = _chapter_text(ch.text)
        except ApplicationError:
            continue  # nothing but whitespace: no chapter
        number = len(out) + 1
        out.append(ChapterText(number=number, title=_heading_title(ch.title, number), text=text))
    return out


def slugify(value: str) -> str:
    """A file-name slug: ASCII letters, digits and dashes when the title has any, else its own letters."""
    return slug_of(value, max_length=SLUG_MAX_CHARS, keep_letters=True)


def _check_slug(slug: str) -> str:
    if not slug or slug != slugify(slug) or slug.startswith("."):
        raise ApplicationError(
            f"'{slug}' is not a book name in the library (lower-case letters, digits and dashes, e.g. 'neon-rain')."
        )
    return slug


def expected_pairs(
    chapters: Sequence[ChapterText], *, max_answer_chars: int | None = DEFAULT_MAX_ANSWER_CHARS
) -> int:
    """Pairs build_dataset makes of these chapters: one per chapter after the first, less those whose
    answer is over `max_answer_chars` (build_dataset may skip more: chapter 0 over the prompt budget)."""
    answers = list(chapters)[1:]
    if max_answer_chars is None:
        return len(answers)
    return sum(1 for ch in answers if len(ch.text) <= max_answer_chars)


def book_notes(chapters: Sequence[ChapterText]) -> list[str]:
    """What a trainer should know about a book's chapters before building a dataset from it."""
    notes: list[str] = []
    if len(chapters) < 2:
        notes.append(
            f"{len(chapters)} chapter: gives no training pairs (a pair is chapters 1..k -> chapter k+1; "
            "it needs at least 2)."
        )
    for ch in list(chapters)[1:]:
        if len(ch.text) > DEFAULT_MAX_ANSWER_CHARS:
            notes.append(
                f"Chapter {ch.number} is {len(ch.text):,} characters, over build_dataset's "
                f"{DEFAULT_MAX_ANSWER_CHARS:,}-character answer limit: the pair with it as the answer is "
                "skipped (a chapter this long is often a book whose headings were not found)."
            )
    short = [str(ch.number) for ch in chapters if len(ch.text.split()) < SHORT_CHAPTER_WORDS]
    if short:
        notes.append(
            f"Chapter(s) {', '.join(short)} have fewer than {SHORT_CHAPTER_WORDS} words: a title, contents "
            "or copyright page? Edit the book file to remove it if it is not part of the story."
        )
    return notes


def import_book_file(
    source: Path | str | bytes,
    *,
    library_dir: Path | str,
    filename: str | None = None,
    title: str | None = None,
    author: str | None = None,
    date: str | None = None,
    version: str | None = None,
    summary: str | None = None,
    characters: str | None = None,
    setting: str | None = None,
    intent: str | None = None,
    slug: str | None = None,
    overwrite: bool = False,
    max_bytes: int = BOOK_MAX_BYTES,
    expected_chapters: int | None = None,
) -> ImportedBook:
    """Import one book file (a path, or bytes with `filename`) into the library as `<slug>.md`.

    Chapter 0 comes from the book (front matter, or EPUB metadata); each keyword that is not None
    replaces its field ("" clears it). The slug is made from the title unless given. Raises
    ApplicationError for anything that cannot be imported (also when `expected_chapters` is given and
    the book splits into another number), and BookExistsError when the library has a book of that slug
    and `overwrite` is False; nothing is written in either case."""
    library = Path(library_dir)
    book = read_book_source(source, filename=filename, max_bytes=max_bytes)
    overrides = {
        "title": title, "author": author, "date": date, "version": version, "summary": summary,
        "characters": characters, "setting": setting, "intent": intent,
    }  # fmt: skip
    metadata = replace(book.metadata, **{k: v for k, v in overrides.items() if v is not None})
    metadata, notes = normalise_metadata(metadata)
    chapters = normalise_chapters(book.chapters)
    if not chapters:
        raise ApplicationError(f"'{_source_name(source, filename)}' has no chapter text.")
    if expected_chapters is not None and len(chapters) != expected_chapters:
        raise ApplicationError(
            f"'{_source_name(source, filename)}' splits into {len(chapters)} chapters, but the book has "
            f"{expected_chapters}: not imported (its chapter headings are read wrong)."
        )
    slug = _check_slug(slug) if slug is not None else slugify(metadata.title)
    if not slug:
        slug = slugify(title_from_stem(PurePath(_source_name(source, filename)).stem)) or "book"
    target = library / f"{slug}{LIBRARY_SUFFIX}"
    if target.exists() and not overwrite:
        raise BookExistsError(
            f"The library already has '{target.name}' ({target}); import with overwrite (--overwrite) to "
            "replace it, or give this book another title or slug.",
            path=target,
        )
    text = render_book(metadata, chapters)
    data = text.encode("utf-8")
    if len(data) > BOOK_MAX_BYTES:
        raise ApplicationError(
            f"'{_source_name(source, filename)}' makes a {describe_size(len(data))} book; build_dataset reads "
            f"books of up to {describe_size(BOOK_MAX_BYTES)}."
        )
    try:
        library.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApplicationError(f"Cannot create the library folder {library}: {exc.strerror or exc}.") from exc

    # Written in a hidden folder of the library (the same file system, so the move is atomic;
    # build_dataset reads only the files directly in the folder), read back, then moved into place.
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=library))
    try:
        tmp = work / target.name
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        stored = read_library_book(tmp)
        if [(c.number, c.title, c.text) for c in stored.chapters] != [
            (c.number, c.title, c.text) for c in chapters
        ]:
            diff = next(
                (a.number for a, b in zip(stored.chapters, chapters, strict=False) if a != b),
                min(len(stored.chapters), len(chapters)) + 1,
            )
            raise ApplicationError(
                f"'{_source_name(source, filename)}' could not be written so that it reads back the same "
                f"(chapter {diff} differs); nothing was imported. Please report this book.",
            )
        if stored.metadata.title != metadata.title:
            raise ApplicationError(
                f"'{_source_name(source, filename)}' could not be written so that its title reads back the "
                "same; nothing was imported. Please report this book."
            )
        if stored.metadata != metadata:
            # Free text that reads as a field (a "Setting: ..." or "By ..." line inside the summary): the
            # file is the truth, and the result says what it holds.
            changed = [
                f.name
                for f in fields(BookMetadata)
                if getattr(stored.metadata, f.name) != getattr(metadata, f.name)
            ]
            notes.append(
                f"Some chapter-0 text reads back as another field ({', '.join(changed)}): a line of the "
                "summary starts with a label such as 'Setting:' or 'By'."
            )
        os.chmod(tmp, 0o644)  # mkstemp-style 0600 would hide the book from a worker running as another user
        replaced = target.exists()
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if a book of this name appeared meanwhile: never replaced
            except FileExistsError as exc:
                raise BookExistsError(
                    f"The library already has '{target.name}' ({target}); import with overwrite to replace it.",
                    path=target,
                ) from exc
            except OSError:
                if target.exists():
                    raise BookExistsError(
                        f"The library already has '{target.name}' ({target}).", path=target
                    ) from None
                os.replace(tmp, target)  # a file system without hard links
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ImportedBook(
        slug=slug,
        path=target,
        metadata=stored.metadata,
        chapters=stored.chapters,
        source=_source_name(source, filename),
        notes=[*book.notes, *notes, *book_notes(stored.chapters)],
        replaced=replaced,
    )


def _source_name(source: Path | str | bytes, filename: str | None) -> str:
    if filename:
        return PurePath(filename).name
    return "" if isinstance(source, bytes | bytearray) else Path(source).name


# ---------------------------------------------------------------------------------------------
# Reading the library


def read_library_book(path: Path | str) -> ImportedBook:
    """A book of the library (or any book file build_dataset reads), with its chapter-0 fields."""
    path = Path(path)
    meta, chapters = load_book_file(path)
    extracted = (
        _fields_from_text(meta.summary) if path.suffix.lower() != ".epub" else {"summary": meta.summary}
    )
    metadata = BookMetadata(title=meta.title, author=meta.author_name, **extracted)
    return ImportedBook(slug=path.stem, path=path, metadata=metadata, chapters=chapters, source=path.name)


def list_books(library_dir: Path | str) -> list[BookSummary]:
    """Every book build_dataset would read from the library, sorted by file name, with what it gives.
    A file that cannot be read is listed with its error (build_dataset skips it the same way)."""
    library = Path(library_dir)
    if not library.exists():
        return []
    out: list[BookSummary] = []
    for path in find_books(library):
        size = path.stat().st_size
        try:
            book = read_library_book(path)
        except ApplicationError as exc:
            out.append(BookSummary(slug=path.stem, file=path.name, bytes=size, error=exc.message,
                                   notes=[f"Cannot be read: {exc.message}"]))  # fmt: skip
            continue
        m = book.metadata
        out.append(
            BookSummary(
                slug=path.stem,
                file=path.name,
                title=m.title,
                author=m.author,
                date=m.date,
                version=m.version,
                chapters=len(book.chapters),
                words=book.words,
                pairs=book.pairs,
                bytes=size,
                notes=book_notes(book.chapters),
            )
        )
    return out


def delete_book(library_dir: Path | str, slug: str) -> Path:
    """Remove `<library>/<slug>.md`; returns the removed path. ApplicationError if there is none."""
    _check_slug(slug)
    path = Path(library_dir) / f"{slug}{LIBRARY_SUFFIX}"
    try:
        path.unlink()
    except FileNotFoundError as exc:
        raise ApplicationError(f"The library {library_dir} has no book '{slug}'.") from exc
    except OSError as exc:
        raise ApplicationError(f"Cannot delete {path}: {exc.strerror or exc}.") from exc
    return path


def book_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(book files to import, [(file, why it is skipped)]) for files and folders as given on a command
    line. A folder gives its book files (not recursively), skipping hidden files and files of other
    kinds. README/LICENSE-like files describe a folder and are skipped even when named (`samples/*`
    names samples/README.md); any other named file is taken as it is, and fails on import if it is
    not a book."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if not child.is_file():
                    continue
                if child.name.startswith("."):
                    skipped.append((child, "a hidden file"))
                elif child.suffix.lower() not in BOOK_SUFFIXES:
                    skipped.append((child, f"not a book file (books are {', '.join(BOOK_SUFFIXES)})"))
                elif child.stem.lower() in NOT_BOOK_STEMS:
                    skipped.append((child, f"{child.name} describes the folder; it is not a book"))
                else:
                    files.append(child)
        elif path.stem.lower() in NOT_BOOK_STEMS:
            skipped.append(
                (path, f"{path.name} describes a folder, not a book (rename it to import it as one)")
            )
        else:
            files.append(path)  # a missing or unreadable file fails on import, with its reason
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped
