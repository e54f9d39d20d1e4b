"""bench/gpu/report_gpu.py on the GPU runs' real JSON (docs/gpu-logs): which HF run the ratio is taken
against. Pure JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

from report_gpu import throughput_servers_section  # noqa: E402
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
