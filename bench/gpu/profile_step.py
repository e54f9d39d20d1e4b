"""Where a decode step's time goes: a torch-profiler window in the middle of the writer's batch, summed.

    python3 bench/gpu/profile_step.py run --url http://127.0.0.1:8100 --model lora1 \
        --trace-dir /tmp/mesu/profile --json F       # against a server started with --profiler-config (below)
    python3 bench/gpu/profile_step.py summarize --trace-dir DIR --json F       # traces already written

The server must be started with `--profiler-config {"profiler":"torch","torch_profiler_dir":"DIR"}` (vLLM's
/start_profile and /stop_profile then exist). `run` loads the adapters under --loras, warms up with a
short batch of the full shape, sends the writer's batch (32 requests x n=4, the
throughput benchmark's prompt and sampling, --new-tokens each), waits --delay-s so that the batch is
decoding at a context near the benchmark's mean, records --window-s with /start_profile .. /stop_profile,
lets the batch finish, and summarises the worker's trace.

`summarize` reads the newest trace file(s) the worker wrote (*.pt.trace.json[.gz]) and sums the device
events (kernels, memcpy, memset; with a CPU-only trace, the `cpu_op` events instead): the window's span,
the time some kernel was running (the union of their intervals: what is left is the GPU idle between
kernels), the sum of their self times (nested CPU ops count once) by category (attention, LoRA, GEMM,
sampling, the rest) and the top names. Decode steps in the window come from the server's inter-token-latency counter read
before and after it, or, better, from the kernels: with --layers, the KV-cache writes in the window (one
`reshape_and_cache` per layer per step) / layers. The counter lags the window (the front end
reads it from batched outputs) and read 54 steps where the kernels show 43 in a GPU window, so the kernel
count wins where there is one; the per-step figures are (time in the window) / (steps in the window).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from writer_throughput import OPTIONS, REQUESTS, _batch, _metrics_latency, load_loras, prompt_messages  # noqa: E402

DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
# First match wins; names are lower-cased. LoRA before GEMM: vLLM's LoRA kernels are Triton GEMMs.
CATEGORIES = [
    ("lora", re.compile(r"lora|sgmv|bgmv|punica|_shrink|_expand")),
    ("attention", re.compile(r"flash|fmha|attn|attention|paged|reshape_and_cache|kv_cache")),
    ("sampling", re.compile(r"sort|topk|top_k|top_p|softmax|exponential|multinomial|argmax|sampl|gumbel")),
    (
        "gemm",
        re.compile(
            r"gemm|cutlass|nvjet|cublas|matmul|sm90_xmma|wgmma|onednn_mm|aten::(mm|addmm|bmm|einsum)\b"
        ),
    ),
    ("norm/rope/activation", re.compile(r"rms|norm|rotary|rope|silu|act_and_mul|gelu")),
    ("memcpy/memset", re.compile(r"memcpy|memset")),
]


def category(name: str) -> str:
    low = name.lower()
    return next((label for label, pattern in CATEGORIES if pattern.search(low)), "other")


def _short(name: str, limit: int = 110) -> str:
    """A kernel's name without its template arguments, cut to `limit` characters."""
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    text = "".join(out).strip() or name
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_trace(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    return data["traceEvents"] if isinstance(data, dict) else data


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    start = None
    for s, e in sorted(intervals):
        if end is None or s > end:
            if end is not None:
                total += end - start
            start, end = s, e
        else:
            end = max(end, e)
    if end is not None:
        total += end - start
    return total


def self_times(events: list[dict]) -> list[float]:
    """Each event's duration less the durations of the events directly inside it on the same thread
    (CPU ops nest: a vLLM op holds the aten ops it calls; kernels on one stream do not overlap)."""
    own = [float(e["dur"]) for e in events]
    by_thread: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    for indices in by_thread.values():
        indices.sort(key=lambda i: (float(events[i]["ts"]), -float(events[i]["dur"])))
        stack: list[int] = []
        for i in indices:
            start = float(events[i]["ts"])
            while stack and float(events[stack[-1]]["ts"]) + float(events[stack[-1]]["dur"]) <= start:
                stack.pop()
            if stack:
                own[stack[-1]] -= float(events[i]["dur"])
            stack.append(i)
    return [max(0.0, t) for t in own]


def trace_files(trace_dir: Path, since: float = 0.0) -> list[Path]:
    """The worker traces written after `since` (epoch seconds); the front end's CPU trace is left out."""
    found = [
        p
        for p in Path(trace_dir).rglob("*.pt.trace.json*")
        if p.stat().st_mtime >= since and "async_llm" not in p.name.lower()
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)


KV_WRITE = re.compile(r"reshape_and_cache")  # the KV-cache write: once per attention layer per step


def steps_from_kernels(events: list[dict], layers: int | None) -> float | None:
    """Decode steps in the window from the KV-cache writes (one per layer per step), or None."""
    if not layers:
        return None
    writes = sum(1 for e in events if KV_WRITE.search(e["name"]))
    return round(writes / layers, 1) if writes >= layers else None


def summarize(
    files: list[Path], steps: float | None = None, top: int = 25, layers: int | None = None
) -> dict:
    events = [e for f in files for e in _load_trace(f) if e.get("ph") == "X" and "dur" in e]
    device = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    source = "device" if device else "cpu_op"
    chosen = device or [e for e in events if e.get("cat") == "cpu_op"]
    if not chosen:
        raise SystemExit(f"no device or cpu_op events in {[str(f) for f in files]}")
    steps_metrics, kernel_steps = steps, steps_from_kernels(chosen, layers)
    steps = kernel_steps or steps_metrics
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in chosen]
    window_us = max(e for _, e in spans) - min(s for s, _ in spans)
    busy_us = _union_us(spans)
    by_cat: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e, own in zip(chosen, self_times(chosen), strict=True):
        by_cat[category(e["name"])] += own
        row = by_name[_short(e["name"])]
        row[0] += own
        row[1] += 1
    summed_us = sum(by_cat.values())
    per_step = (lambda us: round(us / steps / 1000, 3)) if steps else (lambda us: None)
    return {
        "files": [str(f) for f in files],
        "events": source,
        "window_ms": round(window_us / 1000, 2),
        "busy_ms": round(busy_us / 1000, 2),
        "busy_fraction": round(busy_us / window_us, 3) if window_us else None,
        "summed_ms": round(summed_us / 1000, 2),
        "steps": steps,
        "steps_from": "kernels" if kernel_steps else ("metrics" if steps_metrics else None),
        "steps_from_metrics": steps_metrics,
        "window_ms_per_step": per_step(window_us),
        "busy_ms_per_step": per_step(busy_us),
        "by_category": {
            k: {"ms": round(v / 1000, 2), "share": round(v / summed_us, 3), "ms_per_step": per_step(v)}
            for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])
        },
        "top": [
            {
                "name": n,
                "category": category(n),
                "ms": round(v[0] / 1000, 2),
                "calls": v[1],
                "ms_per_step": per_step(v[0]),
            }
            for n, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
        ],
    }


