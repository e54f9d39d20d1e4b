"""brands/insertion.py: write first, then place — passages, the best one for an asset (real MiniLM),
the rewrite's checks, and that nothing outside the passage changes."""

from __future__ import annotations

import pytest

from brands.insertion import (
    MAX_PASSAGE_WORDS,
    MIN_PASSAGE_WORDS,
    Passage,
    best_passage,
    ends_in_prose,
    passages,
    place,
    ranked_passages,
    rewrite_messages,
    rewritten_passage,
)

DRAFT = (
    "Mara woke before the gulls. The lamp had burned all night and the room smelled of oil and salt.\n\n"
    "\"Up,\" her father said.\n\n"
    "They walked down to the cove where the swell came in long and clean, and the other kids were already "
    "waxing their boards on the sand, laughing at the cold.\n\n"
    "At noon the ledger came out again: the harbour fees, the debt to the bank in town, the numbers that "
    "never added up however many times her father ran his finger down the column."
)


def test_passages_cover_the_paragraphs_join_short_ones_and_index_the_draft():
    found = passages(DRAFT)
    assert [p.text for p in found] == [DRAFT[p.start : p.end] for p in found]
    assert len(found) == 3  # the one-line reply joins the paragraph after it
    assert found[1].text.startswith('"Up," her father said.') and "cove" in found[1].text
    assert all(p.words >= MIN_PASSAGE_WORDS for p in found)


def test_a_long_paragraph_is_cut_at_sentence_ends():
    sentence = "The tide turned and the boats came home one by one under a low grey sky. "
    draft = sentence * 30
    found = passages(draft)
    assert len(found) > 1 and all(p.words <= MAX_PASSAGE_WORDS for p in found)
    assert all(p.text.endswith("sky.") for p in found)
    assert "".join(draft[p.start : p.end] + " " for p in found).strip() == draft.strip()


def test_the_ugly_drafts():
    assert passages("") == [] and passages("\n\n  \n") == []
    one = passages("Just one short line.")
    assert len(one) == 1 and one[0].text == "Just one short line."
    with pytest.raises(ValueError, match="no passage"):
        best_passage([], "a surfboard", embed=lambda texts: [[1.0] for _ in texts])


@pytest.mark.slow
def test_the_surfboard_goes_where_the_surfing_is_with_real_minilm():
    from brands.embedder import get_embedder

    found = passages(DRAFT)
    index, score = best_passage(
        found, "product: Tidewave Glide, a soft-top surfboard for beginners", embed=get_embedder().embed
    )
    assert "boards" in found[index].text and score > 0.2
    bank, _ = best_passage(found, "service: Harbour Bank, loans and savings", embed=get_embedder().embed)
    assert "bank" in found[bank].text


def test_the_first_passage_is_chosen_only_when_it_is_alone():
    found = passages(DRAFT)
    first_wins = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    index, _ = best_passage(found, "x", embed=lambda texts: first_wins[: len(texts)])
    assert index != 0
    assert best_passage(found[:1], "x", embed=lambda texts: [[1.0]] * len(texts))[0] == 0


def test_a_passage_ending_in_a_list_comes_after_every_one_ending_in_prose():
    # The miss of 2026-12-07: a draft ending in one-word lines; SmolLM2 went on with the list at every try.
    draft = DRAFT + "\n\nThe words she wrote in the sand before the tide came in:\nSky.\nBlue Eagle.\nMarble.\nRubber."
    found = passages(draft)
    assert not ends_in_prose(found[-1].text) and ends_in_prose(found[1].text)
    list_wins = [[1.0, 0.0]] + [[0.0, 1.0]] * (len(found) - 1) + [[1.0, 0.0]]
    order = [i for i, _ in ranked_passages(found, "x", embed=lambda texts: list_wins[: len(texts)])]
    assert order[-1] == len(found) - 1  # nearest in meaning, yet tried last
    only_lists = [Passage(0, 20, "Sky.\nBlue Eagle.\nMarble.")]
    assert ranked_passages(only_lists, "x", embed=lambda texts: [[1.0]] * len(texts))[0][0] == 0  # still tried


def test_what_ends_in_prose():
    assert ends_in_prose("They walked down to the cove where the swell came in.")
    assert ends_in_prose('Short line.\n"Get the boards," her father said, smiling at them.')
    assert ends_in_prose("She said it twice: \"we are going out on the water.\"")
    assert not ends_in_prose("A long first line that is prose for sure.\nRubber.")
    assert not ends_in_prose("the swell came in long and clean and then it")  # no end mark
    assert not ends_in_prose("## Chapter Two") and not ends_in_prose("")


def test_place_replaces_only_the_passage_and_checks_the_rewrite():
    found = passages(DRAFT)
    passage = found[1]
    rewrite = passage.text.replace("waxing their boards", "waxing their Tidewave Glide boards")
    placed = place(DRAFT, passage, rewrite, terms=["Tidewave Glide"], cap=1)
    assert placed.text[: passage.start] == DRAFT[: passage.start]
    assert placed.text[passage.start + len(rewrite) :] == DRAFT[passage.end :]
    assert [placed.text[s:e] for s, e in placed.spans] == ["Tidewave Glide"]
    with pytest.raises(ValueError, match="does not name"):
        place(DRAFT, passage, passage.text, terms=["Tidewave Glide"], cap=1)
    with pytest.raises(ValueError, match="length"):
        place(DRAFT, passage, "Tidewave Glide.", terms=["Tidewave Glide"], cap=1)
    with pytest.raises(ValueError, match="no passage"):
        place(DRAFT, passage, "  ", terms=["Tidewave Glide"], cap=1)
    twice = rewrite.replace("laughing", "Tidewave Glide laughing")
    with pytest.raises(ValueError, match="cap is 1"):
        place(DRAFT, passage, twice, terms=["Tidewave Glide"], cap=1)


def test_the_rewrite_prompt_and_answer():
    passage = Passage(0, 9, "The cove.")
    messages = rewrite_messages(
        passage=passage, before="B" * 1000, after="A" * 1000, term="Tidewave Glide",
        asset_line="a soft-top surfboard", brand_line="Tone: warm.", hint="Put it in someone's hands.",
    )
    assert messages[0]["role"] == "system" and "<PASSAGE>The cove.</PASSAGE>" in messages[1]["content"]
    assert "'Tidewave Glide'" in messages[1]["content"] and "B" * 601 not in messages[1]["content"]
    assert rewritten_passage("Sure! <PASSAGE> new text </PASSAGE> hope it helps") == "new text"
    assert rewritten_passage("<PASSAGE>cut by the limit") == "cut by the limit"
    assert rewritten_passage("plain prose") == "plain prose"
