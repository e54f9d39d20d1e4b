"""The length_room reward (issue 15): a chapter that closes with room to spare before the served cap."""

from __future__ import annotations

import pytest

from mesu_web.errors import ApplicationError
from training import rewards
from training.rewards.settings import RewardSettings


def answer(words: int, *, closed: bool = True) -> str:
    chapter = " ".join(["rain"] * words)
    end = "</SOLUTION>" if closed else ""
    return f"<start_working_out>A plan.<end_working_out><SOLUTION>{chapter}{end}"


@pytest.fixture
def lengths():
    rewards.configure(length_target_words=300, length_zero_words=420)
    yield
    rewards.reset_caches()
    rewards.configure(**{f: getattr(RewardSettings.from_env(), f) for f in ("length_target_words", "length_zero_words")})


def test_full_credit_within_the_target_then_a_straight_fall_to_zero(lengths):
    scores = rewards.length_room([answer(120), answer(300), answer(360), answer(420), answer(600)])
    assert scores == [1.0, 1.0, pytest.approx(0.5), 0.0, 0.0]


def test_a_chapter_that_never_closes_scores_zero_however_short(lengths):
    assert rewards.length_room([answer(50, closed=False), "", "no tags at all"]) == [0.0, 0.0, 0.0]


def test_a_completion_without_its_prefilled_opening_tag_is_read_as_the_writer_reads_it(lengths):
    # The reasoning's opening tag is part of the prompt (the prefill): the completion starts after it.
    completion = answer(100).removeprefix("<start_working_out>")
    assert rewards.length_room([completion]) == [1.0]
    assert rewards.length_room([[{"role": "assistant", "content": completion}]]) == [1.0]


def test_it_is_a_default_reward_ranked_within_a_group(lengths):
    assert rewards.DEFAULT_WEIGHTS["length_room"] > 0
    assert rewards.get_reward_funcs("format_exact,length_room")[1] is rewards.length_room
    short, long = rewards.length_room([answer(250), answer(400)])
    assert short > long > 0


def test_bad_bounds_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="above length_target_words"):
        RewardSettings(nltk_data=".", perplexity_model_path=".", length_target_words=300, length_zero_words=300)
    monkeypatch.setenv("REWARD_LENGTH_TARGET_WORDS", "three hundred")
    with pytest.raises(ApplicationError, match="REWARD_LENGTH_TARGET_WORDS must be a whole number"):
        RewardSettings.from_env()
