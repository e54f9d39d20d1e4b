"""VR-CLI: a reasoning that tells the real chapter's plot lowers its perplexity under the reference
model, an unrelated one does not, and no reasoning scores 0; the batched likelihood is checked against
one plain forward pass per sequence (real SmolLM2)."""

from __future__ import annotations

import pytest

from mesu_web.errors import ApplicationError
from training import rewards
from training.rewards import (
    MODEL_REWARDS,
    configure,
    get_reward_funcs,
    get_settings,
    reasoning_improvements,
    score_all,
    vrcli,
)
from training.rewards.vrcli import assistant_prefix, chapter_nll, prompt_text

CHAPTER = (
    "Wren climbed the ninety-one steps with the letter in her pocket. The lamp room smelled of brass "
    "polish and old rain. Below her the sea went from ink to pewter, and somewhere past the rocks a "
    "fishing boat blinked its green light twice, as if it knew something she did not."
)
PROMPT = [
    {"role": "system", "content": "You continue novels. Think, then write the next chapter."},
    {
        "role": "user",
        "content": "## Chapter 1\n\n```text\nWren, the lighthouse keeper's daughter, finds a letter from "
        "her father, who left a year ago.\n```\n\n## Your task\n\nWrite chapter 2.",
    },
]
# The chapter's plot and key words, as a plan would give them.
PLOT = (
    "Wren climbs the ninety-one steps of the lighthouse with the letter in her pocket. The lamp room "
    "smells of brass polish and rain. She watches the sea turn from ink to pewter and a fishing boat "
    "blinks its green light twice."
)
COOKING = (
    "To make a risotto, toast the arborio rice in butter, add warm stock one ladle at a time and stir "
    "until creamy; finish with parmesan and black pepper."
)


def answer(reasoning: str | None, text: str = "Wren went up.") -> str:
    if reasoning is None:
        return f"<SOLUTION>{text}</SOLUTION>"
    return f"<start_working_out>{reasoning}<end_working_out>\n<SOLUTION>{text}</SOLUTION>"


# --- Without the model -----------------------------------------------------------------------


def test_no_reasoning_scores_zero_and_no_chapter_does_not_apply():
    completions = [answer(None), "just a chapter, no tags", answer("   "), answer(PLOT)]
    assert vrcli(completions, prompts=[PROMPT] * 4, answer=[CHAPTER, CHAPTER, CHAPTER, None]) == [
        0.0,
        0.0,
        0.0,
        None,  # no real chapter: the reward does not apply
    ]
    assert vrcli([answer(PLOT)], answer=["   "]) == [None]
    with pytest.raises(ApplicationError, match="'vrcli' reward compares with the real next chapter"):
        vrcli([answer(PLOT)])


def test_registered_as_a_model_reward():
    assert get_reward_funcs("VRCLI") == [vrcli]
    assert "vrcli" in MODEL_REWARDS and rewards.DEFAULT_WEIGHTS["vrcli"] > 0


def test_the_reasoning_goes_in_the_writers_answer_format():
    assert assistant_prefix(" plan ") == "<start_working_out>\nplan\n<end_working_out>\n<SOLUTION>\n"
    assert assistant_prefix("") == "<start_working_out>\n\n<end_working_out>\n<SOLUTION>\n"
    assert prompt_text(None, None) == "" and prompt_text("as it is", None) == "as it is"


# --- With the real SmolLM2 -------------------------------------------------------------------


@pytest.fixture
def float32():
    """The reference model in float32 (bfloat16 by default), put back afterwards."""
    before = get_settings()
    configure(perplexity_dtype="float32")
    yield
    configure(perplexity_dtype=before.perplexity_dtype)


@pytest.mark.slow
def test_a_reasoning_that_tells_the_plot_helps_an_unrelated_one_does_not():
    completions = [
        answer(PLOT),
        [{"role": "assistant", "content": answer(PLOT)}],  # a chat list reads the same
        answer(COOKING),
        answer(None),
        answer(PLOT),  # with another prompt (below): the story already tells the plot
    ]
    told = [{"role": "user", "content": f"Here is chapter 2 already: {CHAPTER}\n\nWrite chapter 2 again."}]
    improvements = reasoning_improvements(completions, prompts=[PROMPT] * 4 + [told], answer=[CHAPTER] * 5)
    plot, plot_chat, cooking, none, plot_told = improvements
    assert plot > 0.3  # the plan quotes the chapter's words: far less surprising
    assert plot_chat == pytest.approx(plot)
    assert cooking < 0.05 < plot  # an unrelated plan helps little or hurts
    assert none == 0.0
    assert plot_told < plot  # the prompt is read: what it already says, the reasoning cannot add
    scores = vrcli(completions, prompts=[PROMPT] * 4 + [told], answer=[CHAPTER] * 5)
    assert scores == [pytest.approx(max(0.0, v)) for v in improvements]
    assert all(0.0 <= s < 1.0 for s in scores)
    # Through score_all (no prompt: the reasoning alone before the chapter) it still ranks.
    assert (
        score_all(answer(PLOT), CHAPTER, names="vrcli")["vrcli"]
        > score_all(answer(COOKING), CHAPTER, names="vrcli")["vrcli"]
    )


@pytest.mark.slow
def test_the_batched_likelihood_is_one_forward_pass_per_sequence(float32):
    import torch

    from training.rewards.model_based import reference_model

    model, tokenizer = reference_model()

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    contexts = [ids(prompt_text(PROMPT, tokenizer) + assistant_prefix(PLOT)), ids("Once"), ids("The sea")]
    chapters = [ids(CHAPTER), ids(" upon a time there was a cat"), ids(" was calm.")]
    batched = chapter_nll(contexts, chapters)  # left-padded together (vrcli_batch_size 2: two batches)
    for context, chapter, value in zip(contexts, chapters, batched, strict=True):
        seq = torch.tensor([context + chapter])
        with torch.inference_mode():
            logits = model(input_ids=seq).logits[0].float()
        alone = torch.nn.functional.cross_entropy(logits[len(context) - 1 : -1], seq[0, len(context) :])
        assert value == pytest.approx(float(alone), abs=1e-4)


@pytest.mark.slow
def test_only_the_first_tokens_of_the_chapter_and_the_last_of_the_context_are_read():
    before = get_settings()
    try:
        configure(vrcli_max_tokens=8, vrcli_max_context_tokens=64)
        # Past the chapter's first 8 tokens nothing counts: a different ending scores the same.
        ending = CHAPTER.split(". ")[0] + ". Then she ate a sandwich and went to bed early that night."
        a, b = reasoning_improvements([answer(PLOT)] * 2, prompts=[PROMPT] * 2, answer=[CHAPTER, ending])
        assert a == pytest.approx(b, abs=1e-6)
        # A prompt far over the context budget is cut from its start: still a finite score.
        long_prompt = [{"role": "user", "content": "Once more. " * 500}]
        (long,) = reasoning_improvements([answer(PLOT)], prompts=[long_prompt], answer=[CHAPTER])
        assert long is not None and -10 < long < 1
    finally:
        configure(
            vrcli_max_tokens=before.vrcli_max_tokens, vrcli_max_context_tokens=before.vrcli_max_context_tokens
        )
