"""On the GPU: run_grpo through Unsloth, with and without fast_inference (vLLM rollouts).

Each run is a fresh process (tests/gpu/unsloth_job.py): Unsloth must be imported before trl,
transformers and peft, which other tests in this session import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu.conftest import needs_cuda, needs_unsloth

pytestmark = [pytest.mark.gpu, pytest.mark.slow, needs_cuda, needs_unsloth]
JOB = Path(__file__).with_name("unsloth_job.py")


def run_job(base: Path, work: Path, *flags: str) -> dict:
    env = dict(os.environ, UNSLOTH_DISABLE_STATISTICS="1", HF_HUB_OFFLINE="1", VLLM_USE_FLASHINFER_SAMPLER="0")
    proc = subprocess.run(
        [sys.executable, str(JOB), str(base), str(work), *flags],
        cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("flags", [(), ("--use-vllm",)], ids=["unsloth", "unsloth-fast-inference"])
def test_unsloth_backend_trains_the_lora_only(gpu_base_model, tmp_path, flags):
    result = run_job(gpu_base_model, tmp_path, *flags)
    assert result["backend"] == "unsloth" and result["device"] == "cuda"
    assert result["steps"] == 2
    assert result["lora_nonzero"], result["lora_zero_tensors"]
    assert result["base_unchanged"]
    assert (Path(result["adapter_path"]) / "adapter_model.safetensors").is_file()
