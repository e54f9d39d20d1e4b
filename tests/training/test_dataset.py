"""Training pairs from the shipped sample books: counts, order, the shared prompt, the split by book."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from training.dataset import (
    JSONL_FIELDS,
    Pair,
    book_pairs,
    build_dataset,
    build_pairs,
    find_books,
    load_book_file,
    read_jsonl,
    split_books,
    split_by_book,
    write_jsonl,
)
from writer.prompting import BEGINNING_SHORTENED, SYSTEM_PROMPT, ChapterText, StoryMeta, build_prompt

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
LIGHTHOUSE = SAMPLES / "the_lighthouse_keepers_daughter.md"
NEON = SAMPLES / "neon_rain.txt"
BUDGET = 3552  # the writer's default: 4096 context - 512 new tokens - 32 for the chat template


@pytest.fixture(scope="module")
def count_tokens():
    """The writer's own tokenizer (SmolLM2's), without the model."""
    from training.management.commands.build_dataset import serving_token_counter

    return serving_token_counter()


def words(text: str) -> int:
    """A stand-in tokenizer for tests that only need a monotone count."""
    return len(text.split())


@pytest.mark.parametrize(("path", "chapters"), [(LIGHTHOUSE, 6), (NEON, 5)])
def test_pairs_of_a_sample_book(path, chapters, count_tokens):
    meta, chs = load_book_file(path)
    assert len(chs) == chapters

    pairs, skipped = build_pairs(
        book_id=path.stem, meta=meta, chapters=chs, count_tokens=count_tokens, budget_tokens=BUDGET
    )

    assert skipped == 0
    assert len(pairs) == chapters - 1  # 5 for the lighthouse, 4 for Neon Rain
    assert [p.k for p in pairs] == list(range(1, chapters))
    for p in pairs:
        assert p.book == path.stem
        assert p.answer == chs[p.k].text  # chapter k+1 (chapters are numbered from 1)
        # The one shared prompt builder, with the same budget: byte-identical messages.
        expected = build_prompt(
            meta=meta,
            chapters=chs[: p.k],
            count_tokens=count_tokens,
            budget_tokens=BUDGET,
            next_number=p.k + 1,
        )
        assert p.prompt == expected.messages
        system, user = p.prompt
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user"
        assert user["content"].startswith("## Chapter 0: About the story")
        assert user["content"].count("```text\n") == p.k  # chapters 1..k as markdown text blocks
        assert f"## Chapter {p.k}" in user["content"]
        assert f"## Chapter {p.k + 1}" not in user["content"]  # the answer never leaks into its prompt
        assert f"Write Chapter {p.k + 1} of" in user["content"]
        assert chs[p.k].text[:200] not in user["content"]


def test_chapter_zero_comes_from_the_front_matter(tmp_path):
    meta, _ = load_book_file(LIGHTHOUSE)
    assert meta.title == "The Lighthouse Keeper's Daughter"
    assert meta.summary.startswith("An original story for MeSu Studio's samples.")
    meta, _ = load_book_file(NEON)
    assert meta.title == "NEON RAIN"

    book = tmp_path / "the_glass_market.txt"
    book.write_text(
        "Title: The Glass Market\nAuthor: A. Writer\nDate: 2024-05-01\nVersion: 2\n\n"
        "Chapter 1\n\nOne.\n\nChapter 2\n\nTwo.\n",
        encoding="utf-8",
    )
    meta, chapters = load_book_file(book)
    assert (meta.title, meta.author_name) == ("The Glass Market", "A. Writer")
    assert "Date: 2024-05-01" in meta.summary and "Version: 2" in meta.summary
    assert [c.text for c in chapters] == ["One.", "Two."]

    bare = tmp_path / "salt_and_iron.md"
    bare.write_text("## Chapter 1\n\nOne.\n\n## Chapter 2\n\nTwo.\n", encoding="utf-8")
    assert load_book_file(bare)[0].title == "Salt And Iron"  # no front matter: the file's name


def test_a_folder_skips_readme_and_license_files(tmp_path):
    (tmp_path / "README.md").write_text("# About these books\n", encoding="utf-8")
    (tmp_path / "LICENSE.txt").write_text("Free to use.\n", encoding="utf-8")
    (tmp_path / "book.md").write_text("# Book\n\n## Chapter 1\n\nOne.\n\n## Chapter 2\n\nTwo.\n", encoding="utf-8")
    assert [p.name for p in find_books(tmp_path)] == ["book.md"]
    assert "README" not in [p.stem for p in find_books(SAMPLES)]


def test_a_book_with_one_chapter_gives_no_pairs_and_says_why(tmp_path):
    meta = StoryMeta(title="Short")
    result = book_pairs(
        book_id="short",
        meta=meta,
        chapters=[ChapterText(1, "", "Only.")],
        count_tokens=words,
        budget_tokens=500,
    )
    assert (result.pairs, result.skipped) == ([], 0)
    assert "1 chapter" in result.notes[0] and "at least 2" in result.notes[0]
    assert build_pairs(
        book_id="short",
        meta=meta,
        chapters=[ChapterText(1, "", "Only.")],
        count_tokens=words,
        budget_tokens=500,
    ) == ([], 0)

    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(NEON, books)
    (books / "one.md").write_text("# One\n\n## Chapter 1\n\nThe only chapter.\n", encoding="utf-8")
    result = build_dataset(
        books_dir=books, out_dir=tmp_path / "out", count_tokens=words, budget_tokens=BUDGET
    )
    assert result["books"]["one"]["pairs"] == 0
    assert "1 chapter" in result["books"]["one"]["notes"][0]
    # Only one book has pairs: all of it is train, and the result says so.
    assert (result["train"], result["test"]) == (4, 0)
    assert "Only one book" in result["notes"][0]


def test_a_5_mb_chapter_is_trimmed_in_prompts_and_skipped_as_an_answer():
    # Counted in words: the real tokenizer reads the 5 MB several times over (~25 s on this box)
    # and trims the same way (test_pairs_of_a_sample_book checks it matches build_prompt).
    count_tokens = words
    sentence = "Rain ran down the glass of stack number {i}, and Juno counted the drops again. "
    huge = "".join(sentence.format(i=i) for i in range(5 * 1024 * 1024 // len(sentence) + 1))
    assert len(huge) >= 5 * 1024 * 1024
    chapters = [
        ChapterText(1, "Static", "Juno ran. " * 50),
        ChapterText(2, "The Flood", huge),
        ChapterText(3, "After", "The water went down. " * 40),
    ]
    result = book_pairs(
        book_id="flood",
        meta=StoryMeta(title="Flood"),
        chapters=chapters,
        count_tokens=count_tokens,
        budget_tokens=BUDGET,
        max_answer_chars=100_000,
    )
    # k=1 would have the 5 MB chapter as its answer: skipped and counted. k=2 keeps the end of it.
    assert result.skipped == 1
    assert [p.k for p in result.pairs] == [2]
    assert result.trimmed == 1
    assert any(f"{len(huge):,} characters" in note for note in result.notes)
    user = result.pairs[0].prompt[1]["content"]
    assert BEGINNING_SHORTENED in user
    assert count_tokens(SYSTEM_PROMPT) + count_tokens(user) <= BUDGET


def test_metadata_over_the_budget_skips_every_pair_with_a_count():
    meta = StoryMeta(title="Huge", summary="word " * 2000)
    chapters = [ChapterText(n, "", f"Chapter {n} text.") for n in (1, 2, 3)]
    pairs, skipped = build_pairs(
        book_id="huge", meta=meta, chapters=chapters, count_tokens=words, budget_tokens=500
    )
    assert (pairs, skipped) == ([], 2)


def _pairs_of(books: list[str]) -> list[Pair]:
    return [Pair(prompt=[], answer=f"{b}-{k}", book=b, k=k) for b in books for k in (1, 2, 3)]


def test_split_is_by_book_seeded_and_reproducible():
    pairs = _pairs_of([f"book{i:02d}" for i in range(10)])
    train, test = split_by_book(pairs, test_fraction=0.3, seed=7)
    train_books, test_books = {p.book for p in train}, {p.book for p in test}
    assert not train_books & test_books
    assert len(test_books) == 3 and len(train_books) == 7  # 70/30 of the books
    assert len(train) + len(test) == len(pairs)
    # Order kept inside each side, and the same seed gives the same split whatever the input order.
    assert train == [p for p in pairs if p.book in train_books]
    assert split_by_book(list(reversed(pairs)), test_fraction=0.3, seed=7)[1] == list(reversed(test))
    assert split_books([p.book for p in pairs], seed=7) == (sorted(train_books), sorted(test_books))
    # Other seeds choose other books.
    assert len({tuple(split_books([p.book for p in pairs], seed=s)[1]) for s in range(10)}) > 1


def test_split_of_two_and_one_books(caplog):
    train, test = split_by_book(_pairs_of(["a", "b"]), test_fraction=0.3, seed=0)
    assert {p.book for p in train} | {p.book for p in test} == {"a", "b"}
    assert len({p.book for p in test}) == 1  # round(0.6) = 1: each side gets a book

    with caplog.at_level(logging.WARNING, logger="training.dataset"):
        train, test = split_by_book(_pairs_of(["solo"]), test_fraction=0.3, seed=0)
    assert (len(train), test) == (3, [])
    assert "Only one book" in caplog.text

    with pytest.raises(ApplicationError, match="test fraction"):
        split_books(["a", "b"], test_fraction=1.0)


def test_jsonl_round_trip_has_exactly_the_contract_fields(tmp_path):
    pairs = [
        Pair(
            prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "ü"}],
            answer="À",
            book="b",
            k=1,
        )
    ]
    path = tmp_path / "train.jsonl"
    assert write_jsonl(pairs, path) == 1
    row = json.loads(path.read_text(encoding="utf-8"))
    assert tuple(row) == JSONL_FIELDS
    assert read_jsonl(path) == pairs

    path.write_text(
        path.read_text(encoding="utf-8") + '{"prompt": "x", "answer": "a", "book": "b", "k": 2}\n'
    )
    with pytest.raises(ApplicationError, match="line 2"):
        read_jsonl(path)


def test_build_dataset_command_prints_counts_and_writes_the_split(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(LIGHTHOUSE, books)
    shutil.copy(NEON, books)
    out = tmp_path / "dataset"

    stdout = io.StringIO()
    call_command("build_dataset", "--books", str(books), "--out", str(out), stdout=stdout)
    result = json.loads(stdout.getvalue())

    assert result["train"] + result["test"] == 9  # 5 + 4
    assert result["skipped"] == 0
    assert set(result["books"]) == {LIGHTHOUSE.stem, NEON.stem}
    assert {info["pairs"] for info in result["books"].values()} == {5, 4}
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    assert (len(train), len(test)) == (result["train"], result["test"])
    assert train and test
    assert not {p.book for p in train} & {p.book for p in test}  # no book in both
    for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines():
        assert tuple(json.loads(line)) == JSONL_FIELDS
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert split["seed"] == 0 and split["test_fraction"] == 0.3
    assert sorted(split["train"] + split["test"]) == sorted(result["books"])
    assert {p.book for p in test} == set(split["test"])

    # Reproducible: the same seed writes the same files.
    again = tmp_path / "again"
    call_command("build_dataset", "--books", str(books), "--out", str(again), stdout=io.StringIO())
    for name in ("train.jsonl", "test.jsonl", "split.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_build_dataset_command_with_no_books(tmp_path):
    with pytest.raises(CommandError, match="No books"):
        call_command(
            "build_dataset", "--books", str(tmp_path), "--out", str(tmp_path / "out"), stdout=io.StringIO()
        )
