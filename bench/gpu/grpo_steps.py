"""GRPO step time on the GPU through the project's trainer: TRL + PEFT, Unsloth, TRL with vLLM.

    python3 bench/gpu/grpo_steps.py --backend trl|unsloth [--use-vllm] --model DIR --label NAME --json FILE
                                    [--steps 4] [--generations 8] [--completions 16] [--completion-tokens 256]

One process per backend (Unsloth patches trl/transformers/peft at import, so it cannot share a
process with the plain path); bench/gpu/run_grpo.sh runs them one after another on the same GPU, with
the same `GRPOJobConfig` (only backend and use_vllm differ) and the same data (the demo dataset,
made by build_dataset from samples/). It calls `training.trainer.run_grpo`, the function behind
`train_grpo` and the `gpu` worker. The optimizer (adamw_torch_fused), gradient accumulation (2),
weight decay, beta, loss type and gradient checkpointing are explicit in the config, because
Unsloth's GRPOConfig defaults differ (8-bit AdamW, accumulation 2, weight decay 0.001).

Each reward callable is wrapped in a timer (functools.wraps keeps its name, so TRL logs the same
metrics) and passed through run_grpo's `reward_funcs`; reward calls are attributed to the step whose
progress report follows them. BERTScore runs on the GPU (REWARD_DEVICE=cuda) with MiniLM-L6's
architecture and tokenizer and random weights (bench/gpu/shapes.py minilm): weights do not change
its speed.

The first step is reported apart (Unsloth compiles in it, vLLM warms up); the figure compared is
the mean of the later steps. Prints one RESULT line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "UNSLOTH_DISABLE_STATISTICS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("REWARD_DEVICE", "cuda")

REWARDS = ["format_exact", "format_partial", "rougeL", "bertscore"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["trl", "unsloth"], required=True)
    ap.add_argument("--use-vllm", action="store_true")
    ap.add_argument("--model", required=True, help="HF model folder with weights")
    ap.add_argument("--label", required=True)
    ap.add_argument("--dataset", default="/tmp/mesu/datasets/demo")
    ap.add_argument("--out", default="/tmp/mesu/bench-runs")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--completions", type=int, default=16, help="completions per optimizer step")
    ap.add_argument("--completion-tokens", type=int, default=256)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--vllm-util", type=float, default=0.35)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    t_start = time.perf_counter()
    from training.trainer import import_unsloth

    if args.backend == "unsloth":
        ok, why = import_unsloth()  # before anything imports trl, transformers or peft
        if not ok:
            raise SystemExit(f"Unsloth unusable: {why}")
    import torch

    from training.config import GRPOJobConfig
    from training.rewards import get_reward_funcs
    from training.trainer import run_grpo

    accumulation = 2
    config = GRPOJobConfig(
        base_model=args.model,
        backend=args.backend,
        device="cuda",
        use_vllm=args.use_vllm,
        vllm_gpu_memory_utilization=args.vllm_util,
        lora_rank=args.rank,
        num_generations=args.generations,
        per_device_train_batch_size=args.completions // accumulation,
        gradient_accumulation_steps=accumulation,
        max_completion_length=args.completion_tokens,
        max_prompt_length=1100,
        max_steps=args.steps,
        learning_rate=5e-5,
        warmup_ratio=0.0,
        optim="adamw_torch_fused",
        weight_decay=0.1,
        gradient_checkpointing=True,
        save_steps=1000,
        reward_names=REWARDS,
        reward_weights=[3.0, 0.5, 0.5, 1.0],
    )

    calls: list[tuple[float, str, float]] = []  # (end time, reward, seconds)

    def wrap(func):
        @functools.wraps(func)
        def timed(*a, **k):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = func(*a, **k)
            torch.cuda.synchronize()
            calls.append((time.perf_counter(), func.__name__, time.perf_counter() - t))
            return out

        return timed

    step_ends: list[float] = []
    result = run_grpo(
        config=config,
        dataset_dir=Path(args.dataset),
        out_dir=Path(args.out) / args.label,
        resume=False,
        reward_funcs=[wrap(f) for f in get_reward_funcs(REWARDS)],
        on_step=lambda entry: step_ends.append(time.perf_counter()),
    )
    steps = [log["seconds"] for log in result.step_logs]
    reward_s = []
    previous = 0.0
    for end in step_ends:
        reward_s.append(round(sum(s for t, _, s in calls if previous < t <= end), 4))
        previous = end
    per_reward: dict[str, float] = {}
    per_reward_later: dict[str, float] = {}  # after the first step (which loads the reward models)
    for t, name, s in calls:
        per_reward[name] = per_reward.get(name, 0.0) + s
        if step_ends and t > step_ends[0]:
            per_reward_later[name] = per_reward_later.get(name, 0.0) + s
    later = steps[1:] or steps
    later_rewards = reward_s[1:] or reward_s
    report = {
        "label": args.label,
        "backend": result.backend,
        "use_vllm": args.use_vllm,
        "model": args.model,
        "gpu": torch.cuda.get_device_name(0),
        "completions_per_step": config.completions_per_step,
        "completion_tokens": args.completion_tokens,
        "lora_rank": args.rank,
        "steps": result.steps,
        "step_s": steps,
        "mean_step_s_after_first": round(statistics.mean(later), 3) if later else None,
        "reward_s_per_step": reward_s,
        "reward_share_after_first": round(sum(later_rewards) / sum(later), 4) if later and sum(later) else None,
        "reward_s_by_name": {k: round(v, 3) for k, v in per_reward.items()},
        "reward_s_by_name_after_first": {k: round(v, 3) for k, v in per_reward_later.items()},
        "rewards_logged": [log.get("reward") for log in result.step_logs],
        "completion_length": [log.get("completion_length") for log in result.step_logs],
        "lora_nonzero": result.lora_nonzero,
        "base_unchanged": result.base_unchanged,
        "total_s": round(time.perf_counter() - t_start, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    Path(args.json).write_text(json.dumps(report, indent=1))
    print("RESULT " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