def run(args) -> dict:
    import httpx

    root = args.url.rstrip("/")
    messages = prompt_messages(args.dataset)
    models = [m for m in args.model.split(",") if m]
    if args.loras:
        load_loras(root, args.loras)
    # Warm-up at the full shape, short: what a fresh server compiles or allocates on its first batch.
    asyncio.run(_batch(root, models, messages, args.requests, OPTIONS, 16))
    result: dict = {}

    def batch() -> None:
        t = time.perf_counter()
        result["batch"] = asyncio.run(_batch(root, models, messages, args.requests, OPTIONS, args.new_tokens))
        result["batch"]["elapsed_s"] = round(time.perf_counter() - t, 2)

    started = time.time()
    worker = threading.Thread(target=batch)
    worker.start()
    time.sleep(args.delay_s)
    before = _metrics_latency(root)
    r = httpx.post(f"{root}/start_profile", timeout=120)
    if r.status_code != 200:
        raise SystemExit(
            f"/start_profile: HTTP {r.status_code} {r.text[:300]} (start the server with --profiler-config)"
        )
    time.sleep(args.window_s)
    httpx.post(f"{root}/stop_profile", timeout=600).raise_for_status()
    after = _metrics_latency(root)
    worker.join()
    # Inter-token latencies observed in the window / sequences decoding = decode steps in the window.
    sequences = args.requests * OPTIONS
    steps = round((after[1] - before[1]) / sequences, 1) if after[1] > before[1] else None
    deadline = time.time() + args.wait_s
    files: list[Path] = []
    while time.time() < deadline and not files:  # the worker writes its trace after /stop_profile returns
        files = trace_files(Path(args.trace_dir), since=started)
        time.sleep(1)
    if not files:
        raise SystemExit(f"no trace under {args.trace_dir} after {args.wait_s} s")
    time.sleep(2)  # a file still being written: give it a moment
    out = summarize(
        trace_files(Path(args.trace_dir), since=started), steps=steps, top=args.top, layers=args.layers
    )
    out.update(
        model=args.model,
        delay_s=args.delay_s,
        window_s=args.window_s,
        step_ms_from_metrics=round(1000 * (after[0] - before[0]) / (after[1] - before[1]), 3)
        if after[1] > before[1]
        else None,
        batch=result.get("batch"),
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "summarize"])
    ap.add_argument("--url", default="http://127.0.0.1:8100")
    ap.add_argument("--model", default="lora1", help="served model or adapter name(s), comma-separated")
    ap.add_argument("--trace-dir", type=Path, required=True)
    ap.add_argument("--loras", type=Path, default=None, help="run: load the adapters under this folder first")
    ap.add_argument("--dataset", type=Path, default=Path("/tmp/mesu/datasets/demo"))
    ap.add_argument("--requests", type=int, default=REQUESTS)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--delay-s", type=float, default=4.0, help="into the batch before the window opens")
    ap.add_argument("--window-s", type=float, default=0.3)
    ap.add_argument("--wait-s", type=float, default=120.0, help="for the trace file after /stop_profile")
    ap.add_argument("--steps", type=float, default=None, help="summarize: decode steps in the window")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--layers",
        type=int,
        default=None,
        help="attention layers of the model: count steps by its KV-cache writes",
    )
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.what == "run":
        result = run(args)
    else:
        files = trace_files(args.trace_dir)
        if not files:
            raise SystemExit(f"no *.pt.trace.json[.gz] under {args.trace_dir}")
        result = summarize(files, steps=args.steps, top=args.top, layers=args.layers)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps({k: v for k, v in result.items() if k != "top"})[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
