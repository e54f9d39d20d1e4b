"""bench/gpu/profile_step.py against a real vLLM CPU server started with the torch profiler on: the same
/start_profile and /stop_profile and the same trace format the GPU host's server writes (there with the
kernels as device events; here the CPU worker's `cpu_op` events are summed instead)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from writer.engines.vllm_server import ServerStartError, start_vllm_server, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

from profile_step import _short, _union_us, category  # noqa: E402

PORT = 8013


def test_categories_and_names():
    assert category("void flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128>>") == "attention"
    assert category("_lora_shrink_kernel") == "lora"  # a Triton GEMM, counted as LoRA, not GEMM
    assert category("nvjet_tst_128x64_64x8_2x1_v_bz_TNT") == "gemm"
    assert category("at::native::radixSortKVInPlace") == "sampling"
    assert category("Memcpy DtoD (Device -> Device)") == "memcpy/memset"
    assert category("triton_poi_fused_add_3") == "other"
    assert _short("void f<int, g<float>>(int)") == "void f(int)"
    assert _union_us([(0, 10), (5, 12), (20, 25)]) == 17  # overlaps count once, gaps not at all


@pytest.mark.vllm
@pytest.mark.slow
def test_profile_window_of_a_real_server(model_dir: Path, lora_adapter_dir: Path, tmp_path: Path):
    """Through a LoRA the script loads at run time, as the GPU part profiles lora1. The window is 10 s: the
    torch profiler slows a CPU decode step from ~0.4 s to ~4 s here, so a 4 s window held one step."""
    traces = tmp_path / "traces"
    config = json.dumps(  # no spaces: the server script splits its extra flags on them
        {"profiler": "torch", "torch_profiler_dir": str(traces), "torch_profiler_with_stack": False},
        separators=(",", ":"),
    )
    try:
        proc, _ = start_vllm_server(
            model_dir, PORT, tmp_path / "server.log", env={"VLLM_EXTRA_ARGS": f"--profiler-config {config}"}
        )
    except ServerStartError as exc:
        pytest.fail(str(exc))
    dataset = tmp_path / "data"
    dataset.mkdir()
    prompt = [
        {"role": "system", "content": "You continue stories."},
        {"role": "user", "content": "Chapter 1: Mira found a lantern on the pier. Write chapter 2."},
    ]
    (dataset / "train.jsonl").write_text(json.dumps({"prompt": prompt}) + "\n")
    out = tmp_path / "profile.json"
    layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gpu" / "profile_step.py"), "run", "--url", f"http://127.0.0.1:{PORT}",
             "--model", lora_adapter_dir.name, "--loras", str(lora_adapter_dir.parent), "--trace-dir", str(traces), "--dataset", str(dataset), "--requests", "2",
             "--new-tokens", "320", "--delay-s", "3", "--window-s", "10", "--layers", str(layers), "--json", str(out)],
            capture_output=True, text=True, timeout=400,
        )  # fmt: skip
    finally:
        stop_process_group(proc)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["events"] == "cpu_op"  # no CUDA here: the worker's CPU ops
    assert result["files"] and all("async_llm" not in f for f in result["files"])
    assert 0 < result["busy_ms"] <= result["window_ms"] and result["summed_ms"] >= result["busy_ms"]
    assert result["steps"] and result["steps"] > 1  # decode steps ran inside the window
    # counted from the KV-cache writes the worker made (one per layer per step), not from the lagging counter
    assert result["steps_from"] == "kernels", result
    assert result["batch"]["output_tokens"] == 2 * 4 * 320  # the batch itself finished whole
    assert "gemm" in result["by_category"]  # the model's matmuls were seen and named
    assert abs(sum(c["share"] for c in result["by_category"].values()) - 1) < 0.01
    assert result["top"][0]["ms"] >= result["top"][-1]["ms"]
