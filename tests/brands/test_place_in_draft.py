"""brands.matching.place_in_draft: write first, then place, on the demo brands with real MiniLM, and
with the real SmolLM2 writer as the rewriter."""

from __future__ import annotations

import pytest

from brands.demo import seed_brands
from brands.insertion import RewritePrompt, added_sentence
from brands.matching import OptionPlan, place_in_draft, place_in_drafts
from brands.models import BrandAsset
from writer.parsing import SENTENCE_STOPS

pytestmark = pytest.mark.slow

DRAFT = (
    "Mara woke before the gulls. The lamp had burned all night and the room smelled of oil and salt.\n\n"
    "They walked down to the cove where the swell came in long and clean, and the other kids were already "
    "waxing their boards on the sand, laughing at the cold.\n\n"
    "At noon the ledger came out again: the harbour fees, the debt to the bank in town, the numbers that "
    "never added up however many times her father ran his finger down the column."
)


@pytest.fixture
def glide(users) -> OptionPlan:
    seed_brands(users["mia"])
    asset = BrandAsset.objects.select_related("brand").get(name="Tidewave Glide")
    return OptionPlan(
        brand_id=asset.brand_id, asset_id=asset.pk, hint="Put it in a character's hands.", terms=tuple(asset.terms)
    )


@pytest.fixture
def passage_style(settings):
    settings.BRAND_PLACEMENT_STYLE = "passage"


@pytest.fixture
def sentence_style(settings):
    settings.BRAND_PLACEMENT_STYLE = "sentence"


def editor(insert: str):
    """A passage rewriter that does what a good writer would: the passage, with the board named once."""

    def rewrite(prompt: RewritePrompt) -> list[str]:
        passage = prompt.messages[1]["content"].split("<PASSAGE>", 1)[1].split("</PASSAGE>", 1)[0]
        return ["Sure!", f"<PASSAGE>{passage.replace('their boards', insert)}</PASSAGE>"]

    return rewrite


def novelist(*continuations: str):
    """A sentence writer: each candidate goes on from the prefilled answer (the chapter and the term)."""

    def rewrite(prompt: RewritePrompt) -> list[str]:
        return [prompt.prefill + c for c in continuations]

    return rewrite


def test_the_first_good_candidate_replaces_the_passage_nearest_the_asset(glide, passage_style):
    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=editor("their Tidewave Glide boards"))
    assert outcome.placed and outcome.draft == DRAFT
    start, end = outcome.passage
    assert "Tidewave Glide" in outcome.text[start:end] and "cove" in outcome.text[start:end]
    assert outcome.text[:start] == DRAFT[:start]  # nothing outside the passage changed
    assert outcome.text[end:] == DRAFT[DRAFT.index("\n\nAt noon") :]
    assert outcome.note.startswith("Placed Tidewave Glide: rewrote passage 2 of 3")
    # One passage changed by two words: the chapter stays close to its draft, by both measures.
    sim = outcome.similarity
    assert set(sim) == {"rouge_l", "bertscore"} and 0.9 <= sim["rouge_l"] < 1.0 and 0.8 <= sim["bertscore"] < 1.0


def test_a_sentence_goes_on_from_the_term_at_the_end_of_the_passage(glide, sentence_style):
    prompts: list[RewritePrompt] = []

    def writer(prompt: RewritePrompt) -> list[str]:
        prompts.append(prompt)
        return novelist(
            " leaned against the rail",  # never ends: no sentence
            " was there.",  # 4 words: a fragment
            " glowed blue in a bank of purple volcano llamas selling shares of crypto tokens.",
            " she had waxed that morning lay on the sand beside them, still cold from the water.",
        )(prompt)

    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=writer)
    (prompt,) = prompts
    cove = DRAFT.index("They walked")
    passage_end = DRAFT.index("\n\nAt noon")
    assert prompt.prefill.endswith(DRAFT[:passage_end][-200:] + " Tidewave Glide") and prompt.stop == ("\n",)
    assert prompt.stop_after == SENTENCE_STOPS and prompt.one_line  # one sentence, on the passage's line
    # A title's dot does not end the sentence.
    hale = prompt.prefill + " lay where Mr. Hale had left it. The tide"
    assert added_sentence(hale, prompt, "Tidewave Glide") == "Tidewave Glide lay where Mr. Hale had left it."
    assert added_sentence(prompt.prefill + " and Mr. ", prompt, "Tidewave Glide") == ""
    assert outcome.placed
    added = " Tidewave Glide she had waxed that morning lay on the sand beside them, still cold from the water."
    # The passage is kept as written, the sentence nearest to it in meaning (not the llamas) is added.
    assert outcome.text == DRAFT[:passage_end] + added + DRAFT[passage_end:]
    assert outcome.passage == (cove, passage_end + len(added))
    assert "added a sentence to passage 2 of 3" in outcome.note and "(2 of 4 candidates passed)" in outcome.note
    assert outcome.similarity["rouge_l"] > 0.9
    nothing = place_in_draft(draft=DRAFT, plan=glide, rewrite=novelist(" leaned against the rail", " was there."))
    assert not nothing.placed and nothing.text == DRAFT
    assert "never ended" in nothing.note and "has 4 words" in nothing.note


