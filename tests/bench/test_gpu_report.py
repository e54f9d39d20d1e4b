"""bench/gpu/report_gpu.py on the GPU runs' real JSON (docs/gpu-logs): which HF run the ratio is taken
against. Pure JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

from report_gpu import _profile_steps, profile_section, throughput_servers_section  # noqa: E402
from writer_throughput import hf_median  # noqa: E402

RUN4 = ROOT / "docs" / "gpu-logs" / "run4"


def _run(tps: float) -> dict:
    return {"tokens_per_s": tps, "step_ms": 1000.0 / tps, "wall_s": 1.0, "new_tokens_each": 1024}


@pytest.mark.parametrize(
    ("runs", "cold", "expected"),
    [
        ([_run(1500), _run(3000)], 1, 3000),  # the first full-length run is not measured
        ([_run(1500), _run(3200), _run(3100)], 1, 3200),  # of two warm runs the faster (not flattering vLLM)
        ([_run(1500), _run(3200), _run(3100), _run(2900)], 1, 3100),  # of three the median
        ([_run(1300)], 0, 1300),  # a result from before runs were recorded: its one run
        ([_run(1500)], 1, 1500),  # only a cold run: that one rather than nothing
    ],
)
def test_hf_median_skips_the_cold_runs(runs, cold, expected):
    assert hf_median({"runs": runs, "run": runs[0]}, cold)["tokens_per_s"] == expected
    assert hf_median({"runs": runs, "run": runs[0], "cold_runs": cold})["tokens_per_s"] == expected


def test_run4_ratio_is_against_warm_hf_and_says_so():
    text = throughput_servers_section(RUN4, "d", hf_cold_runs=1)
    hf = json.loads((RUN4 / "tp_hf.json").read_text())
    warm = hf["runs"][1]["tokens_per_s"]
    lora1 = json.loads((RUN4 / "tp_vllm_tuned.json").read_text())["lora1"]["tokens_per_s"]
    assert f"**{lora1 / warm:.1f}x** the tokens/s ({lora1:,.0f} vs {warm:,.0f}" in text
    assert "(warm)" in text and "Goal >= 10x with the LoRA: **not met**" in text
    assert f"{hf['runs'][0]['tokens_per_s']:,.0f} first" in text  # the cold run is shown, marked
    for variant in ("no vLLM server on the GPU", "cuDNN attention off"):
        assert variant in text


def test_without_cold_run_info_the_ratio_is_labelled_cold():
    text = throughput_servers_section(ROOT / "docs" / "gpu-logs" / "run3", "d")
    assert "its first full-length run, i.e. cold" in text and "(warm)" not in text


RUN7 = ROOT / "docs" / "gpu-logs" / "run7"


def test_profile_section_counts_steps_by_kv_writes_not_the_lagging_counter():
    """Run 7's real profile JSON predates profile_step.py --layers: its counter read 54 and 36 steps, the
    kernels show 43 and 29 (1,204 and 812 KV-cache writes over 28 layers); the per-step times use those."""
    base = json.loads((RUN7 / "tp_profile_llama3b.json").read_text())
    assert base["steps"] == 54.0 and "steps_from" not in base
    assert _profile_steps(base) == (43.0, "KV-cache writes / layers")
    assert _profile_steps({**base, "top": []}) == (54.0, "the server's inter-token-latency counter")
    assert _profile_steps({"steps": 12.0, "steps_from": "kernels"})[0] == 12.0
    text = profile_section(RUN7, "D")
    assert "llama3b 43 (KV-cache writes / layers); lora1 29 (KV-cache writes / layers)" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert list(rows)[1:3] == ["attention", "gemm"]  # the biggest category first
    assert "| 4.47 (54%) | 3.93 (44%) |" in rows["attention"]  # 192.26 ms / 43, 113.87 ms / 29
    assert rows["lora"].split(" | ")[1] == ""  # no LoRA kernels in the base window
    assert "7.38 (95% of the window)" in rows["GPU busy (some kernel running)"]


def test_no_profile_no_section(tmp_path):
    assert profile_section(tmp_path, "D") is None
