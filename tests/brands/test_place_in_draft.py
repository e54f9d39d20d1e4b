"""brands.matching.place_in_draft: write first, then place, on the demo brands with real MiniLM, and
with the real SmolLM2 writer as the rewriter."""

from __future__ import annotations

import pytest

from brands.demo import seed_brands
from brands.matching import OptionPlan, place_in_draft
from brands.models import BrandAsset

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


def editor(insert: str):
    """A rewriter that does what a good writer would: the passage, with the board named once."""

    def rewrite(messages: list[dict[str, str]]) -> list[str]:
        passage = messages[1]["content"].split("<PASSAGE>", 1)[1].split("</PASSAGE>", 1)[0]
        return ["Sure!", f"<PASSAGE>{passage.replace('their boards', insert)}</PASSAGE>"]

    return rewrite


def test_the_first_good_candidate_replaces_the_passage_nearest_the_asset(glide):
    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=editor("their Tidewave Glide boards"))
    assert outcome.placed and outcome.draft == DRAFT
    start, end = outcome.passage
    assert "Tidewave Glide" in outcome.text[start:end] and "cove" in outcome.text[start:end]
    assert outcome.text[:start] == DRAFT[:start]  # nothing outside the passage changed
    assert outcome.text[end:] == DRAFT[DRAFT.index("\n\nAt noon") :]
    assert outcome.note.startswith("Placed Tidewave Glide in passage 2 of 3")


def test_a_candidate_that_breaks_a_rule_leaves_the_draft_and_says_why(glide):
    advert = editor("their Tidewave Glide boards (buy a Tidewave Glide, Tidewave Glide is the best)")
    for rewrite, why in [
        (editor("their boards"), "does not name the asset"),
        (advert, "cap is 1"),
        (lambda messages: [], "the writer returned nothing"),
    ]:
        outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=rewrite)
        assert not outcome.placed and outcome.text == DRAFT and outcome.passage is None
        assert outcome.note.startswith("Could not place naturally:") and why in outcome.note
    empty = place_in_draft(draft="", plan=glide, rewrite=editor("x"))
    assert not empty.placed and "empty" in empty.note


def test_the_real_writer_as_the_rewriter(glide, local_engine):
    from writer.engines import get_engine
    from writer.engines.base import Sampling

    engine = get_engine("local")

    def rewrite(messages: list[dict[str, str]]) -> list[str]:
        result = engine.generate(messages, n=2, sampling=Sampling(max_tokens=96, temperature=0.8, top_p=0.95))
        return [c.text for c in result.completions]

    outcome = place_in_draft(draft=DRAFT, plan=glide, rewrite=rewrite)
    if outcome.placed:  # the 135M model rarely manages it: either way nothing is lost
        start, end = outcome.passage
        assert outcome.text[:start] == DRAFT[:start] and any(t in outcome.text[start:end] for t in glide.terms)
    else:
        assert outcome.text == DRAFT and outcome.note.startswith("Could not place naturally:")
