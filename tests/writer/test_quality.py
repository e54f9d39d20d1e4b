"""writer/quality.py: repetition and length as a reader would notice them, and the `repetition` reward
that measures the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.rewards import REWARDS, repetition, score_all
from writer.engines.base import Completion
from writer.parsing import ParsedOutput
from writer.quality import cut_loop, longest_repeat, repeated_ngram_share, text_quality, words_of
from writer.services import without_loop

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
LOOP = "They are looking at the children. " * 50


def test_words_are_lower_cased_and_keep_their_apostrophes():
    assert words_of("Don’t SAY it—twice, Mara's 2 dogs.") == ["don't", "say", "it", "twice", "mara's", "2", "dogs"]
    assert words_of("") == [] and words_of("… — !") == []


def test_a_loop_is_almost_all_repeats_and_prose_almost_none():
    loop = text_quality(LOOP)
    assert loop.words == 300 and loop.repetition > 0.95
    assert loop.longest_repeat == 150  # half the text occurs twice, side by side
    human = text_quality((SAMPLES / "neon_rain.txt").read_text(encoding="utf-8"))
    assert human.words > 1500 and human.repetition < 0.05 and human.longest_repeat < 12


@pytest.mark.parametrize(
    ("text", "share", "longest"),
    [
        ("", 0.0, 0),
        ("one two three", 0.0, 0),  # fewer words than a 4-gram
        ("a b c d a b c d", 1 / 5, 4),  # 5 4-grams, one repeats; "a b c d" twice, not overlapping
        ("a a a a a a", 2 / 3, 3),  # overlapping runs do not count as a longer repeat
    ],
)
def test_edge_cases(text, share, longest):
    words = words_of(text)
    assert repeated_ngram_share(words) == pytest.approx(share)
    assert longest_repeat(words) == longest


PROSE = (
    "Mara woke before the gulls. The lamp had burned all night and the room smelled of oil and salt. "
    "Her father was already down at the cove, waxing the old board on the sand. "
)
LOOPING = "They are looking at the children. " * 12


def test_a_chapter_that_starts_to_loop_is_cut_before_the_loop():
    cut = cut_loop(PROSE + LOOPING, 0.05)
    assert cut is not None and (PROSE + LOOPING).startswith(cut) and cut.endswith((".", "children."))
    assert repeated_ngram_share(words_of(cut)) <= 0.05 and "Mara woke" in cut
    assert cut.count("They are looking at the children.") <= 2  # the loop itself is gone
    assert cut_loop(PROSE, 0.05) is None  # prose within the limit comes back untouched (None)
    assert cut_loop(LOOPING, 0.05) == "They are looking at the children."  # (then written again: too short)
    assert cut_loop("the children the children the children the children the children", 0.05) is None
    assert cut_loop(PROSE + LOOPING, 1.0) is None  # 1 turns it off
    assert cut_loop("", 0.05) is None


def test_without_loop_keeps_the_option_and_says_what_was_cut(settings):
    settings.WRITER_MAX_REPETITION = 0.05
    completion = Completion(text="<raw>", tokens=300, finish_reason="stop", warning="shortened at its last sentence")
    answer = ParsedOutput(reasoning="plan", text=PROSE + LOOPING, format_ok=True)
    kept_completion, kept = without_loop(completion, answer)
    assert kept.text == cut_loop(PROSE + LOOPING, 0.05) and kept.reasoning == "plan" and kept.format_ok
    assert kept_completion.text == "<raw>" and kept_completion.warning.startswith("shortened at its last sentence; cut where")
    assert f"of {len(words_of(PROSE + LOOPING))} words kept" in kept_completion.warning
    clean = ParsedOutput(reasoning="", text=PROSE, format_ok=True)
    assert without_loop(completion, clean) == (completion, clean)


def test_the_repetition_reward_scores_the_chapter_part():
    looping = f"<start_working_out>plan<end_working_out><SOLUTION>{LOOP}</SOLUTION>"
    fresh = "<start_working_out>plan<end_working_out><SOLUTION>The tide came in. Mara ran for the lamp.</SOLUTION>"
    low, high, empty = repetition([looping, fresh, "<SOLUTION></SOLUTION>"])
    assert low < 0.05 and high == 1.0 and empty == 0.0
    assert "repetition" in REWARDS
    assert score_all(fresh, "ref", names="repetition") == {"repetition": 1.0}


@pytest.mark.slow
def test_every_option_reports_its_quality_in_generate_next(users, local_engine):
    import json
    from io import StringIO

    from django.core.management import call_command

    from tests.factories import story_with_chapters
    from writer.models import GenerationOption

    story = story_with_chapters(owner=users["alice"], chapters=1)
    out = StringIO()
    call_command("generate_next", "--story", story.slug, "--n", "2", "--max-new-tokens", "24", stdout=out)
    options = json.loads(out.getvalue())["options"]
    assert len(options) == 2
    for option in options:
        measured = text_quality(GenerationOption.objects.get(pk=option["id"]).text)
        assert (option["words"], option["repetition"], option["longest_repeat"]) == (
            measured.words,
            measured.repetition,
            measured.longest_repeat,
        )


def test_the_request_and_review_pages_show_each_options_quality(users, client_for):
    from django.urls import reverse

    from tests.factories import story_with_chapters
    from writer import services
    from writer.models import GenerationOption, GenerationRequest, ReviewStatus

    story = story_with_chapters(owner=users["alice"], chapters=1)
    request = services.generation_request_create(story=story, user=users["alice"], n=1, enqueue=False)
    GenerationRequest.objects.filter(pk=request.pk).update(status=GenerationRequest.Status.SUCCEEDED)
    GenerationOption.objects.create(
        request=request, index=0, text=LOOP, format_ok=True, warning="The chapter was shortened.",
        review_status=ReviewStatus.NONE,
    )
    html = client_for("alice").get(reverse("writer:request_detail", args=[request.pk])).content.decode()
    assert "300 words · repeated 4-grams 0.98" in html and "a passage of 150 words is written twice" in html
    assert "The chapter was shortened." in html


def test_rouge_l_is_rouge_scores_number():
    from rouge_score import rouge_scorer

    from writer.quality import rouge_l

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    draft = "They walked down to the cove where the swell came in long and clean."
    for placed in (draft, draft.replace("the cove", "the cove with a Tidewave Glide"), "Nothing alike here.", ""):
        assert rouge_l(placed, draft) == pytest.approx(scorer.score(draft, placed)["rougeL"].fmeasure, abs=1e-12)
    assert rouge_l(draft, draft) == 1.0 and rouge_l("", draft) == 0.0
