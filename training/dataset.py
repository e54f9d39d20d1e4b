"""Training pairs from complete books: {chapter 0 + chapters 1..k -> chapter k+1}, split 70/30 by book.

Importable without Django (a Celery task, a management command and a GPU box build the same data).
The prompt of every pair is the writer's own: `writer.prompting.build_prompt`, with the same token
budget rule (chapters newest-first, the first that does not fit shortened with a visible marker,
older ones omitted), so the model trains on exactly the prompts it will be served.

Files written by `build_dataset`:
- `train.jsonl`, `test.jsonl`: one pair per line, fields exactly `prompt` (the chat messages:
  system + user), `answer` (the text of chapter k+1), `book` (the book's id: its file stem), `k`
  (how many chapters the prompt holds; the answer is chapter k+1);
- `split.json`: which books went where, the seed and the fraction, so a split can be reproduced and
  a test score is never computed on a training book.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesu_web.errors import ApplicationError
from writer.book_import import BOOK_SUFFIXES, read_book_file, unwrap_emphasis
from writer.prompting import ChapterText, StoryMeta, build_prompt

logger = logging.getLogger(__name__)

JSONL_FIELDS = ("prompt", "answer", "book", "k")
# A whole book, unlike an upload (MESU_UPLOAD_MAX_BYTES, 5 MB): a long novel is 1-3 MB of text.
BOOK_MAX_BYTES = 64 * 1024 * 1024
# Answers longer than this are skipped by build_dataset: ~100k characters is ~17k words, several
# times a long chapter; a longer "chapter" is a mis-split book, and as a reward reference it would
# make every reward call slow (BLEU/ROUGE are linear, BERTScore truncates at 512 tokens anyway).
DEFAULT_MAX_ANSWER_CHARS = 100_000
SUMMARY_CHARS = 2000  # as writer.services.book_import keeps of the front matter


@dataclass
class Pair:
    prompt: list[dict[str, str]]  # chat messages from build_prompt: system, user
    answer: str  # the text of chapter k+1
    book: str  # the book's id (its file stem)
    k: int  # chapters in the prompt (1..n-1); the answer is chapter k+1

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answer": self.answer, "book": self.book, "k": self.k}


@dataclass
class BookPairs:
    """The pairs of one book and what happened to the ones that are not there."""

    pairs: list[Pair]
    skipped: int = 0  # pairs left out: metadata alone over the budget, or the answer too long
    trimmed: int = 0  # pairs whose prompt had chapters shortened or omitted to fit the budget
    notes: list[str] = field(default_factory=list)


def book_pairs(
    *,
    book_id: str,
    meta: StoryMeta,
    chapters: Sequence[ChapterText],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    max_answer_chars: int | None = None,
) -> BookPairs:
    """`build_pairs` with the trimmed count and notes saying what was skipped and why."""
    ordered = sorted(chapters, key=lambda c: c.number)
    out = BookPairs(pairs=[])
    if len(ordered) < 2:
        out.notes.append(
            f"'{book_id}' has {len(ordered)} chapter{'' if len(ordered) == 1 else 's'}; a pair needs "
            "at least 2 (chapters 1..k in the prompt, chapter k+1 as the answer), so it gives no pairs."
        )
        return out
    for k in range(1, len(ordered)):
        answer = ordered[k]
        if max_answer_chars is not None and len(answer.text) > max_answer_chars:
            out.skipped += 1
            out.notes.append(
                f"Skipped k={k}: chapter {answer.number} is {len(answer.text):,} characters, over the "
                f"{max_answer_chars:,}-character limit for an answer."
            )
            continue
        try:
            built = build_prompt(
                meta=meta,
                chapters=ordered[:k],
                count_tokens=count_tokens,
                budget_tokens=budget_tokens,
                next_number=answer.number,
            )
        except ApplicationError as exc:
            # The metadata and instruction alone are over the budget: every pair of this book is.
            out.skipped += 1
            out.notes.append(f"Skipped k={k}: {exc.message}")
            continue
        if built.report.shortened or built.report.omitted:
            out.trimmed += 1
        out.pairs.append(Pair(prompt=built.messages, answer=answer.text, book=book_id, k=k))
    if out.trimmed:
        out.notes.append(
            f"{out.trimmed} prompt(s) had chapters shortened or omitted to fit {budget_tokens} tokens."
        )
    return out


def build_pairs(
    *,
    book_id: str,
    meta: StoryMeta,
    chapters: Sequence[ChapterText],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    max_answer_chars: int | None = None,
) -> tuple[list[Pair], int]:
    """The n-1 pairs of a book of n chapters, ordered by k, and how many were skipped.

    Each prompt is `build_prompt(meta, chapters 1..k, next_number=k+1)` within `budget_tokens`
    (counted with `count_tokens`, the serving tokenizer): too-long prompts are trimmed by the writer's
    own rule. A pair is skipped (and counted) when the metadata and instruction alone do not fit, or
    its answer is longer than `max_answer_chars`. A book with fewer than 2 chapters gives no pairs.
    """
    result = book_pairs(
        book_id=book_id,
        meta=meta,
        chapters=chapters,
        count_tokens=count_tokens,
        budget_tokens=budget_tokens,
        max_answer_chars=max_answer_chars,
    )
    for note in result.notes:
        logger.info("%s", note)
    return result.pairs, result.skipped


def split_books(
    books: Iterable[str], *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train books, test books), sorted: a seeded shuffle of the sorted ids, the last
    round(n x test_fraction) to test. With 2+ books and a fraction above 0, each side gets at least
    one book; with one book, it is all train (and a warning says so)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ApplicationError(f"The test fraction must be in [0, 1), got {test_fraction}.")
    ids = sorted(set(books))
    # Sorting first makes the result independent of the order the books were found in.
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    if len(ids) >= 2 and test_fraction > 0:
        n_test = min(max(n_test, 1), len(ids) - 1)
    else:
        n_test = 0
        if test_fraction > 0 and ids:
            logger.warning(
                "Only one book (%s): every pair goes to train and the test split is empty.", ids[0]
            )
    cut = len(ids) - n_test
    return sorted(ids[:cut]), sorted(ids[cut:])


def split_by_book(
    pairs: Sequence[Pair], *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs, split by book (no book in both) as `split_books` splits the ids.

    Deterministic for a seed; pairs keep their order. With one book everything is train (logged)."""
    train_books, _ = split_books((p.book for p in pairs), test_fraction=test_fraction, seed=seed)
    in_train = set(train_books)
    return [p for p in pairs if p.book in in_train], [p for p in pairs if p.book not in in_train]


