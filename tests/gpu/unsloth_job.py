"""Run one tiny run_grpo job on the Unsloth backend in a fresh process and print its result as JSON.

    python3 tests/gpu/unsloth_job.py BASE_MODEL WORK_DIR [--use-vllm]

A subprocess of tests/gpu/test_unsloth.py: Unsloth patches trl, transformers and peft when imported,
so it gets a process where nothing imported them first (as a `gpu` worker does at start-up).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.trainer import import_unsloth  # noqa: E402  (light: no torch, trl or transformers)


def main() -> int:
    base, work = Path(sys.argv[1]), Path(sys.argv[2])
    use_vllm = "--use-vllm" in sys.argv
    ok, why = import_unsloth()
    if not ok:
        print(json.dumps({"error": why}))
        return 2
    from tests.fixtures_training import write_dataset
    from tests.gpu.conftest import gpu_config_values
    from training.config import GRPOJobConfig
    from training.trainer import run_grpo

    extra = {"use_vllm": True, "vllm_gpu_memory_utilization": 0.3} if use_vllm else {}
    config = GRPOJobConfig(**gpu_config_values(base, backend="unsloth", **extra))
    result = run_grpo(config=config, dataset_dir=write_dataset(work / "data"), out_dir=work / "run")
    print("RESULT " + json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
