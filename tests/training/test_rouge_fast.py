"""The fast ROUGE of training.rewards gives rouge-score's numbers (RougeScorer(use_stemmer=True)).

writer.quality's `rouge_tokens` (word-by-word, cached stemming) against rouge-score's DefaultTokenizer,
the bit-parallel `lcs_length` against a plain dynamic-programming table, and rouge1/rouge2/rougeL
F-measures against RougeScorer.score(reference, candidate), on arbitrary and adversarial text.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer, tokenizers

from training import rewards
from training.rewards import overlap
from writer import quality

TOL = 1e-12

prop = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

_SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=True)

# A small vocabulary (many matches, repeats, stems shared by different words), with case, digits,
# apostrophes, hyphens, non-ASCII letters (final sigma, dotted I, Kelvin sign, ß, ligatures) and
# punctuation-only words.
VOCAB = [
    "the",
    "The",
    "THE",
    "a",
    "lamp",
    "lamps",
    "Lamp's",
    "running",
    "runs",
    "ran",
    "runner",
    "connection",
    "connected",
    "connects",
    "generously",
    "happiness",
    "happy",
    "sea",
    "seas",
    "sea,",
    "ninety-one",
    "91",
    "1984",
    "x2",
    "don't",
    "it's",
    "O'Neil",
    "rock-and-roll",
    "café",
    "naïve",
    "İstanbul",
    "ΣΊΣΥΦΟΣ",
    "ὈΔΥΣΣΕΎΣ",
    "straße",
    "\u212aelvin",
    "ﬁnance",
    "Ǆemal",
    "東京",
    "...",
    "—",
    "!!",
    "'",
    '"quoted"',
    "(a)",
    "e.g.",
    "u.s.a",
    "relational",
    "conditional",
    "rational",
    "valency",
    "hesitanci",
    "digitizer",
    "conformabli",
    "radicalli",
    "differentli",
    "vileli",
    "analogousli",
]
SEPARATORS = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\x0b", "\x1c", " \n\t "]


@st.composite
def vocab_texts(draw, max_words: int = 40) -> str:
    words = draw(st.lists(st.sampled_from(VOCAB), max_size=max_words))
    out = [draw(st.sampled_from(["", " ", "\n", "\t"]))]
    for word in words:
        out.append(word)
        out.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(out)


# Arbitrary unicode text, text made of the characters that matter, and vocabulary text.
texts = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.sampled_from(list("aAbBzZ09 \t\n'-.,!?éΣσςİK\u00a0\u2028ßﬁ")), max_size=200),
    vocab_texts(),
)
long_texts = vocab_texts(max_words=400)


def lcs_dp(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def library(candidate: str, reference: str) -> dict[str, float]:
    scores = _SCORER.score(reference, candidate)  # (target, prediction)
    return {name: scores[name].fmeasure for name in ("rouge1", "rouge2", "rougeL")}


def assert_same(candidate: str, reference: str) -> None:
    expected = library(candidate, reference)
    got = overlap._rouge_all.__wrapped__(candidate, reference)
    assert set(got) == {"rouge1", "rouge2", "rougeL"}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=TOL, rel=0), name
        assert isinstance(got[name], float)
    if candidate.strip() and reference.strip():
        assert overlap._rouge_scores(candidate, reference) == got


# --- Tokens ----------------------------------------------------------------------------------


@prop
@given(texts)
@example("")
@example(" \t\n ")
@example("!!! ... ---")
@example("ΣΑΣ σας ΟΔΥΣΣΕΥΣ")  # final sigma depends on the neighbours when lowercasing
@example("İstanbul\u212aelvin straße ﬁnance")
@example("Don't stop--running, it's 1984!\nThe lamps' light.")
def test_word_by_word_tokens_equal_the_library_tokenizer(text):
    assert quality.rouge_tokens(text) == _TOKENIZER.tokenize(text)


@prop
@given(long_texts)
def test_word_by_word_tokens_of_long_texts(text):
    assert quality.rouge_tokens(text) == _TOKENIZER.tokenize(text)


def test_word_tokens_are_cached_and_reset():
    rewards.reset_caches()
    quality.rouge_tokens("running running running lamps")
    info = quality._rouge_word_tokens.cache_info()
    assert info.misses == 2 and info.hits == 2
    rewards.reset_caches()
    assert quality._rouge_word_tokens.cache_info().currsize == 0
    assert quality._rouge_tokenizer.cache_info().currsize == 0


# --- LCS -------------------------------------------------------------------------------------

tokens = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=80)
few_tokens = st.lists(st.sampled_from(["a", "b"]), max_size=300)
many_tokens = st.lists(st.sampled_from([str(i) for i in range(40)]), max_size=300)


@prop
@given(tokens, tokens)
@example([], [])
@example(["a"], [])
@example([], ["a"])
@example(["a", "b", "c"], ["a", "b", "c"])
@example(["a", "b", "c"], ["c", "b", "a"])
@example(["a"] * 70, ["a"] * 65)  # more than one 64-bit machine word
def test_lcs_length_equals_dynamic_programming(a, b):
    assert quality.lcs_length(a, b) == lcs_dp(a, b) == quality.lcs_length(b, a)


@prop
@given(st.one_of(few_tokens, many_tokens), st.one_of(few_tokens, many_tokens))
def test_lcs_length_of_long_sequences(a, b):
    assert quality.lcs_length(a, b) == lcs_dp(a, b)


def test_lcs_length_against_rouge_score_table():
    a = _TOKENIZER.tokenize("the cat sat on the mat and the dog sat on the log " * 10)
    b = _TOKENIZER.tokenize("a dog and a cat sat by the mat on a log " * 12)
    assert quality.lcs_length(a, b) == rouge_scorer._lcs_table(a, b)[-1][-1]


# --- Scores ----------------------------------------------------------------------------------


@prop
@given(texts, texts)
@example("", "")
@example("", "the lamp")
@example("the lamp", "")
@example("   \n\t", "the lamp")
@example("!!! ...", "the lamp")  # not blank, but no tokens
@example("the lamp", "--- ...")
@example("lamp", "lamp")
@example("the the the the", "the the")
@example("Running lamps ran", "runs the LAMP, running")
def test_scores_equal_rouge_score(candidate, reference):
    assert_same(candidate, reference)


@prop
@given(long_texts, long_texts)
def test_scores_of_long_texts_equal_rouge_score(candidate, reference):
    assert_same(candidate, reference)


@prop
@given(vocab_texts(max_words=200), vocab_texts(max_words=30), st.booleans())
def test_scores_of_a_candidate_inside_its_reference(text, extra, candidate_first):
    # Many long matching runs: the reference contains the candidate.
    reference = text + " " + extra if candidate_first else extra + " " + text
    assert_same(text, reference)
    assert_same(reference, text)


def test_reward_functions_give_the_library_numbers():
    words = "the lamp room smelled of brass polish and old rain while running lamps ran".split()
    reference = " ".join(words[(i * 7) % len(words)] for i in range(600))
    candidates = [" ".join(words[(i * k) % len(words)] for i in range(90)) for k in (1, 3, 5)]
    overlap._rouge_all.cache_clear()
    got = {
        name: getattr(rewards, name)(candidates, answer=[reference] * 3)
        for name in ("rouge1", "rouge2", "rougeL")
    }
    for i, candidate in enumerate(candidates):
        expected = library(candidate, rewards.reference_for(candidate, reference))
        for name in ("rouge1", "rouge2", "rougeL"):
            assert got[name][i] == pytest.approx(expected[name], abs=TOL, rel=0)
    assert rewards.rougeL(candidates[:1], answer=[None]) == [None]