# ---------------------------------------------------------------------------------------------
# Reading books


_TITLE_LINE = re.compile(r"^\s*(?:#\s+|title\s*:\s*)(?P<value>.+?)\s*#*\s*$", re.IGNORECASE)
_AUTHOR_LINE = re.compile(r"^\s*(?:author\s*:|by)\s+(?P<value>.+?)\s*$", re.IGNORECASE)
def meta_from_front_matter(front_matter: str, *, fallback_title: str) -> StoryMeta:
    """Chapter 0 from a book's front matter: "# Title" / "Title: ..." and "Author: ..." / "By ..."
    lines when present; else a short first line (not a sentence) is the title; else `fallback_title`.
    The rest of the front matter is the summary (dates and versions included, as written)."""
    lines = [line for line in front_matter.splitlines()]
    title = author = ""
    rest: list[str] = []
    for line in lines:
        text = unwrap_emphasis(line)
        if not title and (m := _TITLE_LINE.match(text)):
            title = m.group("value")
        elif not author and (m := _AUTHOR_LINE.match(text)) and len(text) <= 120:
            author = m.group("value")
        else:
            rest.append(line)
    if not title:
        first = next((i for i, line in enumerate(rest) if line.strip()), None)
        if first is not None:
            candidate = unwrap_emphasis(rest[first])
            if len(candidate) <= 80 and not candidate.endswith((".", "!", "?", ",", ";", ":")):
                title = candidate
                del rest[first]
    summary = "\n".join(unwrap_emphasis(line) for line in rest).strip()
    return StoryMeta(title=title or fallback_title, author_name=author, summary=summary[:SUMMARY_CHARS])


def title_from_stem(stem: str) -> str:
    """A title from a file's name, for a book that gives none: "neon_rain" -> "Neon Rain"."""
    words = re.split(r"[_\-\s]+", stem.strip())
    return " ".join(w[:1].upper() + w[1:] for w in words if w) or stem


def load_book_file(
    path: Path | str, *, max_bytes: int = BOOK_MAX_BYTES
) -> tuple[StoryMeta, list[ChapterText]]:
    """(chapter 0 metadata, chapters 1..n) of a .txt/.md/.markdown/.epub book, read by the one book
    reader (`writer.book_import.read_book_file`) as the writer and the library read it: a text book's
    chapter 0 from its front matter, an EPUB's from its metadata."""
    path = Path(path)
    book = read_book_file(path, max_bytes=max_bytes)
    fallback = title_from_stem(path.stem)
    if path.suffix.lower() == ".epub":
        meta = StoryMeta(
            title=book.title or fallback, author_name=book.author, summary=book.description[:SUMMARY_CHARS]
        )
    else:
        meta = meta_from_front_matter(book.front_matter, fallback_title=fallback)
    chapters = [
        ChapterText(number=i, title=ch.title[:200], text=ch.text)
        for i, ch in enumerate(book.chapters, start=1)
    ]
    return meta, chapters


# ---------------------------------------------------------------------------------------------
# JSONL