def test_a_provider_that_does_not_continue_the_answer_still_gets_its_sentence_checked(glide, sentence_style):
    fresh = ["Sure! Mara grabbed her Tidewave Glide and ran to the water before the others woke up. Done."]
    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=lambda prompt: fresh)
    assert outcome.placed and "Mara grabbed her Tidewave Glide and ran to the water" in outcome.text
    none = place_in_draft(draft=DRAFT, plan=glide, rewrite=lambda prompt: ["Sure! Here is a sentence."])
    assert not none.placed


def test_a_rewrite_that_is_another_passage_is_refused_for_what_it_changes(glide, passage_style):
    close = place_in_draft(draft=DRAFT, plan=glide, rewrite=editor("their Tidewave Glide boards"))
    assert close.placed and close.similarity["rouge_l"] >= 0.9

    def other_story(prompt: RewritePrompt) -> list[str]:
        return [
            "<PASSAGE>The Tidewave Glide spaceship landed on Mars and robots sold shares of crypto tokens "
            "to purple volcano llamas in a bank.</PASSAGE>"
        ]

    far = place_in_draft(draft=DRAFT, plan=glide, rewrite=other_story)
    assert not far.placed and far.text == DRAFT  # named and about the length, but another story
    assert "changes too much of a short chapter (ROUGE-L 0." in far.note


def test_a_draft_that_touches_a_banned_theme_gets_no_placement(glide, sentence_style):
    brand = BrandAsset.objects.get(pk=glide.asset_id).brand
    brand.banned_themes = ["drugs"]
    brand.save()
    asked: list[RewritePrompt] = []

    def rewrite(prompt: RewritePrompt) -> list[str]:
        asked.append(prompt)
        return [prompt.prefill + " boards were stacked by the door, waxed and ready for the swell."]

    draft = DRAFT + "\n\nThe room behind the bar smelled of drugs and old rope, and nobody went in there."
    outcome = place_in_draft(draft=draft, plan=glide, rewrite=rewrite)
    assert not outcome.placed and outcome.text == draft and not asked  # the writer is not even asked
    assert outcome.note == f"Could not place: the chapter touches a theme {brand.name} bans (drugs)."
    assert place_in_draft(draft=DRAFT, plan=glide, rewrite=rewrite).placed  # the same brand, a clean draft


def test_a_candidate_that_breaks_a_rule_leaves_the_draft_and_says_why(glide, passage_style):
    advert = editor("their Tidewave Glide boards (buy a Tidewave Glide, Tidewave Glide is the best)")
    for rewrite, why in [
        (editor("their boards"), "does not name the asset"),
        (advert, "cap is 1"),
        (lambda prompt: [], "the writer returned nothing"),
    ]:
        outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=rewrite)
        assert not outcome.placed and outcome.text == DRAFT and outcome.passage is None
        assert outcome.note.startswith("Could not place naturally:") and why in outcome.note
        assert outcome.similarity == {}
    empty = place_in_draft(draft="", plan=glide, rewrite=editor("x"))
    assert not empty.placed and "empty" in empty.note


def test_an_added_sentence_with_a_banned_theme_or_over_the_cap_is_refused(glide, sentence_style):
    brand = BrandAsset.objects.get(pk=glide.asset_id).brand
    brand.banned_themes = ["gambling"]
    brand.save()
    outcome = place_in_draft(
        draft=DRAFT,
        plan=glide,
        rewrite=novelist(
            " was the prize in a gambling game that the kids played on the sand.",
            " boards, Tidewave Glide wax and a Tidewave Glide towel lay by the water.",
        ),
    )
    assert not outcome.placed and "banned theme (gambling)" in outcome.note and "cap is 1" in outcome.note


