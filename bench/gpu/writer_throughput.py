"""Writer throughput on the GPU: vLLM (base, one LoRA, four LoRAs mixed) against HF `generate`.

    python3 bench/gpu/writer_throughput.py bandwidth --json F            # HBM copy bandwidth (nothing else on the GPU)
    python3 bench/gpu/writer_throughput.py vllm --url http://127.0.0.1:8100 --model llama3b \
        --loras /tmp/models/llama3b-loras --json F                      # against a running server
    python3 bench/gpu/writer_throughput.py hf --model-dir /tmp/models/llama3b-shape \
        --lora /tmp/models/llama3b-loras/lora1 --json F [--save-weights DIR]

The workload is the writer's: 32 requests at once, each asking for 4 options (`n=4`) of 1024 new
tokens (`ignore_eos`, so every option is exactly 1024 tokens) for the same chapter prompt (the first
pair of the demo dataset, the writer's prompt format), i.e. 128 sequences decoding together.

vLLM (`vllm`): a warm-up batch of the full shape (64 tokens) per model and one with the four LoRAs
mixed, then `--repeats` rounds of: the base model, one LoRA for all 32 requests, four LoRAs mixed
(request i uses LoRA i mod 4), interleaved so that drift hits each alike; the median of the rounds
is reported with every round's raw numbers. Output tokens come from each response's usage. Decode
step time comes from the server's own inter-token latency histogram (/metrics), read before and
after each run, so it is the time per step with 128 sequences in flight. LoRA overhead: decode step
with the LoRA(s) / base - 1, and base tokens/s / LoRA tokens/s - 1. Time to first option: one
request alone, streamed, n=4 x 1024 tokens: first token, and first option complete.

HF (`hf`): the same shape built from config.json on the GPU with random bf16 weights, the LoRA
attached with PEFT (adapter weights kept in bf16), `generate` on the batch of 32 prompts x 4
return sequences (sampling, `min_new_tokens` = `max_new_tokens` = 1024): one cold full-length run (cuDNN
attention plans for each KV length are built then), then --hf-repeats measured runs in the same process
(the median is reported, every run beside it). A run longer than --cap-s seconds is
stopped by a stopping criterion and the tokens made so far count: rates compare, and the report says
how many tokens HF made. HF may run while an idle vLLM server holds its share of GPU memory
(run_throughput.sh's `beside` part), so that one server's rounds come before and after it.

`bandwidth`: a device-to-device copy of 4 GiB, bytes read + written over time (median of 20),
the ceiling for the roofline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from shapes import shape_numbers  # noqa: E402

REQUESTS, OPTIONS, NEW_TOKENS = 32, 4, 1024  # = 128 sequences of 1024 tokens


def prompt_messages(dataset: Path) -> list[dict]:
    row = json.loads((dataset / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return row["prompt"]


# ---------------------------------------------------------------------------------------------
# bandwidth


def bandwidth() -> dict:
    import torch

    n = 4 * 2**30 // 2
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for i in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end) / 1000)
    assert torch.equal(dst[:1024], src[:1024])
    t = statistics.median(times)
    return {
        "copy_bytes": 2 * n * 2,
        "median_s": t,
        "bandwidth_gbs": round(2 * n * 2 / t / 1e9, 1),
        "gpu": torch.cuda.get_device_name(0),
    }


# ---------------------------------------------------------------------------------------------
# vLLM client


def metric_sums(url: str, *groups: tuple[str, ...]) -> list[float]:
    """For each group of metric names, the sum of their samples on the server's /metrics (all labels)."""
    import httpx

    sums = [0.0] * len(groups)
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for i, names in enumerate(groups):
            if name in names:
                sums[i] += float(line.rsplit(" ", 1)[1])
    return sums


