"""GPU-only tests: every test here carries the `gpu` mark and is skipped without CUDA.

On the GPU host (scripts/gpu/README.md), after unpack.sh and host_check.sh's setup step, one command:

    PYTHONPATH=/tmp/site MESU_SQLITE_PATH=/tmp/mesu/db.sqlite3 WRITER_MODEL_PATH=/tmp/models/smollm2 \
        python3 -m pytest tests/gpu -m gpu -p no:cacheprovider

The base model is settings.WRITER_MODEL_PATH (the converted SmolLM2 there). The vLLM test needs a
server with runtime LoRA loading at MESU_GPU_VLLM_URL (scripts/gpu/serve.sh) and is skipped otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import cuda_available, module_installed

needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
needs_unsloth = pytest.mark.skipif(not module_installed("unsloth"), reason="Unsloth is not installed")


@pytest.fixture(scope="session")
def gpu_base_model() -> Path:
    from django.conf import settings

    from writer.model_files import prepare_model

    return prepare_model(Path(settings.WRITER_MODEL_PATH))


def gpu_config_values(base_model: Path, **overrides) -> dict:
    """A tiny job on the GPU: 2 steps of 4 completions (2 prompts x 2) of 32 tokens, LoRA rank 8."""
    values = {
        "base_model": str(base_model),
        "device": "cuda",
        "lora_rank": 8,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_completion_length": 32,
        "max_prompt_length": 256,
        "max_steps": 2,
        "learning_rate": 1e-4,
        "warmup_ratio": 0.0,
        "reward_names": ["rouge1", "format_partial"],
        "reward_weights": [1.0, 0.5],
    }
    values.update(overrides)
    return values