def test_several_drafts_share_one_rewrite_call_and_keep_their_order(glide, passage_style):
    seen: list[int] = []
    good = editor("their Tidewave Glide boards")

    def rewrite_all(prompts: list[RewritePrompt]) -> list[list[str]]:
        seen.append(len(prompts))
        return [good(prompt) for prompt in prompts]

    other = DRAFT.replace("Mara", "Jo")
    outcomes = place_in_drafts([(DRAFT, glide), ("", glide), (other, glide)], rewrite_all=rewrite_all)
    assert seen == [2]  # one call; the empty draft needs no rewrite
    assert [o.placed for o in outcomes] == [True, False, True]
    assert outcomes[0].draft == DRAFT and outcomes[2].draft == other and "empty" in outcomes[1].note
    assert "Jo woke" in outcomes[2].text and "Tidewave Glide" in outcomes[2].text
    with pytest.raises(ValueError, match="answered 1 prompts of 2"):
        place_in_drafts([(DRAFT, glide), (other, glide)], rewrite_all=lambda prompts: [[]])


@pytest.mark.parametrize("style", ["sentence", "passage"])
def test_the_real_writer_as_the_rewriter(glide, local_engine, settings, style):
    from writer.engines import get_engine
    from writer.engines.base import Sampling

    settings.BRAND_PLACEMENT_STYLE = style
    engine = get_engine("local")

    def rewrite(prompt: RewritePrompt) -> list[str]:
        sampling = Sampling(
            max_tokens=prompt.max_tokens,
            seed=7,
            prefill=prompt.prefill,
            stop=prompt.stop,
            stop_after=prompt.stop_after,
            one_line=prompt.one_line,
        )
        return [c.text for c in engine.generate(prompt.messages, n=3, sampling=sampling).completions]

    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=rewrite)
    if outcome.placed:  # either way nothing is lost
        start, end = outcome.passage
        assert outcome.text[:start] == DRAFT[:start] and any(t in outcome.text[start:end] for t in glide.terms)
    else:
        assert outcome.text == DRAFT and outcome.note.startswith("Could not place naturally:")
    if style == "sentence":  # the writer goes on from the term: the 135M model lands it
        assert outcome.placed, outcome.note


def test_a_draft_with_no_good_candidate_is_asked_again_a_bounded_number_of_times(glide, sentence_style, settings):
    settings.BRAND_PLACEMENT_ROUNDS = 2
    calls: list[int] = []
    asked: list[str] = []

    def second_time_lucky(prompts: list[RewritePrompt]) -> list[list[str]]:
        calls.append(len(prompts))
        asked.append(prompts[0].prefill)
        if len(calls) == 1:  # the first draft's candidates all fail; the second draft's pass
            return [[prompts[0].prefill + " was there."], [prompts[1].prefill + " lay on the sand by the boards."]]
        return [[prompts[0].prefill + " lay on the sand, still cold from the morning water."]]

    other = DRAFT.replace("Mara", "Jo")
    first, second = place_in_drafts([(DRAFT, glide), (other, glide)], rewrite_all=second_time_lucky)
    assert calls == [2, 1] and first.placed and second.placed
    # The second round goes on from the passage where the board fits next best: the cove (passage 2)
    # first, then the ledger (passage 3); the opening passage comes last.
    assert asked[0].endswith("laughing at the cold. Tidewave Glide") and asked[1].endswith("the column. Tidewave Glide")
    assert "added a sentence to passage 3 of 3" in first.note and "passage 2 of 3" in second.note

    calls.clear()
    never = place_in_drafts([(DRAFT, glide)], rewrite_all=lambda prompts: calls.append(1) or [[" no"]])
    assert calls == [1, 1] and not never[0].placed and never[0].note.startswith("Could not place naturally")

    settings.BRAND_PLACEMENT_ROUNDS = 3  # more rounds than passages beyond the opening one: all three, then
    calls.clear()  # the opening passage too
    place_in_drafts([(DRAFT, glide)], rewrite_all=lambda prompts: calls.append(1) or [[" no"]])
    assert calls == [1, 1, 1]
