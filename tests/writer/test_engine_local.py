"""The in-process engine on the real SmolLM2 (float32 on the CPU), with a real random LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mesu_web.errors import EngineError
from writer.engines.base import Adapter, Sampling
from writer.engines.local import LocalEngine, LocalSettings, _AnswerPenalties, _token_counts
from writer.parsing import parse_output

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "user", "content": "Continue the story: the lighthouse keeper heard a knock at midnight."}
]
PREFILL = "<start_working_out>"


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> LocalEngine:
    return LocalEngine(LocalSettings(model_path=str(model_dir), model_name="smollm2", threads=1))


def _base_weights(engine: LocalEngine) -> dict[str, torch.Tensor]:
    """The base model's parameters by their original names, whether or not LoRA layers are injected."""
    weights = {}
    for name, param in engine.load().base.named_parameters():
        if "lora_" in name:
            continue
        weights[name.replace(".base_layer", "")] = param.detach().clone()
    return weights


def test_n_options_with_token_counts_and_progress(engine):
    progress: list[int] = []
    result = engine.generate(
        MESSAGES, n=3, sampling=Sampling(max_tokens=12, seed=11, prefill=PREFILL), on_progress=progress.append
    )
    assert len(result.completions) == 3 and result.model == "smollm2"
    for completion in result.completions:
        assert completion.text.startswith(PREFILL) and len(completion.text) > len(PREFILL)
        assert 1 <= completion.tokens <= 12
        assert (completion.finish_reason == "length") == (completion.tokens == 12)
        assert "<|im_end|>" not in completion.text
    assert progress == sorted(progress) and progress[-1] == sum(c.tokens for c in result.completions)
    tokenizer = engine.load().tokenizer
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False) + PREFILL
    assert result.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_counts_stop_at_the_end_of_sequence_and_exclude_padding():
    eos = 2
    generated = torch.tensor([[5, 6, eos, eos, eos], [5, 6, 7, 8, 9], [eos, eos, eos, eos, eos]])
    assert _token_counts(generated, torch.tensor([eos])).tolist() == [2, 5, 0]


def test_an_option_that_ends_early_counts_only_its_own_tokens(engine):
    messages = [{"role": "user", "content": "Answer with one word: what colour is the sky on a clear day?"}]
    result = engine.generate(messages, n=2, sampling=Sampling(max_tokens=40, temperature=0.0))
    first = result.completions[0]
    assert first.finish_reason == "stop" and first.tokens < 40
    # Decoding the counted tokens gives the text: nothing after the end of sequence is counted.
    assert first.tokens == engine.count_tokens(first.text)
    assert result.completions[0] == result.completions[1]  # greedy: the options are the same


def test_a_seed_reproduces_the_options_and_another_seed_changes_them(engine):
    sampling = Sampling(max_tokens=12, seed=1234)
    first = [c.text for c in engine.generate(MESSAGES, n=2, sampling=sampling).completions]
    again = [c.text for c in engine.generate(MESSAGES, n=2, sampling=sampling).completions]
    other = [
        c.text for c in engine.generate(MESSAGES, n=2, sampling=Sampling(max_tokens=12, seed=99)).completions
    ]
    assert first == again
    assert first != other


def test_a_lora_by_path_changes_the_output_and_nothing_in_the_base_weights(engine, lora_adapter_dir):
    sampling = Sampling(max_tokens=12, temperature=0.0)
    before = _base_weights(engine)
    base = engine.generate(MESSAGES, n=1, sampling=sampling).completions[0].text

    adapter = Adapter(name="test-lora", path=lora_adapter_dir)
    tuned = engine.generate(MESSAGES, n=1, sampling=sampling, adapter=adapter)
    assert tuned.model == "test-lora"
    assert tuned.completions[0].text != base

    after = _base_weights(engine)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert engine.generate(MESSAGES, n=1, sampling=sampling).completions[0].text == base
    # Loaded once: a second call switches to it without loading again.
    loaded = engine.load()
    names_before = dict(loaded.adapters)
    assert (
        engine.generate(MESSAGES, n=1, sampling=sampling, adapter=adapter).completions[0].text
        == tuned.completions[0].text
    )
    assert dict(loaded.adapters) == names_before


