"""Tune vLLM's multi-LoRA Triton kernels (shrink, expand) for one model shape on this GPU.

    python3 bench/gpu/tune_lora.py --model-dir /tmp/models/llama3b-shape --rank 16 --max-loras 4 \
        --out /tmp/mesu/lora-configs --json F

vLLM applies a LoRA to each linear layer with two Triton kernels (punica's shrink: x @ A, and expand:
(x @ A) @ B added to the layer's output). Without tuned configurations it logs "Using default LoRA
kernel configs" and picks one block shape for every GPU and shape; its README_TUNING.md says to grid
search them per GPU and pass the folder as `VLLM_TUNED_CONFIG_FOLDER`. This script does that for the
shapes the model really has (the packed q/k/v, o, the packed gate/up, down), the batch sizes the
writer runs (`--batches`: one request's n options, the benchmark's 128 sequences, a prefill chunk)
and two token-to-LoRA mappings (one LoRA for every token; four LoRAs mixed, a request's n
sequences together), and writes the files vLLM reads:
`<GPU>_SHRINK.json`, `<GPU>_EXPAND_TRUE.json`, `<GPU>_EXPAND_FALSE.json`
(`config[max_loras][num_slices][m][k][n]`).

Each candidate is timed the way the server runs it: inside a CUDA graph (20 calls captured, the
replay timed with CUDA events, median of 5), so launch overhead does not hide kernel time. vLLM's
own default configuration is always one of the candidates, so a tuned file is never slower on the
shapes timed. Triton compiles every candidate once; `--jobs` processes compile them in parallel
into Triton's on-disk cache first, then one process times them (the GPU otherwise idle).

The JSON result also says what the LoRA kernels cost per decode step at the benchmark's batch:
the sum over the layer types of shrink + expand, times the number of layers, default and tuned.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.pop("VLLM_TUNED_CONFIG_FOLDER", None)  # vLLM's defaults are the baseline here

SHRINK_SPACE = [
    {
        "block_m": bm,
        "block_n": 16,
        "block_k": bk,
        "split_k": sk,
        "num_warps": 4,
        "num_ctas": 1,
        "group_size_m": 8,
        "num_stages": 2,
        "max_nreg": None,
    }
    for bm, bk, sk in itertools.product((16, 32, 64), (32, 64, 128, 256), (8, 16, 32, 64))
]
EXPAND_SPACE = [
    {
        "block_m": bm,
        "block_n": bn,
        "block_k": bk,
        "num_warps": 4,
        "num_ctas": 1,
        "num_stages": 2,
        "max_nreg": None,
    }
    for bm, bn, bk in itertools.product((16, 32, 64), (32, 64, 128, 256), (16, 32))
]
MAPPINGS = ("one", "mixed4")


def layer_shapes(config: dict) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (input size, output slices) of the LoRA-wrapped linear layers of a Llama-style model."""
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    hd = config.get("head_dim") or h // heads
    inter = config["intermediate_size"]
    return {
        "qkv_proj": (h, (heads * hd, kv * hd, kv * hd)),
        "o_proj": (heads * hd, (h,)),
        "gate_up_proj": (h, (inter, inter)),
        "down_proj": (inter, (h,)),
    }


def _key(cfg: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in cfg.items() if v is not None))


