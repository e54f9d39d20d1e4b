"""TRL's colocated vLLM sync merges the LoRA into the bf16 base and unmerges it (trl#6688): the
trainer pins the base weights back after every sync. Checked with PEFT's real merge/unmerge on a
small bf16 Llama; the sync stands in for trl.generation.vllm_generation.VLLMGeneration.sync_weights,
which needs a CUDA vLLM (the GPU host ran the real one: docs/benchmarks.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.trainer import keep_base_exact_across_syncs

torch = pytest.importorskip("torch")


def tiny_peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )  # a non-zero B, as after some training steps
    return get_peft_model(model, lora)


def base_weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("base_layer.weight")}


def trl_like_sync(model, seen: list):
    """What VLLMGeneration.sync_weights does to the training model: merge, read, unmerge."""

    def sync_weights():
        model.merge_adapter()
        seen.append(
            {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("base_layer.weight")}
        )
        model.unmerge_adapter()

    return sync_weights


def test_without_pinning_the_bf16_base_drifts():
    model = tiny_peft_model()
    before = base_weights(model)
    sync = trl_like_sync(model, [])
    for _ in range(20):
        sync()
    after = base_weights(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the problem is real


def test_pinned_base_is_bit_equal_after_syncs_and_the_sync_saw_merged_weights():
    model = tiny_peft_model()
    before = base_weights(model)
    seen: list = []
    trainer = SimpleNamespace(
        model=model, vllm_generation=SimpleNamespace(sync_weights=trl_like_sync(model, seen))
    )
    assert keep_base_exact_across_syncs(trainer)
    for _ in range(20):
        trainer.vllm_generation.sync_weights()
    after = base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    # vLLM got base + LoRA delta, not the bare base
    name = next(n for n in before if "q_proj" in n)
    assert not torch.equal(seen[-1][name], before[name])
    module = model.get_submodule(name.removesuffix(".base_layer.weight"))
    expected = (before[name].float() + module.get_delta_weight("default").float()).to(torch.bfloat16)
    assert torch.allclose(seen[-1][name].float(), expected.float(), atol=1e-2)
    # and the LoRA output is unchanged: the model still computes base + LoRA
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert torch.isfinite(out).all()


def test_a_trl_without_sync_weights_is_left_alone():
    model = tiny_peft_model()
    assert keep_base_exact_across_syncs(SimpleNamespace(model=model, vllm_generation=None)) is False