def test_a_missing_adapter_folder_is_a_permanent_error(engine, tmp_path):
    with pytest.raises(EngineError) as caught:
        engine.generate(
            MESSAGES, n=1, sampling=Sampling(max_tokens=4), adapter=Adapter("gone", tmp_path / "gone")
        )
    assert caught.value.retryable is False and "gone" in caught.value.message


def test_a_prompt_longer_than_the_window_is_a_permanent_error(engine):
    window = engine.load().base.config.max_position_embeddings
    with pytest.raises(EngineError) as caught:
        engine.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=window))
    assert caught.value.retryable is False and "window" in caught.value.message


def test_count_tokens_uses_the_models_tokenizer(engine):
    text = "The keeper climbed the hundred and twelve steps."
    tokenizer = engine.load().tokenizer
    assert engine.count_tokens(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert engine.count_tokens("") == 0


def test_two_phase_answers_are_in_the_format_with_separate_budgets(engine):
    progress: list[int] = []
    sampling = Sampling(max_tokens=20, reasoning_tokens=12, seed=5, repetition_penalty=1.15)
    result = engine.generate(MESSAGES, n=3, sampling=sampling, on_progress=progress.append)
    assert len(result.completions) == 3
    for completion in result.completions:
        parsed = parse_output(completion.text)
        assert parsed.format_ok, completion.text
        assert engine.count_tokens(parsed.reasoning) <= 12 + 1  # re-tokenised text may differ by one
        assert 1 <= completion.tokens <= 12 + 20
        if completion.finish_reason == "length" and parsed.text.endswith((".", "!", "?", '"')):
            assert "last complete sentence" in completion.warning
    assert progress == sorted(progress) and progress[-1] == sum(c.tokens for c in result.completions)
    # The seed reproduces both phases.
    assert [c.text for c in engine.generate(MESSAGES, n=3, sampling=sampling).completions] == [
        c.text for c in result.completions
    ]


def test_a_left_padded_batch_writes_what_each_prompt_writes_alone(engine):
    loaded = engine.load()
    prompt = loaded.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    texts = [prompt + "Once", prompt + "It was a dark and stormy night on the point, and"]
    greedy = Sampling(max_tokens=10, temperature=0.0)
    with torch.inference_mode():
        together, _ = engine._write(loaded, loaded.base, texts, 1, 10, (), greedy, None)
        alone = [engine._write(loaded, loaded.base, [t], 1, 10, (), greedy, None)[0][0] for t in texts]
    assert [c.text for c in together] == [c.text for c in alone]


def test_repetition_controls_change_greedy_text(engine):
    plain = engine.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=24, temperature=0.0)).completions[0].text
    for controls in ({"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2}, {"frequency_penalty": 1.5}):
        controlled = engine.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=24, temperature=0.0, **controls))
        assert controlled.completions[0].text != plain, controls


def test_answer_penalties_count_only_the_answers_tokens():
    scores = torch.zeros(2, 6)
    # Prompts of 2 tokens; row 0 answered 3, 3, 4 (the prompt's 3 does not count); row 1 answered 5, 0, 0.
    input_ids = torch.tensor([[1, 3, 3, 3, 4], [1, 2, 5, 0, 0]])
    penalised = _AnswerPenalties(prompt_len=2, frequency=0.5, presence=1.0)(input_ids, scores)
    # 0.5 per use plus 1.0 once: twice -> -2.0, once -> -1.5.
    assert penalised[0].tolist() == [0.0, 0.0, 0.0, -2.0, -1.5, 0.0]
    assert penalised[1].tolist() == [-2.0, 0.0, 0.0, 0.0, 0.0, -1.5]
