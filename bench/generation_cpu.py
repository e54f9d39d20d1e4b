"""Benchmark: 3 options x 256 new tokens on the CPU, vllm engine (real vLLM server) vs local engine.

    .venv/bin/python bench/generation_cpu.py [--port 8012 | --base-url http://127.0.0.1:8001/v1]

Both engines, with the base model and with a random LoRA (r=8, `--lora-rank`) or a trained one (`--adapter`), same prompt and sampling. Model
load time and server start time are measured apart from generation. Prints a markdown table and
appends a dated section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from report import append_report  # noqa: E402 (bench/report.py: this script's folder is on sys.path)
from report import machine_info as base_machine_info  # noqa: E402

from tests.fixtures_training import make_random_lora  # noqa: E402
from writer.engines.base import Adapter, Sampling  # noqa: E402
from writer.engines.local import LocalEngine, LocalSettings, reset_caches  # noqa: E402
from writer.engines.vllm import VLLMEngine, VLLMSettings  # noqa: E402
from writer.engines.vllm_server import ServerStartError, start_vllm_server, stop_process_group  # noqa: E402
from writer.model_files import prepare_model  # noqa: E402

N_OPTIONS = 3
MAX_TOKENS = 256  # new tokens per option
TARGET_SECONDS = 60  # the 3 options of one request, on the default (vllm) engine
MESSAGES = [
    {"role": "system", "content": "You are a novelist. You continue stories in the author's voice."},
    {
        "role": "user",
        "content": (
            "Chapter 1. The lighthouse on Gull Rock had been dark for eleven years when Mara Quill "
            "rowed out to relight it. She carried a tin of oil, her father's logbook and a letter "
            "she had never opened.\n\nWrite the next chapter, at least 600 words, in the same voice."
        ),
    },
]


@dataclass
class Run:
    engine: str
    model: str
    run: int
    seconds: float
    tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def machine_info() -> dict[str, str]:
    import torch

    return {**base_machine_info(), "torch (app)": torch.__version__}


def timed_generations(
    engine, label: str, model: str, adapter: Adapter | None, runs: int, *, options: int, max_tokens: int
) -> list[Run]:
    results = []
    for i in range(runs):
        sampling = Sampling(max_tokens=max_tokens, temperature=0.8, top_p=0.95, seed=100 + i)
        started = time.monotonic()
        result = engine.generate(MESSAGES, n=options, sampling=sampling, adapter=adapter)
        seconds = time.monotonic() - started
        tokens = sum(c.tokens for c in result.completions)
        results.append(Run(label, model, i + 1, seconds, tokens))
        print(f"  {label} {model} run {i + 1}: {tokens} tokens in {seconds:.1f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8012, help="port of the vLLM server this script starts")
    parser.add_argument(
        "--base-url", default="", help="use this running server instead (…/v1; no start time)"
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "models" / "smollm2")
    parser.add_argument(
        "--max-lora-rank", type=int, default=64, help="the server's --max-lora-rank (VLLM_MAX_LORA_RANK)"
    )
    parser.add_argument(
        "--runs", type=int, default=2, help="generations per engine and model (the first is cold)"
    )
    parser.add_argument("--local-threads", type=int, default=int(os.environ.get("WRITER_LOCAL_THREADS", "1")))
    parser.add_argument("--options", type=int, default=N_OPTIONS, help="options per request (n)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="new tokens per option")
    parser.add_argument("--no-lora", action="store_true", help="the base model only (no random LoRA runs)")
    parser.add_argument(
        "--prompt-jsonl",
        type=Path,
        default=None,
        help="take the prompt of the first pair of a build_dataset JSONL (a real ~3,400-token story prompt) "
        "instead of the short built-in one",
    )
    parser.add_argument(
        "--no-local", action="store_true", help="the vLLM server only (skip the local engine)"
    )
    parser.add_argument(
        "--lora-rank", type=int, default=8, help="rank of the random LoRA (without --adapter)"
    )
    parser.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a trained LoRA folder (e.g. training/shipped/mesu-writer-v3) instead of the random one",
    )
    parser.add_argument(
        "--model",
        default="",
        help="a packaged model (writer.model_files.PACKAGED_MODELS: smollm2, qwen2.5-coder-0.5b, "
        "qwen2.5-coder-1.5b): its folder beside --model-dir's, prepared when missing",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    global MESSAGES
    if args.prompt_jsonl is not None:
        with args.prompt_jsonl.open(encoding="utf-8") as fh:
            MESSAGES = json.loads(fh.readline())["prompt"]
    info = machine_info()
    print("machine:", info, flush=True)
    if args.model:
        args.model_dir = args.model_dir.parent / args.model
    model_dir = prepare_model(args.model_dir, model=args.model or "smollm2")
    sizes = {"options": args.options, "max_tokens": args.max_tokens}
    work = Path(tempfile.mkdtemp(prefix="mesu-bench-"))
    adapter = None
    lora_label = f"LoRA r={args.lora_rank}"
    if args.adapter is not None:
        lora_dir = args.adapter.resolve()
        rank = json.loads((lora_dir / "adapter_config.json").read_text())["r"]
        lora_label = f"{lora_dir.name} (LoRA r={rank})"
        adapter = Adapter(name=f"bench-{lora_dir.name}-{os.getpid()}", path=lora_dir)
    elif not args.no_lora:
        lora_dir = make_random_lora(model_dir, work / "bench-lora", r=args.lora_rank, seed=0)
        adapter = Adapter(name=f"bench-lora-{os.getpid()}", path=lora_dir)  # new name: a real runtime load
    timings: dict[str, float] = {}
    runs: list[Run] = []

    # -- vllm engine on a real vLLM CPU server --------------------------------------------------
    proc = None
    if args.base_url:
        base_url = args.base_url.rstrip("/")
    else:
        print(f"starting vLLM on port {args.port} ...", flush=True)
        try:
            proc, timings["vLLM server start (to /health)"] = start_vllm_server(
                model_dir,
                args.port,
                work / "vllm.log",
                env={"VLLM_MAX_LORA_RANK": str(args.max_lora_rank)},
                timeout=300,
            )
        except ServerStartError as exc:
            sys.exit(str(exc))
        base_url = f"http://127.0.0.1:{args.port}/v1"
    try:
        vllm = VLLMEngine(
            VLLMSettings(
                base_url=base_url,
                api_key="",
                model="smollm2",
                timeout=600.0,
                max_retries=0,
                retry_backoff=0.0,
                stream=True,
                tokenizer_path=str(model_dir),
            )
        )
        runs += timed_generations(vllm, "vllm", "base", None, args.runs, **sizes)
        if adapter is not None:
            started = time.monotonic()
            vllm.ensure_adapter(adapter)
            timings["vLLM adapter load (runtime, POST /v1/load_lora_adapter)"] = time.monotonic() - started
            runs += timed_generations(vllm, "vllm", lora_label, adapter, args.runs, **sizes)
    finally:
        if proc is not None:
            stop_process_group(proc)  # the local engine runs on a quiet machine

    # -- local engine (transformers + PEFT in this process) ---------------------------------------
    if args.no_local:
        report = render(info, timings, runs, args, base_url)
        print()
        print(report)
        append_report(args.out, report)
        print(f"appended to {args.out}")
        return
    import torch

    torch.set_num_threads(args.local_threads)
    reset_caches()
    local = LocalEngine(
        LocalSettings(model_path=str(model_dir), model_name="smollm2", threads=args.local_threads)
    )
    started = time.monotonic()
    local.load()
    timings["local model load (float32, from the folder)"] = time.monotonic() - started
    runs += timed_generations(local, "local", "base", None, args.runs, **sizes)
    if adapter is not None:
        started = time.monotonic()
        local.generate(MESSAGES, n=1, sampling=Sampling(max_tokens=1), adapter=adapter)
        timings["local adapter load (PEFT, + 1 token)"] = time.monotonic() - started
        runs += timed_generations(local, "local", lora_label, adapter, args.runs, **sizes)

    report = render(info, timings, runs, args, base_url)
    print()
    print(report)
    append_report(args.out, report)
    print(f"appended to {args.out}")


def _best(runs: list[Run], engine: str, model: str) -> Run:
    return max(
        (r for r in runs if r.engine == engine and r.model == model), key=lambda r: r.tokens_per_second
    )


def render(info: dict[str, str], timings: dict[str, float], runs: list[Run], args, base_url: str) -> str:
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"## {now}: {args.options} option(s) x {args.max_tokens} new tokens, vllm vs local engine, "
        f"{args.model_dir.name}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".",
        f"vllm engine: vLLM CPU server ({'started by the script' if not args.base_url else base_url}, "
        f"--max-lora-rank {args.max_lora_rank if not args.base_url else 'as started'}), bfloat16, "
        f"streaming, one request with n={args.options}. local engine: transformers + PEFT, float32, "
        f"torch threads {args.local_threads}. Sampling: temperature 0.8, top_p 0.95, seed per run; options "
        f"may end before {args.max_tokens} tokens, so tokens/s uses the tokens actually made. Prompt: "
        + (
            f"the first pair of {args.prompt_jsonl} ({sum(len(m['content']) for m in MESSAGES)} characters)"
            if args.prompt_jsonl
            else "the built-in short one"
        )
        + f"; load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| engine | model | run | wall s | new tokens | tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.engine} | {r.model} | {r.run}{' (cold)' if r.run == 1 else ''} | {r.seconds:.1f} | "
            f"{r.tokens} | {r.tokens_per_second:.1f} |"
        )
    lines += ["", "| one-off cost | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in timings.items()]
    lines.append("")
    for model in dict.fromkeys(r.model for r in runs):  # base, and the LoRA unless --no-lora
        v = _best(runs, "vllm", model)
        if not any(r.engine == "local" for r in runs):  # --no-local
            base = _best(runs, "vllm", "base")
            lines.append(
                f"- {model}: vllm {v.tokens_per_second:.1f} tokens/s (best run)"
                + (
                    f", {base.tokens_per_second / v.tokens_per_second:.2f}x the base's time a token."
                    if model != "base"
                    else "."
                )
            )
            continue
        loc = _best(runs, "local", model)
        lines.append(
            f"- {model}: vllm {v.tokens_per_second:.1f} tokens/s vs local {loc.tokens_per_second:.1f} "
            f"tokens/s (best runs): **{v.tokens_per_second / loc.tokens_per_second:.1f}x**."
        )
    first = next(r for r in runs if r.engine == "vllm" and r.model == "base" and r.run == 1)
    worst = max(r.seconds for r in runs if r.engine == "vllm")
    verdict = "met" if worst <= TARGET_SECONDS else "NOT met"
    lines.append(
        f"- Target (3 options in <= {TARGET_SECONDS} s after the request starts, default vllm engine): "
        f"**{verdict}**: first request {first.seconds:.1f} s, slowest vllm request {worst:.1f} s"
        + (
            f"; from a cold server start {timings['vLLM server start (to /health)'] + first.seconds:.1f} s."
            if "vLLM server start (to /health)" in timings
            else "."
        )
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