class Case:
    """Tensors for one (layer, batch, mapping): inputs, stacked LoRA weights as vLLM holds them
    ([max_loras, 1, r, in] and [max_loras, 1, out, r] per slice), the kernel metadata."""

    def __init__(
        self, torch, max_loras: int, rank: int, fan_in: int, slices: tuple[int, ...], m: int, mapping: str
    ) -> None:
        from vllm.lora.ops.triton_ops import LoRAKernelMeta

        dev = "cuda"
        g = torch.Generator(device=dev).manual_seed(0)
        self.m, self.slices = m, slices
        self.x = torch.randn(m, fan_in, device=dev, dtype=torch.bfloat16, generator=g)
        self.a = [
            (torch.randn(max_loras, 1, rank, fan_in, device=dev, generator=g) * fan_in**-0.5).bfloat16()
            for _ in slices
        ]
        self.b = [
            (torch.randn(max_loras, 1, out, rank, device=dev, generator=g) * 0.01).bfloat16()
            for out in slices
        ]
        self.buf = torch.zeros(len(slices), m, rank, device=dev, dtype=torch.float32)
        self.y = torch.zeros(m, sum(slices), device=dev, dtype=torch.bfloat16)
        if mapping == "one":
            lora_of_token = torch.zeros(m, dtype=torch.long, device=dev)
        else:  # request i (its n=4 sequences side by side) uses LoRA i mod 4
            lora_of_token = (torch.arange(m, device=dev) // 4) % min(4, max_loras)
        self.meta = LoRAKernelMeta.make(max_loras, m, device=dev)
        self.meta.prepare_tensors(lora_of_token)
        torch.cuda.synchronize()
        self.args = self.meta.meta_args(m, False)

    def run(self, op: str, mod) -> None:
        """One shrink (x @ A into the fp32 buffer) or expand (buffer @ B added to y) through `mod`."""
        if op == "shrink":
            mod._lora_shrink(self.x, self.a, self.buf, *self.args, 1.0)
        else:
            mod._lora_expand(self.buf, self.b, self.y, *self.args, offset_start=0, add_inputs=True)


def graph_time_us(torch, fn, calls: int = 20, replays: int = 5) -> float:
    """Median time of one call, captured `calls` times in a CUDA graph and replayed."""
    fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    del graph
    return statistics.median(times)


def _modules():
    from vllm.lora.ops.triton_ops import lora_expand_op, lora_shrink_op

    return lora_shrink_op, lora_expand_op


def _cases(torch, args, shapes) -> dict:
    cases = {}
    for (name, (fan_in, slices)), m, mapping in itertools.product(shapes.items(), args.batches, MAPPINGS):
        cases[(name, m, mapping)] = Case(torch, args.max_loras, args.rank, fan_in, slices, m, mapping)
    return cases


def _with_config(mod, cfg: dict):
    original = mod.get_lora_op_configs
    mod.get_lora_op_configs = lambda *a, **k: cfg
    return original


def compile_worker(payload: tuple) -> int:
    """Run each assigned (op, config) once on every case: Triton compiles it into its disk cache."""
    args_dict, shapes, jobs = payload
    import torch

    args = argparse.Namespace(**args_dict)
    shrink_mod, expand_mod = _modules()
    cases = _cases(torch, args, shapes)
    failed = 0
    for op, cfg in jobs:
        mod = shrink_mod if op == "shrink" else expand_mod
        original = _with_config(mod, cfg)
        try:
            for case in cases.values():
                case.run(op, mod)
            torch.cuda.synchronize()
        except Exception:  # a block shape this GPU cannot run: the timing phase skips it too
            failed += 1
        finally:
            mod.get_lora_op_configs = original
    return failed


def default_config(op: str, max_loras: int, m: int, fan_in: int, rank: int, slices: tuple[int, ...]) -> dict:
    from vllm.lora.ops.triton_ops.utils import get_lora_op_configs

    if op == "shrink":
        return dict(get_lora_op_configs("shrink", max_loras + 1, m, fan_in, rank, len(slices)))
    return dict(
        get_lora_op_configs("expand", max_loras + 1, m, max(slices), rank, len(slices), add_inputs=True)
    )


def tune(args) -> dict:
    import torch

    config = json.loads((Path(args.model_dir) / "config.json").read_text())
    shapes = layer_shapes(config)
    layers = config["num_hidden_layers"]
    gpu = torch.cuda.get_device_name().replace(" ", "_").replace("-", "_")
    t0 = time.perf_counter()

    spaces = {"shrink": list(SHRINK_SPACE), "expand": list(EXPAND_SPACE)}
    for (_name, (fan_in, slices)), m in itertools.product(shapes.items(), args.batches):
        for op in spaces:
            cfg = default_config(op, args.max_loras, m, fan_in, args.rank, slices)
            if _key(cfg) not in {_key(c) for c in spaces[op]}:
                spaces[op].append(cfg)
    jobs = [(op, cfg) for op, space in spaces.items() for cfg in space]

    # 1. compile in parallel (each process its share of the candidates)
    if args.jobs > 1:
        import multiprocessing as mp

        shares = [jobs[i :: args.jobs] for i in range(args.jobs)]
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            failed = sum(pool.map(compile_worker, [(vars(args), shapes, share) for share in shares]))
    else:
        failed = compile_worker((vars(args), shapes, jobs))
    compile_s = time.perf_counter() - t0
    print(f"tune: {len(jobs)} candidates compiled in {compile_s:.1f} s ({failed} could not run)", flush=True)

    # 2. time every candidate on every case, one process
    shrink_mod, expand_mod = _modules()
    cases = _cases(torch, args, shapes)
    timings: dict[tuple, dict[tuple, float]] = {}  # (op, layer, m) -> config key -> us (sum of mappings)
    by_key = {}
    for op, cfg in jobs:
        mod = shrink_mod if op == "shrink" else expand_mod
        by_key[(op, _key(cfg))] = cfg
        original = _with_config(mod, cfg)
        try:
            for (name, m, _mapping), case in cases.items():
                us = graph_time_us(torch, functools.partial(case.run, op, mod))
                slot = timings.setdefault((op, name, m), {})
                slot[_key(cfg)] = slot.get(_key(cfg), 0.0) + us / len(MAPPINGS)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is left out, with the reason
            print(f"tune: {op} {cfg} left out: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            for slot in timings.values():
                slot.pop(_key(cfg), None)
        finally:
            mod.get_lora_op_configs = original
    time_s = time.perf_counter() - t0 - compile_s

    files: dict[str, dict] = {"SHRINK": {}, "EXPAND_TRUE": {}, "EXPAND_FALSE": {}}
    rows = []
    per_step = {"default_us": 0.0, "tuned_us": 0.0}
    ml = str(args.max_loras + 1)  # vLLM looks the file up by len(lora_ids) = max_loras + 1
    for (op, name, m), slot in sorted(timings.items()):
        fan_in, slices = shapes[name]
        default = default_config(op, args.max_loras, m, fan_in, args.rank, slices)
        best_key = min(slot, key=slot.get)
        best = by_key[(op, best_key)]
        default_us = slot.get(_key(default))
        if op == "shrink":
            k, n = fan_in, args.rank
            targets = ["SHRINK"]
        else:
            k, n = args.rank, max(slices)
            targets = ["EXPAND_TRUE", "EXPAND_FALSE"]
        for t in targets:
            files[t].setdefault(ml, {}).setdefault(str(len(slices)), {}).setdefault(str(m), {}).setdefault(
                str(k), {}
            )[str(n)] = {kk: vv for kk, vv in best.items() if vv is not None}
        rows.append(
            {
                "op": op,
                "layer": name,
                "m": m,
                "default_us": round(default_us, 2) if default_us else None,
                "tuned_us": round(slot[best_key], 2),
                "tuned": best,
                "default": default,
            }
        )
        if m == args.step_batch and default_us:
            per_step["default_us"] += default_us * layers
            per_step["tuned_us"] += slot[best_key] * layers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, data in files.items():
        path = out / f"{gpu}_{suffix}.json"
        path.write_text(json.dumps(data, indent=1))
        written.append(str(path))
    return {
        "gpu": torch.cuda.get_device_name(),
        "model_dir": str(args.model_dir),
        "rank": args.rank,
        "max_loras": args.max_loras,
        "batches": args.batches,
        "mappings": list(MAPPINGS),
        "layers": layers,
        "candidates": {op: len(space) for op, space in spaces.items()},
        "could_not_run": failed,
        "compile_s": round(compile_s, 1),
        "time_s": round(time_s, 1),
        "files": written,
        "lora_ms_per_step_at_batch": args.step_batch,
        "lora_ms_per_step_default": round(per_step["default_us"] / 1000, 3),
        "lora_ms_per_step_tuned": round(per_step["tuned_us"] / 1000, 3),
        "rows": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="/tmp/models/llama3b-shape")
    ap.add_argument("--rank", type=int, default=16, help="the server's --max-lora-rank")
    ap.add_argument("--max-loras", type=int, default=4, help="the server's --max-loras")
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 128, 1024])
    ap.add_argument(
        "--step-batch", type=int, default=128, help="the batch whose per-step LoRA cost is reported"
    )
    ap.add_argument("--jobs", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    ap.add_argument("--out", default="/tmp/mesu/lora-configs")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    result = tune(args)
    Path(args.json).write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "rows"}
    print("RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
