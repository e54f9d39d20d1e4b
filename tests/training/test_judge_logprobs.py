"""The pairwise judge's logprobs mode: the preference maths on hand-made numbers, a position-biased judge
that still prefers the target slightly (a win, where letters call it a tie), orders without a verdict,
and the whole run on the real SmolLM2 in process."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mesu_web.errors import ApplicationError
from tests.training.test_judge import CLOSE, FAR, pair
from training.judge import (
    PREFERENCE_EPS,
    favoured_letter,
    judge_pairs,
    letter_probabilities,
    pair_preference,
    preference_outcome,
    summarize,
    words_count_tokens,
)
from writer.engines.base import ChoiceLogprobs, Completion, GenerationResult
from writer.engines.local import LocalEngine, LocalSettings

TARGET = "Wren climbed the ninety-one steps, the letter in her pocket."
BASELINE = "The quarterly report showed revenue up four percent across the northern region."

# --- The maths -------------------------------------------------------------------------------


def test_letter_probabilities_normalise_over_the_two_letters():
    p_a, p_b = letter_probabilities({"A": math.log(0.3), "B": math.log(0.1)})
    assert p_a == pytest.approx(0.75) and p_b == pytest.approx(0.25)
    # Only the difference of the log-probabilities matters, even far below any float's exp.
    p_a, p_b = letter_probabilities({"A": -1000.0, "B": -1000.0 - math.log(3)})
    assert p_a == pytest.approx(0.75) and p_b == pytest.approx(0.25)
    assert letter_probabilities({"A": 0.0, "B": -math.inf}) == (1.0, 0.0)
    assert letter_probabilities({"A": -math.inf, "B": -math.inf}) is None
    assert letter_probabilities({"A": math.nan, "B": -1.0}) is None


def test_the_preference_averages_the_targets_probability_over_both_orders():
    # The target is A in the first order (its P(A) counts) and B in the second (its P(B) counts).
    assert pair_preference((0.8, 0.2), (0.4, 0.6)) == pytest.approx(0.7)
    assert pair_preference((0.2, 0.8), (0.6, 0.4)) == pytest.approx(0.3)
    assert pair_preference(None, (0.5, 0.5)) is None and pair_preference((0.5, 0.5), None) is None


def test_the_outcome_of_a_preference():
    assert preference_outcome(0.51) == "win"
    assert preference_outcome(0.49) == "loss"
    assert preference_outcome(0.5) == "tie"
    assert preference_outcome(0.5 + PREFERENCE_EPS / 2) == "tie"
    assert preference_outcome(0.5 - PREFERENCE_EPS / 2) == "tie"
    assert preference_outcome(0.5 + 2 * PREFERENCE_EPS) == "win"
    assert preference_outcome(0.5 - 2 * PREFERENCE_EPS) == "loss"
    assert preference_outcome(None) == "no_verdict"
    assert preference_outcome(0.6, eps=0.2) == "tie"


def test_a_fixed_position_bias_cancels_and_a_slight_preference_shows():
    bias, lean = 0.35, 0.02  # P(A) = 0.5 + bias, plus lean when the target is A, minus lean when it is B
    first = (0.5 + bias + lean, 0.5 - bias - lean)  # target shown as A
    second = (0.5 + bias - lean, 0.5 - bias + lean)  # target shown as B
    assert favoured_letter(first) == favoured_letter(second) == "A"  # letters would call this a tie
    assert pair_preference(first, second) == pytest.approx(0.5 + lean)
    assert preference_outcome(pair_preference(first, second)) == "win"
    # Leaning the other way is a loss; no lean at all, whatever the bias, a tie.
    assert preference_outcome(pair_preference(second, first)) == "loss"
    no_lean = (0.5 + bias, 0.5 - bias)
    assert preference_outcome(pair_preference(no_lean, no_lean)) == "tie"


def test_favoured_letter():
    assert favoured_letter((0.6, 0.4)) == "A" and favoured_letter((0.4, 0.6)) == "B"
    assert favoured_letter((0.5, 0.5)) is None and favoured_letter(None) is None


def test_the_summary_reports_the_mean_preference_and_the_first_position_share():
    summary = summarize(["win", "loss", "tie", "no_verdict"], ["A", "A", "A", "B", "A", None, None, "B"],
                        [0.7, 0.3, 0.5, None])  # fmt: skip
    assert summary["mean_preference"] == 0.5  # over the three pairs with one
    assert summary["first_position_share"] == round(4 / 6, 4)
    assert summary["answers_no_verdict"] == 2 and summary["win_rate"] == 0.5
    assert summarize(["no_verdict"], [None, None], [None])["mean_preference"] is None
    assert "mean_preference" not in summarize(["win"], ["A", "B"])  # letters mode: as before


# --- A scripted judge through judge_pairs ----------------------------------------------------


class BiasedJudge:
    """A judge engine whose P(A) is 0.5 + bias, plus `lean` when the target's text is candidate A and
    minus `lean` when it is candidate B; the two letters hold `mass` of its first token. Its written
    answer (letters mode) is the likelier letter."""

    name = "biased"

    def __init__(self, bias: float, lean: float, mass: float = 0.6, absent: tuple[str, ...] = ()) -> None:
        self.bias, self.lean, self.mass, self.absent = bias, lean, mass, absent
        self.asked: list[str] = []

    def _p_a(self, messages) -> float:
        user = messages[-1]["content"]
        shown_a = user[user.index("candidate A") : user.index("candidate B")]
        self.asked.append("target" if TARGET in shown_a else "baseline")
        return 0.5 + self.bias + (self.lean if TARGET in shown_a else -self.lean)

    def choice_logprobs(self, messages, choices=("A", "B"), *, adapter=None) -> ChoiceLogprobs:
        p_a = self._p_a(messages)
        logprobs = {"A": math.log(self.mass * p_a), "B": math.log(self.mass * (1 - p_a))}
        return ChoiceLogprobs(logprobs=logprobs, model="biased-judge", absent=self.absent)

    def generate(self, messages, *, n, sampling, adapter=None, on_progress=None) -> GenerationResult:
        letter = "A" if self._p_a(messages) > 0.5 else "B"
        return GenerationResult(completions=[Completion(text=letter, tokens=1)], model="biased-judge")

    def count_tokens(self, text: str) -> int:
        return words_count_tokens(text)


def test_a_judge_biased_to_position_a_that_leans_to_the_target_wins_in_logprobs_mode():
    judge = BiasedJudge(bias=0.35, lean=0.02)
    pairs = [pair("lighthouse", 1), pair("harbour", 2)]
    result = judge_pairs(pairs, [TARGET, TARGET], [BASELINE, BASELINE], judge)
    assert judge.asked == ["target", "baseline"] * 2  # target first, then second, pair by pair
    assert result.mode == "logprobs" and result.model == "biased-judge"
    record = result.verdicts[0]
    assert record["target_first"]["p_a"] == pytest.approx(0.87)
    assert record["target_first"]["p_b"] == pytest.approx(0.13)
    assert record["target_second"]["p_a"] == pytest.approx(0.83)
    assert record["target_second"]["letter_mass"] == pytest.approx(0.6)
    assert record["target_first"]["logprob_a"] == pytest.approx(math.log(0.6 * 0.87))
    assert record["preference"] == pytest.approx(0.52) and record["outcome"] == "win"
    summary = result.summary
    assert (summary["wins"], summary["losses"], summary["ties"]) == (2, 0, 0)
    assert summary["win_rate"] == 1.0 and summary["mean_preference"] == 0.52
    assert summary["first_position_share"] == 1.0  # every order favoured A: the bias is still reported
    assert summary["mean_letter_mass"] == 0.6 and summary["letters_absent"] == 0

    # The same judge read by its written letters: A in both orders, every pair a tie.
    letters = judge_pairs(pairs, [TARGET, TARGET], [BASELINE, BASELINE], BiasedJudge(0.35, 0.02), mode="letters")
    assert letters.mode == "letters" and [v["outcome"] for v in letters.verdicts] == ["tie", "tie"]
    assert letters.verdicts[0]["target_first"] == {"answer": "A", "verdict": "A"}
    assert "mean_preference" not in letters.summary


def test_leaning_to_the_baseline_is_a_loss_and_no_lean_a_tie():
    pairs = [pair()]
    assert judge_pairs(pairs, [TARGET], [BASELINE], BiasedJudge(0.3, -0.01)).verdicts[0]["outcome"] == "loss"
    tie = judge_pairs(pairs, [TARGET], [BASELINE], BiasedJudge(0.3, 0.0))
    assert tie.verdicts[0]["outcome"] == "tie" and tie.verdicts[0]["preference"] == pytest.approx(0.5)


def test_an_order_where_the_engine_saw_neither_letter_has_no_verdict():
    result = judge_pairs([pair()], [TARGET], [BASELINE], BiasedJudge(0.3, 0.1, absent=("A", "B")))
    record = result.verdicts[0]
    assert record["outcome"] == "no_verdict" and record["preference"] is None
    assert record["target_first"]["p_a"] is None and record["target_first"]["absent"] == ["A", "B"]
    assert result.summary["no_verdict"] == 1 and result.summary["answers_no_verdict"] == 2
    assert result.summary["mean_preference"] is None and result.summary["letters_absent"] == 4
    # One letter unseen (given a floor by the engine) still decides.
    one = judge_pairs([pair()], [TARGET], [BASELINE], BiasedJudge(0.3, 0.1, absent=("B",)))
    assert one.verdicts[0]["outcome"] == "win" and one.summary["letters_absent"] == 2


def test_a_bad_mode_or_an_engine_that_cannot_score_is_a_clear_error():
    with pytest.raises(ApplicationError, match="Unknown judge mode 'votes'"):
        judge_pairs([pair()], [TARGET], [BASELINE], BiasedJudge(0.3, 0.1), mode="votes")

    class LettersOnly:
        name = "letters-only"
        generate = BiasedJudge.generate

    with pytest.raises(ApplicationError, match="use --mode letters"):
        judge_pairs([pair()], [TARGET], [BASELINE], LettersOnly())


# --- With the real SmolLM2 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> LocalEngine:
    return LocalEngine(LocalSettings(model_path=str(model_dir), model_name="smollm2", threads=1))


@pytest.mark.slow
def test_judge_pairs_in_logprobs_mode_with_the_real_model(engine):
    pairs = [pair("lighthouse", 1), pair("harbour", 2, answer="The harbour was empty when the ferry came in.")]
    result = judge_pairs(pairs, [CLOSE, FAR], [FAR, FAR], engine, chapter_tokens=60)
    assert result.mode == "logprobs" and result.model == "smollm2"
    for record in result.verdicts:
        for order in ("target_first", "target_second"):
            p_a, p_b = record[order]["p_a"], record[order]["p_b"]
            assert 0 < p_a < 1 and p_a + p_b == pytest.approx(1.0)
            assert math.isfinite(record[order]["logprob_a"]) and math.isfinite(record[order]["logprob_b"])
            assert 0 < record[order]["letter_mass"] <= 1 and record[order]["absent"] == []
        assert record["preference"] == pytest.approx(
            (record["target_first"]["p_a"] + record["target_second"]["p_b"]) / 2
        )
        assert record["outcome"] == preference_outcome(record["preference"])
    # Identical candidates make the same question in both orders: whatever the judge's position bias,
    # P(target) is P(A) once and P(B) = 1 - P(A) once, a preference of exactly 0.5: a tie.
    same = result.verdicts[1]
    assert same["target_first"]["p_a"] == pytest.approx(same["target_second"]["p_a"], abs=1e-6)
    assert same["preference"] == pytest.approx(0.5, abs=1e-6) and same["outcome"] == "tie"
    assert result.summary["mean_preference"] == round(
        (result.verdicts[0]["preference"] + same["preference"]) / 2, 4
    )
