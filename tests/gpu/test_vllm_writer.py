"""On the GPU: the app's vllm engine against a GPU vLLM server: a LoRA loaded at run time, n=4
options from one call, each parsed by the writer's parser. Needs MESU_GPU_VLLM_URL (the server's
/v1 root, started by scripts/gpu/serve.sh with runtime LoRA loading); skipped otherwise."""

from __future__ import annotations

import os

import pytest

from tests.gpu.conftest import needs_cuda

URL = os.environ.get("MESU_GPU_VLLM_URL", "")
pytestmark = [
    pytest.mark.gpu,
    needs_cuda,
    pytest.mark.skipif(not URL, reason="set MESU_GPU_VLLM_URL to a GPU vLLM server's /v1 root"),
]


def test_runtime_lora_and_four_parsed_options(gpu_base_model, tmp_path):
    from tests.fixtures_training import make_random_lora
    from writer.engines.base import Adapter, Sampling
    from writer.engines.vllm import VLLMEngine, VLLMSettings, reset_caches
    from writer.parsing import parse_output
    from writer.prompting import REASONING_START

    reset_caches()
    engine = VLLMEngine(
        VLLMSettings(
            base_url=URL.rstrip("/"), api_key="", model=os.environ.get("MESU_GPU_VLLM_MODEL", "smollm2"),
            timeout=120.0, max_retries=1, retry_backoff=0.5, stream=True, tokenizer_path=str(gpu_base_model),
        )
    )
    name = f"gpu-test-{os.getpid()}"
    adapter = Adapter(name=name, path=make_random_lora(gpu_base_model, tmp_path / name, r=8))
    assert name not in engine.list_models()
    messages = [{"role": "user", "content": "Continue the story of the lighthouse keeper."}]
    result = engine.generate(
        messages, n=4, sampling=Sampling(max_tokens=48, seed=1, prefill=REASONING_START), adapter=adapter
    )
    assert name in engine.list_models()
    assert result.model == name and len(result.completions) == 4
    for completion in result.completions:
        assert completion.text.startswith(REASONING_START) and completion.tokens > 0
        parsed = parse_output(completion.text)
        assert parsed.reasoning or parsed.text
