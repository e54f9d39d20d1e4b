"""Reward functions on hand-made cases with known answers, the registry, and `manage.py score`."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mesu_web.errors import ApplicationError
from training import rewards
from training.rewards import (
    DEFAULT_WEIGHTS,
    MODEL_REWARDS,
    REWARDS,
    brand_subtlety,
    format_exact,
    format_partial,
    get_reward_funcs,
    meteor,
    meteor_score,
    reference_for,
    score_all,
    solution_text,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

CHAPTER = (
    "Wren climbed the ninety-one steps with the letter in her pocket. The lamp room smelled of brass "
    "polish and old rain. Below her the sea went from ink to pewter, and somewhere past the rocks a "
    "fishing boat blinked its green light twice, as if it knew something she did not."
)
OTHER = (
    "Quantum chromodynamics predicts asymptotic freedom; gluon exchange weakens at high momentum "
    "transfer, so hadronic jets emerge from proton collisions at accelerator energies."
)


def answer(reasoning: str, text: str) -> str:
    return f"<start_working_out>{reasoning}<end_working_out>\n<SOLUTION>{text}</SOLUTION>"


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


GOOD = answer("Wren must decide about the letter.", CHAPTER)


# --- Format ----------------------------------------------------------------------------------


def test_format_exact_uses_the_seed_regex():
    no_solution_tags = f"<start_working_out>plan<end_working_out>\n{CHAPTER}"
    prefilled = f"plan<end_working_out>\n<SOLUTION>{CHAPTER}</SOLUTION>"  # the prompt held the opening tag
    assert format_exact([GOOD, no_solution_tags, CHAPTER, "", prefilled]) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert format_exact([chat(GOOD), chat(CHAPTER)]) == [1.0, 0.0]


def test_format_partial_gives_credit_per_tag_and_penalises_duplicates():
    unclosed = f"<start_working_out>plan<end_working_out><SOLUTION>{CHAPTER}"
    doubled = GOOD + "\n<SOLUTION>again</SOLUTION><SOLUTION>and again</SOLUTION>"
    scores = format_partial([GOOD, unclosed, CHAPTER, doubled])
    assert scores[0] == 1.0
    assert scores[1] == 0.75  # malformed: between the empty and the exact answer
    assert format_exact([unclosed]) == [0.0]
    assert scores[2] == 0.0
    assert scores[3] == 0.0 and scores[3] < scores[1]  # two tags once, two repeated: +0.5 - 0.5
    assert format_partial([chat(GOOD)]) == [1.0]


# --- What is scored: the solution only -------------------------------------------------------


def test_rewards_score_the_solution_not_the_reasoning():
    in_reasoning_only = answer(CHAPTER, OTHER)
    assert rewards.bleu([GOOD, in_reasoning_only], answer=[CHAPTER, CHAPTER]) == [
        pytest.approx(1.0),
        pytest.approx(0.0, abs=0.02),
    ]
    # A malformed answer is scored on what parse_output salvages: here, the text after the reasoning.
    salvaged = f"<start_working_out>plan<end_working_out>\n{CHAPTER}"
    assert solution_text(salvaged) == CHAPTER
    assert rewards.rougeL([salvaged], answer=[CHAPTER]) == [pytest.approx(1.0)]


@pytest.mark.parametrize("name", ["bleu", "rouge1", "rouge2", "rougeL", "meteor"])
def test_word_overlap_rewards_identical_disjoint_and_chat_lists(name):
    func = REWARDS[name]
    disjoint = answer("plan", "Zebras juggle violet umbrellas beneath humming neon viaducts tonight.")
    scores = func([GOOD, disjoint, chat(GOOD), ""], answer=[CHAPTER] * 4)
    assert scores[0] == pytest.approx(1.0, abs=0.01)
    assert scores[1] == pytest.approx(0.0, abs=0.05)
    assert scores[2] == scores[0]  # a chat-list completion scores like its string
    assert scores[3] == 0.0  # an empty answer
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_partial_overlap_is_between():
    half = answer("plan", CHAPTER.split(". ")[0] + ". The harbour was empty.")
    for name in ("bleu", "rouge1", "rougeL", "meteor"):
        score = REWARDS[name]([half], answer=[CHAPTER])[0]
        assert 0.05 < score < 0.95, name


def test_reference_is_cut_to_the_candidate_length():
    reference = " ".join(f"w{i}" for i in range(100))
    assert reference_for("a b c", reference) == "w0 w1 w2 w3 w4 w5"  # 2 x 3 words
    assert reference_for(" ".join(["x"] * 80), reference) == reference
    # A capped completion that matches the opening of the real chapter scores as such.
    opening = " ".join(CHAPTER.split()[:12])
    assert rewards.rouge1([answer("p", opening)], answer=[CHAPTER])[0] > 0.6


def test_reference_rewards_need_an_answer_and_skip_rows_without_one():
    with pytest.raises(ApplicationError, match="answer"):
        rewards.bleu([GOOD])
    assert rewards.bleu([GOOD, GOOD], answer=[CHAPTER, None]) == [pytest.approx(1.0), None]
    with pytest.raises(ApplicationError, match="3 values for 2"):
        rewards.bleu([GOOD, GOOD], answer=[CHAPTER] * 3)


# --- METEOR and WordNet ----------------------------------------------------------------------


def test_meteor_says_whether_wordnet_was_used():
    logged: list[tuple[str, float]] = []
    meteor([GOOD], answer=[CHAPTER], log_metric=lambda name, value: logged.append((name, value)))
    assert meteor.wordnet_available is rewards.wordnet_available()
    assert logged == [("meteor/wordnet", 1.0 if meteor.wordnet_available else 0.0)]
    if not meteor.wordnet_available:
        pytest.skip("WordNet is not installed: run scripts/setup_wordnet.sh (the fallback is tested below)")
    # Synonyms count only with WordNet: "automobile" matches "car", "large" matches "big" (both
    # words change under the Porter stemmer, which nltk's own synonym stage trips on).
    synonyms = meteor(
        [answer("p", "the old automobile stopped"), answer("p", "a large dog barked")],
        answer=["the old car stopped", "a big dog barked"],
    )
    unrelated = meteor(
        [answer("p", "the old banana stopped"), answer("p", "a purple dog barked")],
        answer=["the old car stopped", "a big dog barked"],
    )
    assert synonyms[0] > unrelated[0] and synonyms[1] > unrelated[1]
    assert synonyms[0] == pytest.approx(
        meteor([answer("p", "the old car stopped")], answer=["the old car stopped"])[0]
    )


def test_meteor_without_wordnet_falls_back_and_says_so(monkeypatch):
    monkeypatch.setattr(meteor_score, "_wordnet", lambda: None)
    logged: list[tuple[str, float]] = []
    scores = meteor(
        [GOOD, answer("p", "the old automobile stopped")],
        answer=[CHAPTER, "the old car stopped"],
        log_metric=lambda name, value: logged.append((name, value)),
    )
    assert meteor.wordnet_available is False
    assert logged == [("meteor/wordnet", 0.0)]
    assert scores[0] == pytest.approx(1.0, abs=0.01)  # exact matches still count
    assert scores[1] < 0.8


# --- Brand subtlety --------------------------------------------------------------------------


def brand(text: str, reasoning: str = "Place the board in passing.") -> str:
    return answer(reasoning, text)


@pytest.mark.parametrize(
    ("text", "cap", "expected"),
    [
        ("Maya waxed her Tidewave board while the gulls argued overhead.", 1, 1.0),
        ("Maya waxed her Tidewave. Later, the Tidewave's fin caught on the rocks.", 1, 0.5),  # over the cap
        ("Maya waxed her Tidewave. Later, the Tidewave's fin caught on the rocks.", 2, 1.0),
        ("Maya grabbed a Tidewave board, buy now at the harbour shop!", 1, 0.0),  # call to action
        ("Maya's new Tidewave cost only $499 at the pier.", 1, 0.0),  # a price
        ("The Tidewave board, available at every surf shop, gleamed.", 1, 0.0),
        ("Maya waxed her board while the gulls argued overhead.", 1, 0.0),  # not named
        ("Maya waxed her Tidewav board while the gulls argued.", 1, 1.0),  # a typo still names it
    ],
)
def test_brand_subtlety(text, cap, expected):
    assert brand_subtlety([brand(text)], brand_terms=[["Tidewave"]], brand_cap=[cap]) == [
        pytest.approx(expected)
    ]


def test_brand_named_only_in_the_reasoning_scores_zero():
    completion = brand("Maya paddled out alone.", reasoning="Mention the Tidewave board somewhere.")
    assert brand_subtlety([completion], brand_terms=[["Tidewave"]], brand_cap=[1]) == [0.0]


def test_brand_slogan_verbatim_is_an_advert_unless_someone_says_it():
    slogan = "Ride the tide"
    dropped = brand("Maya stood up on the board. Ride the tide. The wave broke early.")
    said = brand("Maya stood up on the board. 'Ride the tide,' her brother shouted, laughing.")
    sign = brand('Above the hut a faded sign read "Ride the tide" in peeling blue paint.')
    kwargs = {"brand_terms": [[slogan]] * 3, "brand_cap": [1] * 3, "brand_slogans": [[slogan]] * 3}
    assert brand_subtlety([dropped, said, sign], **kwargs) == [0.0, 1.0, 1.0]

    # The product named cleanly plus the slogan dropped in as narration: half the placements are an
    # advert, and two placements are over a cap of one.
    both = brand("Maya waxed her Tidewave board. Ride the tide. The wave broke early.")
    assert brand_subtlety([both], brand_terms=[["Tidewave"]], brand_cap=[1], brand_slogans=[[slogan]]) == [
        0.25
    ]


def test_brand_subtlety_is_not_applicable_without_a_brief():
    named = brand("Maya waxed her Tidewave board.")
    assert brand_subtlety([named, named]) == [None, None]
    assert brand_subtlety([named, chat(named)], brand_terms=[None, ["Tidewave"]], brand_cap=[1, 1]) == [
        None,
        1.0,
    ]


# --- Registry --------------------------------------------------------------------------------


def test_registry_names_and_weights():
    assert set(DEFAULT_WEIGHTS) == set(REWARDS)
    assert MODEL_REWARDS <= set(REWARDS)
    for name, func in REWARDS.items():
        assert func.__name__ == name  # TRL logs each reward under its function's name
    assert get_reward_funcs(["bleu", "ROUGEL", "bleu"]) == [rewards.bleu, rewards.rougeL]
    assert get_reward_funcs("format_exact, meteor") == [format_exact, meteor]


def test_unknown_reward_name_suggests_the_closest():
    with pytest.raises(ApplicationError) as exc:
        get_reward_funcs(["format_exact", "blue"])
    assert exc.value.message.startswith("Unknown reward 'blue'; did you mean 'bleu'? Valid: format_exact,")
    assert exc.value.extra["suggestions"][0] == "bleu"
    with pytest.raises(ApplicationError, match="at least one"):
        get_reward_funcs([])


def test_score_all_of_the_word_level_rewards():
    scores = score_all(GOOD, CHAPTER, names=["format_exact", "bleu", "rougeL", "brand_subtlety"])
    assert scores == {
        "format_exact": 1.0,
        "bleu": pytest.approx(1.0),
        "rougeL": pytest.approx(1.0),
        "brand_subtlety": None,
    }
    assert score_all(GOOD, CHAPTER, names="brand_subtlety", brand_terms=["Wren"], brand_cap=1) == {
        "brand_subtlety": 1.0
    }


def test_score_command(tmp_path):
    candidate, reference = tmp_path / "candidate.txt", tmp_path / "reference.txt"
    candidate.write_text(GOOD, encoding="utf-8")
    reference.write_text(CHAPTER, encoding="utf-8")
    out = io.StringIO()
    call_command(
        "score", "--candidate", str(candidate), "--reference", str(reference),
        "--rewards", "format_exact,format_partial,bleu,rouge1,rouge2,rougeL,meteor", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    scores = json.loads(out.getvalue())
    assert list(scores) == ["format_exact", "format_partial", "bleu", "rouge1", "rouge2", "rougeL", "meteor"]
    assert all(v == pytest.approx(1.0, abs=0.01) for v in scores.values())

    with pytest.raises(CommandError, match="did you mean 'bleu'"):
        call_command(
            "score", "--candidate", str(candidate), "--reference", str(reference), "--rewards", "blue"
        )
    with pytest.raises(CommandError, match="No such candidate"):
        call_command("score", "--candidate", str(tmp_path / "nope.txt"), "--reference", str(reference))


# --- Model-based rewards (load MiniLM or SmolLM2) --------------------------------------------


LIGHTHOUSE_OPENING = " ".join((SAMPLES / "the_lighthouse_keepers_daughter.md").read_text().split()[30:230])
NEON_OPENING = " ".join((SAMPLES / "neon_rain.txt").read_text().split()[30:230])
# Made-up words, none repeated (a repeated phrase gets predictable, i.e. low perplexity, fast).
WORD_SALAD = " ".join(
    "".join(random.Random(i).choice("bcdfghjklmnpqrstvwxz") for _ in range(3 + i % 5)) for i in range(200)
)


@pytest.mark.slow
def test_bertscore():
    scores = rewards.bertscore(
        [answer("p", LIGHTHOUSE_OPENING), chat(answer("p", LIGHTHOUSE_OPENING)), answer("p", OTHER), answer("p", WORD_SALAD), ""],
        answer=[LIGHTHOUSE_OPENING, LIGHTHOUSE_OPENING, CHAPTER, LIGHTHOUSE_OPENING, CHAPTER],
    )  # fmt: skip
    assert scores[0] == pytest.approx(1.0, abs=1e-3)
    assert scores[1] == scores[0]
    assert scores[2] < 0.35  # an unrelated sentence
    assert scores[3] < 0.35  # word salad
    assert scores[4] == 0.0


@pytest.mark.slow
def test_embedding_cosine():
    scores = rewards.embedding_cosine(
        [answer("p", LIGHTHOUSE_OPENING), chat(answer("p", LIGHTHOUSE_OPENING)), answer("p", OTHER), answer("p", NEON_OPENING), ""],
        answer=[LIGHTHOUSE_OPENING, LIGHTHOUSE_OPENING, CHAPTER, LIGHTHOUSE_OPENING, CHAPTER],
    )  # fmt: skip
    assert scores[0] == pytest.approx(1.0, abs=1e-3)
    assert scores[1] == pytest.approx(scores[0])
    assert scores[2] < 0.2  # physics against a seaside chapter
    assert scores[3] < scores[0]  # another story: related genre, different content
    assert scores[4] == 0.0


@pytest.mark.slow
def test_perplexity():
    loop = " ".join(["the sea the sea the sea"] * 40)
    scores = rewards.perplexity(
        [answer("p", LIGHTHOUSE_OPENING), chat(answer("p", LIGHTHOUSE_OPENING)), answer("p", WORD_SALAD), answer("p", loop), ""],
        answer=[LIGHTHOUSE_OPENING] * 5,
    )  # fmt: skip
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(1.0)
    assert scores[2] < 0.1  # word salad: far less predictable than the real chapter
    assert scores[3] < 0.1  # a loop: far more predictable, which a plain low-perplexity reward would pay
    assert scores[4] == 0.0
    # Without a reference: 1 / (1 + ln ppl), higher for the fluent text.
    plain = rewards.perplexity([answer("p", LIGHTHOUSE_OPENING), answer("p", WORD_SALAD)])
    assert 0.0 < plain[1] < plain[0] < 1.0


@pytest.mark.slow
def test_score_command_prints_every_reward(tmp_path):
    candidate, reference = tmp_path / "candidate.md", tmp_path / "reference.md"
    candidate.write_text(answer("p", LIGHTHOUSE_OPENING), encoding="utf-8")
    reference.write_text(LIGHTHOUSE_OPENING, encoding="utf-8")
    out = io.StringIO()
    call_command(
        "score",
        "--candidate",
        str(candidate),
        "--reference",
        str(reference),
        stdout=out,
        stderr=io.StringIO(),
    )
    scores = json.loads(out.getvalue())
    assert list(scores) == list(REWARDS)
    assert scores["brand_subtlety"] is None  # no brand brief given
    assert 0.0 <= scores["vrcli"] < 0.1  # a reasoning of "p" tells nothing about the chapter
    for name, value in scores.items():
        if name not in ("brand_subtlety", "vrcli"):
            assert value == pytest.approx(1.0, abs=0.02), name