def _metrics_latency(url: str) -> tuple[float, float]:
    """(sum, count) of the server's inter-token latency histogram (seconds), over all labels."""
    total, count = metric_sums(
        url,
        ("vllm:inter_token_latency_seconds_sum", "vllm:time_per_output_token_seconds_sum"),
        ("vllm:inter_token_latency_seconds_count", "vllm:time_per_output_token_seconds_count"),
    )
    return total, count


SAMPLING = {"temperature": 0.8, "top_p": 0.95}  # the writer's; --no-top-p drops top_p (what its sort costs)


def _body(model: str, messages: list[dict], n: int, tokens: int, **extra) -> dict:
    """The writer's request: n options of exactly `tokens` tokens (ignore_eos), its sampling settings."""
    return {
        "model": model,
        "messages": messages,
        "n": n,
        "max_tokens": tokens,
        **SAMPLING,
        "ignore_eos": True,
        **extra,
    }


def distinct(messages: list[dict], i: int, nonce: str) -> list[dict]:
    """The prompt with its own first line, so that no KV block of it is shared with another request's:
    32 readers' own prompts rather than one prompt 32 times (the n options of one request still share it)."""
    head, *rest = messages
    return [{**head, "content": f"Reader session {nonce}-{i}.\n{head['content']}"}, *rest]


async def _batch(
    url: str,
    models: list[str],
    messages: list[dict],
    requests: int,
    n: int,
    tokens: int,
    distinct_prompts: bool = False,
) -> dict:
    import httpx

    nonce = f"{time.time_ns() % 10**9:09d}"  # per batch: no prefix-cache hits on an earlier batch either

    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=requests + 8)) as client:

        async def one(i: int) -> tuple[int, float]:
            own = distinct(messages, i, nonce) if distinct_prompts else messages
            body = _body(models[i % len(models)], own, n, tokens, seed=i)
            r = await client.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            data = r.json()
            assert len(data["choices"]) == n, data
            return data["usage"]["completion_tokens"], data["usage"]["prompt_tokens"]

        before = _metrics_latency(url)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
        after = _metrics_latency(url)
    out_tokens = sum(r[0] for r in results)
    itl_n = after[1] - before[1]
    return {
        "models": sorted(set(models)),
        "requests": requests,
        "n": n,
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "output_tokens": out_tokens,
        "prompt_tokens": results[0][1],
        "distinct_prompts": distinct_prompts,
        "tokens_per_s": round(out_tokens / wall, 1),
        "decode_step_ms": round(1000 * (after[0] - before[0]) / itl_n, 3) if itl_n else None,
    }


async def _first_option(url: str, model: str, messages: list[dict], n: int, tokens: int) -> dict:
    import httpx

    body = _body(model, messages, n, tokens, stream=True)
    first_token = first_done = None
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                    continue
                for choice in json.loads(line[6:]).get("choices", []):
                    if first_token is None and (choice.get("delta") or {}).get("content"):
                        first_token = time.perf_counter() - t0
                    if first_done is None and choice.get("finish_reason"):
                        first_done = time.perf_counter() - t0
    return {
        "model": model,
        "n": n,
        "new_tokens": tokens,
        "first_token_s": round(first_token, 4),
        "first_option_s": round(first_done, 3),
        "all_options_s": round(time.perf_counter() - t0, 3),
    }


def load_loras(url: str, folder: Path, limit: int = 4) -> list[str]:
    """Load the first `limit` adapters under `folder` into the server at run time; their names."""
    import httpx

    names = []
    for p in sorted(p for p in folder.iterdir() if (p / "adapter_config.json").is_file())[:limit]:
        r = httpx.post(
            f"{url}/v1/load_lora_adapter", json={"lora_name": p.name, "lora_path": str(p)}, timeout=120
        )
        if r.status_code != 200 and "already" not in r.text:
            raise SystemExit(f"loading {p}: HTTP {r.status_code} {r.text[:300]}")
        names.append(p.name)
    return names