def write_rows(rows: Iterable[dict[str, Any]], path: Path | str) -> int:
    """Write one JSON object per line (UTF-8) under a temporary name, then rename; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)  # a crash mid-write never leaves a half file under the real name
    return count


def write_jsonl(pairs: Iterable[Pair], path: Path | str) -> int:
    """Write one pair per line (fields `prompt`, `answer`, `book`, `k`); returns the count."""
    return write_rows((pair.to_json() for pair in pairs), path)


def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """The rows of a pairs file, every field kept (distillation adds some), each checked to be a pair:
    a JSON object with `prompt` (chat messages), `answer`, `book` and an integer `k`. ApplicationError
    naming the line on a bad one."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                missing = [f for f in JSONL_FIELDS if f not in row]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                if not isinstance(row["prompt"], list) or not all(
                    isinstance(m, dict) and {"role", "content"} <= m.keys() for m in row["prompt"]
                ):
                    raise ValueError("prompt is not a list of chat messages")
                row["k"] = int(row["k"])
            except (ValueError, TypeError) as exc:
                raise ApplicationError(f"{path.name} line {number} is not a training pair: {exc}.") from exc
            rows.append(row)
    return rows


def read_jsonl(path: Path | str) -> list[Pair]:
    """The pairs of a file written by `write_jsonl`; ApplicationError naming the line on a bad one."""
    return [
        Pair(prompt=row["prompt"], answer=str(row["answer"]), book=str(row["book"]), k=row["k"])
        for row in read_rows(path)
    ]


# ---------------------------------------------------------------------------------------------
# The whole build


# Files a folder of books often holds that are not books (samples/README.md, LICENSE.txt, ...).
NOT_BOOK_STEMS = frozenset(
    {"readme", "license", "licence", "copying", "changelog", "changes", "contributing", "authors", "notice"}
)


def find_books(books_dir: Path | str) -> list[Path]:
    """The book files of a folder: .txt/.md/.epub, README/LICENSE-like files left out."""
    folder = Path(books_dir)
    if not folder.is_dir():
        raise ApplicationError(f"No such folder of books: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in BOOK_SUFFIXES and p.stem.lower() not in NOT_BOOK_STEMS
    )


def build_dataset(
    *,
    books_dir: Path | str,
    out_dir: Path | str,
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    test_fraction: float = 0.3,
    seed: int = 0,
    max_answer_chars: int | None = DEFAULT_MAX_ANSWER_CHARS,
) -> dict[str, Any]:
    """Read every book in `books_dir`, build its pairs, split by book, write train.jsonl, test.jsonl
    and split.json to `out_dir`. Returns the counts:
    {"train": n, "test": n, "skipped": n, "trimmed": n, "books": {id: {...}}, "notes": [...]}.

    A book that cannot be read is reported under its id with its error, not fatal; no pairs at all
    is an ApplicationError (an empty dataset would only fail later, on a GPU)."""
    out = Path(out_dir)
    files = find_books(books_dir)
    if not files:
        raise ApplicationError(f"No books ({', '.join(BOOK_SUFFIXES)}) in {books_dir}.")

    books: dict[str, dict[str, Any]] = {}
    pairs: list[Pair] = []
    skipped = trimmed = 0
    for path in files:
        book_id = path.stem if path.stem not in books else path.name
        try:
            meta, chapters = load_book_file(path)
        except ApplicationError as exc:
            books[book_id] = {"file": path.name, "error": exc.message, "chapters": 0, "pairs": 0}
            continue
        result = book_pairs(
            book_id=book_id,
            meta=meta,
            chapters=chapters,
            count_tokens=count_tokens,
            budget_tokens=budget_tokens,
            max_answer_chars=max_answer_chars,
        )
        pairs += result.pairs
        skipped += result.skipped
        trimmed += result.trimmed
        books[book_id] = {
            "file": path.name,
            "title": meta.title,
            "chapters": len(chapters),
            "pairs": len(result.pairs),
            "skipped": result.skipped,
            "trimmed": result.trimmed,
            "notes": result.notes,
        }
    if not pairs:
        reasons = "; ".join(
            f"{b}: {info.get('error') or ' '.join(info.get('notes', [])) or 'no pairs'}"
            for b, info in books.items()
        )
        raise ApplicationError(
            f"No training pairs could be built from {books_dir} ({reasons}).", {"books": books}
        )

    with_pairs = sorted({p.book for p in pairs})
    train_books, test_books = split_books(with_pairs, test_fraction=test_fraction, seed=seed)
    notes: list[str] = []
    if len(with_pairs) == 1 and test_fraction > 0:
        notes.append(
            f"Only one book has pairs ({with_pairs[0]}): all of it is train and test.jsonl is empty; "
            "add books to have a held-out test split."
        )
    in_train = set(train_books)
    train = [p for p in pairs if p.book in in_train]
    test = [p for p in pairs if p.book not in in_train]
    for book_id, info in books.items():
        if info.get("pairs"):
            info["split"] = "train" if book_id in in_train else "test"

    write_jsonl(train, out / "train.jsonl")
    write_jsonl(test, out / "test.jsonl")
    split = {
        "seed": seed,
        "test_fraction": test_fraction,
        "budget_tokens": budget_tokens,
        "max_answer_chars": max_answer_chars,
        "train": train_books,
        "test": test_books,
        "notes": notes,
    }
    (out / "split.json").write_text(json.dumps(split, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {
        "train": len(train),
        "test": len(test),
        "skipped": skipped,
        "trimmed": trimmed,
        "books": books,
        "notes": notes,
    }
