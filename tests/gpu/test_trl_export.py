"""On the GPU: run_grpo through plain TRL + PEFT in bf16, then export merged 16-bit and merged 4-bit."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from tests.fixtures_training import write_dataset
from tests.gpu.conftest import gpu_config_values, needs_cuda
from training.config import CONFIG_FILENAME, GRPOJobConfig
from training.trainer import run_grpo

pytestmark = [pytest.mark.gpu, pytest.mark.slow, needs_cuda]


@pytest.fixture(scope="module")
def trl_adapter(gpu_base_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("trl")
    config = GRPOJobConfig(**gpu_config_values(gpu_base_model, backend="trl"))
    result = run_grpo(config=config, dataset_dir=write_dataset(work / "data"), out_dir=work / "run")
    return result


def test_trl_on_cuda_trains_the_lora_only(trl_adapter):
    result = trl_adapter
    assert result.device == "cuda" and result.backend == "trl"
    assert result.steps == 2 and len(result.step_logs) == 2
    assert result.lora_nonzero, result.lora_zero_tensors
    assert result.base_unchanged
    saved = json.loads((result.adapter_path / CONFIG_FILENAME).read_text())
    assert saved["device"] == "cuda" and saved["_meta"]["backend"] == "trl"


def test_export_merged16_and_merged4_on_cuda(trl_adapter, gpu_base_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from training.export import export_adapter

    result = export_adapter(
        adapter_dir=trl_adapter.adapter_path,
        base_model=gpu_base_model,
        out_dir=tmp_path / "export",
        formats=["merged16", "merged4"],
    )
    assert result.ok, [e.to_dict() for e in result.failed]
    merged16, merged4 = result.entry("merged16"), result.entry("merged4")
    assert merged16.ok and merged4.ok and not merged4.skipped
    with safe_open(str(next(merged16.path.glob("*.safetensors"))), framework="pt") as handle:
        assert {handle.get_tensor(k).dtype for k in list(handle.keys())[:8]} == {torch.bfloat16}
    # The 4-bit folder loads back quantized and generates on the GPU.
    model = AutoModelForCausalLM.from_pretrained(merged4.path, device_map={"": 0})
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    ids = torch.tensor([[1, 2, 3, 4]], device="cuda")
    out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)
    assert merged4.bytes < merged16.bytes