def run_vllm(args) -> dict:
    url = args.url.rstrip("/")
    messages = prompt_messages(args.dataset)
    names = load_loras(url, Path(args.loras))
    result: dict = {"url": url, "loras": names, "repeats": args.repeats}
    # Warm-up at the full shape (32 requests x n=4, short): the first 128-sequence batch of a fresh
    # server compiles and allocates what later batches reuse, which made the first timed run 30 % slow.
    for model in [args.model, *names]:
        asyncio.run(_batch(url, [model], messages, REQUESTS, OPTIONS, 64))
    asyncio.run(_batch(url, names, messages, REQUESTS, OPTIONS, 64))
    runs = [("base", [args.model]), ("lora1", names[:1]), ("lora4_mixed", names)]
    for rep in range(args.repeats):  # interleaved, so drift hits every configuration alike
        for label, models in runs:
            one = asyncio.run(
                _batch(url, models, messages, REQUESTS, OPTIONS, args.new_tokens, args.distinct_prompts)
            )
            result.setdefault(label + "_runs", []).append(one)
            print(f"vllm {label} #{rep + 1}: {json.dumps(one)}", flush=True)
    for label, _ in runs:
        each = result[label + "_runs"]
        result[label] = {
            **each[0],
            "wall_s": statistics.median(r["wall_s"] for r in each),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in each),
            "decode_step_ms": statistics.median(r["decode_step_ms"] for r in each),
            "tokens_per_s_all": [r["tokens_per_s"] for r in each],
            "decode_step_ms_all": [r["decode_step_ms"] for r in each],
        }
    base = result["base"]
    for label in ("lora1", "lora4_mixed"):
        r = result[label]
        result[label + "_overhead"] = {
            "decode_step": round(r["decode_step_ms"] / base["decode_step_ms"] - 1, 4),
            "throughput": round(base["tokens_per_s"] / r["tokens_per_s"] - 1, 4),
        }
    print(
        f"vllm overhead: lora1 {result['lora1_overhead']} lora4 {result['lora4_mixed_overhead']}", flush=True
    )
    result["first_option_base"] = asyncio.run(
        _first_option(url, args.model, messages, OPTIONS, args.new_tokens)
    )
    result["first_option_lora1"] = asyncio.run(
        _first_option(url, names[0], messages, OPTIONS, args.new_tokens)
    )
    print(f"vllm first option: {result['first_option_base']} {result['first_option_lora1']}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# HF generate


HF_COLD_RUNS = 1  # full-length runs before the measured ones (see run_hf)


def hf_median(hf: dict, cold_runs: int | None = None) -> dict:
    """The median warm run by tokens/s (of two, the faster: the ratio to vLLM is not flattered).
    `cold_runs` defaults to the result's own count (0 for a result written before it was recorded)."""
    runs = hf.get("runs") or [hf["run"]]
    cold = hf.get("cold_runs", 0) if cold_runs is None else cold_runs
    warm = sorted(runs[cold:] or runs, key=lambda r: r["tokens_per_s"])
    return warm[len(warm) // 2]


def run_hf(args) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    config = AutoConfig.from_pretrained(args.model_dir)
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    init_s = time.perf_counter() - t
    if args.save_weights:  # the GRPO benchmark loads these (Unsloth and vLLM need a folder with weights)
        t = time.perf_counter()
        model.save_pretrained(args.save_weights, safe_serialization=True)
        tok.save_pretrained(args.save_weights)
        print(
            f"hf: saved random weights to {args.save_weights} in {time.perf_counter() - t:.1f} s", flush=True
        )
    if args.lora:
        model = PeftModel.from_pretrained(model, args.lora, autocast_adapter_dtype=False).eval()
    text = tok.apply_chat_template(prompt_messages(args.dataset), tokenize=False, add_generation_prompt=True)
    ids = tok([text] * REQUESTS, return_tensors="pt").to("cuda")
    prompt_len = ids["input_ids"].shape[1]

    class Deadline(StoppingCriteria):
        def __init__(self, seconds: float) -> None:
            self.end = time.perf_counter() + seconds

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), time.perf_counter() > self.end, device=input_ids.device)

    def generate(new_tokens: int, cap_s: float) -> dict:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **ids,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                num_return_sequences=OPTIONS,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tok.eos_token_id,
                stopping_criteria=[Deadline(cap_s)],
            )
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        made = out.shape[1] - prompt_len
        return {
            "sequences": out.shape[0],
            "new_tokens_each": made,
            "output_tokens": made * out.shape[0],
            "wall_s": round(wall, 3),
            "tokens_per_s": round(made * out.shape[0] / wall, 1),
            "step_ms": round(1000 * wall / max(1, made), 2),
            "capped": made < new_tokens,
        }

    generate(8, 60)  # warm-up: kernels load, the batch shape allocates
    result = {
        "model_dir": str(args.model_dir),
        "lora": args.lora,
        "init_s": round(init_s, 1),
        "prompt_tokens": prompt_len,
        "params": sum(p.numel() for p in model.parameters()),
    }
    # The first full-length run is a warm-up too: PyTorch's cuDNN attention builds (and caches) a plan
    # for every KV length it has not seen, which made that run take 2x as long per step (measured on an
    # H200: 86 ms against 40 ms, and 44 ms in a first run with the cuDNN backend off). A serving process
    # has seen those lengths, so the warm runs are HF's speed; the cold one is kept and reported beside.
    runs = [generate(args.new_tokens, args.cap_s) for _ in range(HF_COLD_RUNS + args.hf_repeats)]
    for i, one in enumerate(runs):
        print(f"hf #{i + 1}{' (cold)' if i < HF_COLD_RUNS else ''}: {json.dumps(one)}", flush=True)
    result["runs"], result["cold_runs"] = runs, HF_COLD_RUNS
    result["run"] = hf_median(result)
    result["beside_server"] = args.beside_server
    result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(f"hf: {json.dumps(result)}", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["bandwidth", "vllm", "hf"])
    ap.add_argument("--url", default="http://127.0.0.1:8100")
    ap.add_argument("--model", default="llama3b")
    ap.add_argument("--loras", default="/tmp/models/llama3b-loras")
    ap.add_argument("--model-dir", default="/tmp/models/llama3b-shape")
    ap.add_argument("--lora", default="")
    ap.add_argument("--save-weights", default="")
    ap.add_argument("--dataset", type=Path, default=Path("/tmp/mesu/datasets/demo"))
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    ap.add_argument("--cap-s", type=float, default=120.0)
    ap.add_argument("--repeats", type=int, default=3, help="vllm: runs of each configuration, interleaved")
    ap.add_argument(
        "--hf-repeats", type=int, default=1, help="hf: measured runs after the cold full-length one"
    )
    ap.add_argument(
        "--beside-server",
        default="",
        help="hf: the idle vLLM server holding GPU memory meanwhile, for the report",
    )
    ap.add_argument(
        "--distinct-prompts",
        action="store_true",
        help="vllm: each of the 32 requests its own prompt (no KV shared between requests)",
    )
    ap.add_argument("--label", default="", help="vllm: what this server is (e.g. tuned, default)")
    ap.add_argument("--server-env", default="", help="vllm: the server's LoRA settings, for the report")
    ap.add_argument(
        "--no-top-p", action="store_true", help="vllm: temperature 0.8 without top_p (no sort a step)"
    )
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.no_top_p:
        SAMPLING.pop("top_p")
    if args.what == "bandwidth":
        result = bandwidth()
    elif args.what == "vllm":
        result = run_vllm(args)
        result["label"], result["server_env"], result["sampling"] = args.label, args.server_env, SAMPLING
        result["shape"] = shape_numbers(json.loads((Path(args.model_dir) / "config.json").read_text()))
    else:
        result = run_hf(args)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
