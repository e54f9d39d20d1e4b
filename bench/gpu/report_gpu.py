"""Write the GPU benchmark sections of docs/benchmarks.md from the JSON results a GPU run brought back.

    python3 bench/gpu/report_gpu.py --results docs/gpu-logs/run3 [--date "2026-11-27 18:05 UTC"] [--title ", run 3"] [--no-report]

Reads what bench/gpu/run_throughput.sh and run_grpo.sh write (tp_bandwidth.json, tp_vllm_<server>.json,
tp_hf.json, tp_tune.json, grpo_*.json, tp_profile_*.json) plus machine.txt and versions.txt, computes the ratios the issue
asks for (each from numbers measured side by side in one run) and appends its sections through
bench/report.py. Runs on any machine: it only reads JSON. (Session 2's single-server layout,
docs/gpu-logs/tp_vllm.json, was reported once in docs/benchmarks.md; this script no longer reads it.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from report import append_report  # noqa: E402

sys.path.insert(0, str(HERE))
from profile_step import KV_WRITE  # noqa: E402
from writer_throughput import hf_median  # noqa: E402


def load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.is_file() else None


def machine(results: Path) -> str:
    lines = (results / "machine.txt").read_text().splitlines() if (results / "machine.txt").is_file() else []
    gpu = lines[0] if lines else "unknown GPU"
    py = lines[1] if len(lines) > 1 else ""
    versions = (
        (results / "versions.txt").read_text().split("\n") if (results / "versions.txt").is_file() else []
    )
    vers = ", ".join(v for v in versions if v.strip() and not v.endswith(" -"))
    return f"GPU: {gpu} (name, memory, driver); Python, torch, CUDA: {py}. Packages: {vers}."


SERVER_TEXT = {
    "default": "vLLM's default LoRA kernel configs, one CUDA stream (what the writer got before)",
    "tuned": "kernel configs tuned for this GPU and shape (`tune_lora.py`, `VLLM_TUNED_CONFIG_FOLDER`) + "
    "`VLLM_LORA_ENABLE_DUAL_STREAM=1`",
    "tuned_one_stream": "tuned kernel configs, one CUDA stream",
    "tuned_specialize": "tuned kernel configs + dual stream + `--specialize-active-lora`",
    "tuned_fp8kv": "tuned kernel configs + dual stream + `--kv-cache-dtype fp8` (KV cache in FP8 E4M3, scale 1: "
    "half the KV bytes a step, slightly different numbers)",
    "tuned_no_top_p": "the same tuned server as **tuned**, requests without top_p (temperature 0.8 only): no "
    "top-p sort of the logits a step",
    "tuned_after": "the same tuned server as **tuned**, measured again after the HF runs",
    "tuned_distinct": "the same tuned server as **tuned**, each of the 32 requests with a prompt of its own "
    "(`--distinct-prompts`: a first line of its own, 16 tokens longer; no KV block shared between requests, "
    "the n=4 options of one request still share theirs)",
    "tuned_fp8w": "tuned kernel configs + dual stream + `--quantization fp8` (base weights in FP8 with dynamic "
    "scales, LoRA in bf16: half the weight bytes a step)",
    "tuned_triton": "tuned kernel configs + dual stream + `--attention-backend TRITON_ATTN` (vLLM's Triton "
    "attention instead of FlashAttention 3)",
    "tuned_cascade": "tuned kernel configs + dual stream + `--no-disable-cascade-attn` (cascade attention "
    "allowed: the prompt all 32 requests share attended once)",
}


def _roofline(shape: dict, run: dict, step_ms: float, bw: dict, server_env: str = "") -> str:
    batch = run["requests"] * run["n"]
    ctx = run["prompt_tokens"] + run["new_tokens"] / 2  # mean context over the decode steps
    kv_token = shape["kv_bytes_per_token"] // (2 if "--kv-cache-dtype fp8" in server_env else 1)
    step_bytes = shape["weight_bytes_per_step"] + batch * ctx * kv_token
    floor_ms = step_bytes / (bw["bandwidth_gbs"] * 1e9) * 1e3
    return (
        f"{step_bytes / 1e9:.2f} GB a step (weights {shape['weight_bytes_per_step'] / 1e9:.2f} GB + KV "
        f"{kv_token:,} B/token x {batch} sequences x {ctx:.0f} tokens mean context) over the "
        f"measured copy bandwidth {bw['bandwidth_gbs']:,.0f} GB/s = {floor_ms:.2f} ms; measured {step_ms:.2f} ms: "
        f"**{floor_ms / step_ms:.2f} of the roofline** (goal within 2x, >= 0.5: "
        f"**{'met' if floor_ms / step_ms >= 0.5 else 'not met'}**)"
    )


HF_VARIANT_TEXT = {
    "alone": "no vLLM server on the GPU",
    "expandable": "`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`",
    "no_cudnn_sdp": "cuDNN attention off (`torch.backends.cuda.enable_cudnn_sdp(False)`)",
}


def _hf_runs(hf: dict, cold_runs: int) -> tuple[list[str], list[str]]:
    """(tokens/s of each run, step ms of each run), the unmeasured first full-length runs marked."""
    runs = hf.get("runs") or [hf["run"]]
    mark = [" first" if i < cold_runs else "" for i in range(len(runs))]
    return (
        [f"{r['tokens_per_s']:,.0f}{m}" for r, m in zip(runs, mark, strict=True)],
        [f"{r['step_ms']:.2f}{m}" for r, m in zip(runs, mark, strict=True)],
    )


def throughput_servers_section(
    results: Path, date: str, title: str = "", hf_cold_runs: int | None = None
) -> str | None:
    """The run_throughput.sh layout with one tp_vllm_<server>.json per server configuration.
    hf_cold_runs: how many leading HF runs were cold, for results written before tp_hf.json said so."""
    servers = {
        p.stem.removeprefix("tp_vllm_"): json.loads(p.read_text())
        for p in sorted(results.glob("tp_vllm_*.json"))
    }
    if not servers:
        return None
    hf, bw, tune = (
        load(results, "tp_hf.json"),
        load(results, "tp_bandwidth.json"),
        load(results, "tp_tune.json"),
    )
    variants = {
        p.stem.removeprefix("tp_hf_"): json.loads(p.read_text()) for p in sorted(results.glob("tp_hf_*.json"))
    }

    def cold_of(h: dict) -> int:
        return h.get("cold_runs", hf_cold_runs or 0)

    hf_run = hf_median(hf, cold_of(hf)) if hf else None
    beside = bool(hf and hf.get("beside_server"))
    any_server = next(iter(servers.values()))
    # run_throughput.sh's GPU_UTIL (0.8; the beside part passes its own in the server's env)
    gpu_util = next(iter(re.findall(r"GPU_UTIL=([\d.]+)", any_server.get("server_env", ""))), "0.8")
    shape = any_server.get("shape") or {}
    out = [
        f"## {date}: GPU writer throughput, vLLM (tuned LoRA kernels) vs HF generate, Llama-3.2-3B shape{title}\n"
    ]
    out.append(machine(results) + "\n")
    out.append(
        f"Model: the Llama-3.2-3B shape with SmolLM2's tokenizer ({shape.get('params', 0) / 1e9:.2f} B parameters, "
        "random bf16 weights: vLLM `--load-format dummy`, HF built from config.json on the GPU). LoRAs: 4 random "
        "rank-16 adapters on q/k/v/o/gate/up/down, loaded at run time. Server flags: `--enable-lora "
        "--max-lora-rank 16 --max-loras 4 --max-num-seqs 256 --max-model-len 4096`, CUDA graphs and torch.compile "
        f"on, GPU memory {gpu_util}; the server configurations below differ only as said. "
        "Workload: 32 concurrent chat "
        f"requests x `n=4` x 1024 new tokens (`ignore_eos`) = 128 sequences, prompt {any_server['base']['prompt_tokens']} "
        f"tokens. Per server: a full-shape warm-up per model, then {any_server.get('repeats', 3)} rounds of base / "
        "one LoRA / four LoRAs mixed, "
        "interleaved; medians (all rounds in brackets). Decode step = the server's inter-token latency. "
        + (
            f"`bench/gpu/run_throughput.sh` part `beside`: the tuned server measured, then HF `generate` "
            f"{len(hf.get('runs') or [1])} times in one process while that server idled holding its GPU memory "
            "(so nothing was restarted between them), then the same server measured again.\n"
            if beside
            else "`bench/gpu/run_throughput.sh`, servers one after another on the GPU"
            + (", then HF alone.\n" if hf else "; no HF run in this one.\n")
        )
    )
    out.append(
        "| server | run | tokens/s (median; rounds) | decode step ms (median; rounds) | LoRA overhead: step / tokens/s |"
    )
    out.append("|---|---|---|---|---|")
    for name, v in servers.items():
        for label in ("base", "lora1", "lora4_mixed"):
            r = v[label]
            over = v.get(f"{label}_overhead")
            over_txt = f"{over['decode_step']:+.1%} / {over['throughput']:+.1%}" if over else ""
            out.append(
                f"| {name} | {label} | {r['tokens_per_s']:,.0f} ({', '.join(f'{x:,.0f}' for x in r['tokens_per_s_all'])}) | "
                f"{r['decode_step_ms']:.2f} ({', '.join(f'{x:.2f}' for x in r['decode_step_ms_all'])}) | {over_txt} |"
            )
    for name, h in (({"": hf} if hf else {}) | variants).items():
        runs = h.get("runs") or [h["run"]]
        capped = "".join(
            f", run {i + 1} stopped at {r['new_tokens_each']} tokens by the {r['wall_s']:.0f} s cap"
            for i, r in enumerate(runs)
            if r.get("capped")
        )
        tps, steps = _hf_runs(h, cold_of(h))
        median = hf_median(h, cold_of(h))
        label = "HF generate + PEFT LoRA (bf16, SDPA, 32 prompts x 4 return sequences)" + (
            f", {HF_VARIANT_TEXT.get(name, name)}" if name else ""
        )
        out.append(
            f"| {label} | lora1 | {median['tokens_per_s']:,.0f} ({', '.join(tps)}) | "
            f"{median['step_ms']:.2f} ({', '.join(steps)}; wall / tokens{capped}) | |"
        )
    out.append("")
    notes = [
        "- Server configurations: "
        + "; ".join(f"**{k}**: {SERVER_TEXT.get(k, v.get('server_env', ''))}" for k, v in servers.items())
        + "."
    ]
    for name, v in servers.items():
        o1, o4 = v["lora1_overhead"], v["lora4_mixed_overhead"]
        ok = o1["decode_step"] <= 0.15 and o1["throughput"] <= 0.15
        notes.append(
            f"- {name}: LoRA overhead against the base on the same server, one LoRA {o1['decode_step']:+.1%} per "
            f"decode step ({o1['throughput']:+.1%} tokens/s), four mixed {o4['decode_step']:+.1%} ({o4['throughput']:+.1%}). "
            f"Goal <= 15 %: **{'met' if ok else 'not met'}**."
        )
        if hf_run:
            ratio = v["lora1"]["tokens_per_s"] / hf_run["tokens_per_s"]
            cold = (hf.get("runs") or [])[: cold_of(hf)]
            notes.append(
                f"- {name} vs HF `generate` ({'warm' if cold else 'its first full-length run, i.e. cold'}) with the "
                f"same LoRA: **{ratio:.1f}x** the tokens/s "
                f"({v['lora1']['tokens_per_s']:,.0f} vs {hf_run['tokens_per_s']:,.0f}; "
                f"{hf_run['step_ms'] / v['lora1']['decode_step_ms']:.1f}x per decode step); four LoRAs mixed "
                f"{v['lora4_mixed']['tokens_per_s'] / hf_run['tokens_per_s']:.1f}x; base "
                f"{v['base']['tokens_per_s'] / hf_run['tokens_per_s']:.1f}x"
                + "".join(
                    f"; against HF's first full-length run (cuDNN attention plans built as new lengths come) "
                    f"{v['lora1']['tokens_per_s'] / r['tokens_per_s']:.1f}x"
                    for r in cold
                )
                + ". Goal >= 10x with the LoRA: "
                f"**{'met' if ratio >= 10 else 'not met'}**."
            )
        if bw and shape:
            notes.append(
                f"- {name}, base at batch 128: "
                + _roofline(shape, v["base"], v["base"]["decode_step_ms"], bw, v.get("server_env", ""))
                + "."
            )
        fb, fl = v["first_option_base"], v["first_option_lora1"]
        notes.append(
            f"- {name}, one request alone (n=4 x 1024 tokens, streamed): first token {fb['first_token_s'] * 1000:.0f} ms, "
            f"first option {fb['first_option_s']:.2f} s (base); through a LoRA {fl['first_token_s'] * 1000:.0f} ms and "
            f"{fl['first_option_s']:.2f} s."
        )
    if tune:
        notes.append(
            f"- Kernel tuning (`bench/gpu/tune_lora.py`, {tune['candidates']['shrink']} shrink and "
            f"{tune['candidates']['expand']} expand candidates incl. vLLM's defaults, each timed inside a CUDA graph on "
            f"the model's 4 layer shapes x batches {tune['batches']} x 2 LoRA mappings; {tune['compile_s']:.0f} s of "
            f"compiling in parallel processes, {tune['time_s']:.0f} s of timing): the LoRA kernels of one "
            f"decode step at batch {tune['lora_ms_per_step_at_batch']} take {tune['lora_ms_per_step_tuned']:.2f} ms "
            f"tuned against {tune['lora_ms_per_step_default']:.2f} ms with the defaults (28 layers x shrink + expand of "
            "q/k/v, o, gate/up, down). The files are in `bench/gpu/lora-configs/`."
        )
    out.extend(notes)
    return "\n".join(out) + "\n"


def grpo_section(results: Path, date: str, title: str = "") -> str | None:
    runs = {
        p.stem.removeprefix("grpo_"): json.loads(p.read_text()) for p in sorted(results.glob("grpo_*.json"))
    }
    if not runs:
        return None
    any_run = next(iter(runs.values()))
    out = [f"## {date}: GPU GRPO step time, TRL + PEFT vs Unsloth vs TRL with colocated vLLM{title}\n"]
    out.append(machine(results) + "\n")
    out.append(
        "Job: `training.trainer.run_grpo` (what `train_grpo` and the `gpu` worker run), one process per run, one after "
        f"another on the same GPU (`bench/gpu/run_grpo.sh`). Same `GRPOJobConfig` for all: {any_run['completions_per_step']} "
        f"completions per step (2 prompts x 8 generations, per-device batch 8 x gradient accumulation 2) of "
        f"{any_run['completion_tokens']} tokens, LoRA r={any_run['lora_rank']} on q/k/v/o/gate/up/down, bf16, "
        "adamw_torch_fused, weight decay 0.1, loss bnpo, beta 0, gradient checkpointing on (Unsloth's own), 4 steps; "
        "only backend and use_vllm differ. Unsloth runs with `fast_inference=True` (its in-process vLLM generates; "
        "GPU share 0.35). Data: the demo dataset (build_dataset on samples/, 9 pairs, prompts within 960 tokens). "
        "Rewards: format_exact, format_partial, rougeL (CPU) and BERTScore on the GPU (`REWARD_DEVICE=cuda`, "
        "MiniLM-L6's architecture and tokenizer with random weights: the weights do not change its speed); each "
        "reward call is timed. The 3B shape has random weights saved by the throughput benchmark.\n"
    )
    out.append(
        "| run | backend | step seconds (1, 2, 3, 4) | mean of steps 2-4 s | vs TRL + PEFT, same model | rewards s/step (2-4) | rewards share | process s | peak GPU GiB |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for label, r in runs.items():
        model = label.split("_")[0]
        trl = runs.get(f"{model}_trl")
        speed = (
            f"{trl['mean_step_s_after_first'] / r['mean_step_s_after_first']:.2f}x"
            if trl and r is not trl
            else "1.00x"
            if r is trl
            else ""
        )
        later = r["reward_s_per_step"][1:]
        backend = r["backend"] + (" + vLLM" if r["use_vllm"] else "")
        out.append(
            f"| {label} | {backend} | {', '.join(f'{s:.2f}' for s in r['step_s'])} | {r['mean_step_s_after_first']:.2f} | "
            f"{speed} | {sum(later) / len(later):.2f} | {r['reward_share_after_first']:.1%} | {r['total_s']:.0f} | {r['peak_gpu_gib']} |"
        )
    out.append("")
    notes = []
    for model, name in (("3b", "the 3B shape"), ("smollm2", "SmolLM2-135M")):
        trl = runs.get(f"{model}_trl")
        others = {k: r for k, r in runs.items() if k.startswith(model + "_") and r is not trl}
        if not (trl and others):
            continue
        parts = []
        for label, r in others.items():
            ratio = trl["mean_step_s_after_first"] / r["mean_step_s_after_first"]
            parts.append(
                f"{label} {r['mean_step_s_after_first']:.2f} s/step = **{ratio:.1f}x** (first step {r['step_s'][0]:.1f} s, "
                f"process {r['total_s']:.0f} s)"
            )
        best = max(trl["mean_step_s_after_first"] / r["mean_step_s_after_first"] for r in others.values())
        goal = (
            f" Goal: the fastest path >= 2x plain TRL at the 3B shape: **{'met' if best >= 2 else 'not met'}**."
            if model == "3b"
            else ""
        )
        notes.append(
            f"- {name}: TRL + PEFT {trl['mean_step_s_after_first']:.2f} s/step (process {trl['total_s']:.0f} s); "
            + "; ".join(parts)
            + "."
            + goal
        )
    shares = {label: r["reward_share_after_first"] for label, r in runs.items()}
    over = {k: v for k, v in shares.items() if v > 0.10}
    split = all("reward_s_by_name_after_first" in r for r in runs.values())
    notes.append(
        "- Rewards' share of a step (steps 2-4): "
        + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
        + ". Goal <= 10 %: "
        + (
            "**met**."
            if not over
            else "**not met** (" + ", ".join(f"{k} {v:.1%}" for k, v in over.items()) + ")."
        )
        + (
            " Reward seconds by name over steps 2-4: "
            if split
            else " Reward seconds by name over all 4 steps (the first step's include loading the models): "
        )
        + "; ".join(
            f"{label}: "
            + ", ".join(
                f"{k} {v:.2f} s"
                for k, v in r.get("reward_s_by_name_after_first" if split else "reward_s_by_name").items()
                if v >= 0.01
            )
            for label, r in runs.items()
        )
        + "."
    )
    command = _train_grpo_runs(results)
    if command:
        notes.append(command)
    missing = [m for m in ("3b_trl_vllm", "smollm2_trl_vllm", "smollm2_unsloth") if m not in runs]
    if missing and not split:
        notes.append(
            f"- Not measured (the session's 30 minutes of GPU time ran out): {', '.join(missing)} "
            "(TRL with `use_vllm=True` colocated; Unsloth without fast_inference, the shared recipe's 2.2x case)."
        )
    notes.append(
        "- Every run's LoRA matrices were non-zero after training and the sampled base weights unchanged "
        "(" + ", ".join(f"{k}: {r['lora_nonzero']}/{r['base_unchanged']}" for k, r in runs.items()) + ")."
    )
    out.extend(notes)
    return "\n".join(out) + "\n"


def _command_json(path: Path) -> dict | None:
    """train_grpo's JSON (stdout); output printed before it (Unsloth's banners, before the fix that
    points stdout at stderr during training) is skipped."""
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line == "{"), None)
    return None if start is None else json.loads("\n".join(lines[start:]))


def _train_grpo_runs(results: Path) -> str:
    trl, fast = _command_json(results / "train_trl.json"), _command_json(results / "train_unsloth_vllm.json")
    if not (trl and fast):
        return ""

    def later(run: dict) -> float:
        steps = [log["seconds"] for log in run["step_logs"]][1:]
        return sum(steps) / len(steps)

    def steps(run: dict) -> str:
        return ", ".join(f"{log['seconds']:.2f}" for log in run["step_logs"])

    return (
        "- Through the `train_grpo` command itself (scripts/gpu/host_check.sh; SmolLM2, 8 completions a step = 2 "
        "prompts x 4 generations of 256 tokens, LoRA r=16, rewards format_exact, format_partial, bleu, rouge1, "
        f"rougeL, the vLLM writer server holding 0.25 of the GPU meanwhile): TRL + PEFT steps {steps(trl)} s, "
        f"Unsloth + vLLM {steps(fast)} s: **{later(trl) / later(fast):.1f}x** on steps 2-4."
    )


LAYERS = 28  # the Llama-3.2-3B shape's attention layers


def _profile_steps(prof: dict, layers: int = LAYERS) -> tuple[float, str]:
    """Decode steps in a profile window: the KV-cache writes / layers (profile_step.py --layers records it;
    for results written before, the write kernel's call count in the top list), else the server's counter."""
    if prof.get("steps_from") == "kernels":
        return prof["steps"], "KV-cache writes / layers"
    writes = [t["calls"] for t in prof.get("top", []) if KV_WRITE.search(t["name"])]
    if writes and writes[0] >= layers:
        return round(writes[0] / layers, 1), "KV-cache writes / layers"
    return prof["steps"], "the server's inter-token-latency counter"


def profile_section(results: Path, date: str, title: str = "") -> str | None:
    """run_throughput.sh part `profile`: where a decode step's GPU time goes (tp_profile_<model>.json)."""
    profiles = {
        p.stem.removeprefix("tp_profile_"): json.loads(p.read_text())
        for p in sorted(results.glob("tp_profile_*.json"))
    }
    if not profiles:
        return None
    steps = {name: _profile_steps(prof) for name, prof in profiles.items()}
    out = [f"## {date}: where a decode step goes on the GPU, Llama-3.2-3B shape, 128 sequences{title}\n"]
    out.append(machine(results) + "\n")
    out.append(
        "`bench/gpu/run_throughput.sh` part `profile`: the tuned server (tuned LoRA kernels, dual stream, "
        "FlashAttention 3, CUDA graphs) started with vLLM's torch profiler; `bench/gpu/profile_step.py` sends the "
        "benchmark's batch (32 requests x n=4 x 1024 tokens), opens a "
        + ", ".join(
            f"{p['window_s']} s window {p['delay_s']:.0f} s into the {n} batch" for n, p in profiles.items()
        )
        + ", and sums the device kernels' own times by category. Steps in the window: "
        + "; ".join(f"{n} {steps[n][0]:g} ({steps[n][1]})" for n in profiles)
        + ". The profiler slows the batch (its own decode step is given below), so the shares matter more than "
        "the absolute times.\n"
    )
    names = list(profiles)
    out.append("| category | " + " | ".join(f"{n}: ms a step (share)" for n in names) + " |")
    out.append("|---|" + "---|" * len(names))
    cats = sorted(
        {c for p in profiles.values() for c in p["by_category"]},
        key=lambda c: -max(p["by_category"].get(c, {}).get("ms", 0) for p in profiles.values()),
    )
    for c in cats:
        cells = []
        for n in names:
            v = profiles[n]["by_category"].get(c)
            cells.append(f"{v['ms'] / steps[n][0]:.2f} ({v['share']:.0%})" if v else "")
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    out.append(
        "| GPU busy (some kernel running) | "
        + " | ".join(
            f"{p['busy_ms'] / steps[n][0]:.2f} ({p['busy_fraction']:.0%} of the window)"
            for n, p in profiles.items()
        )
        + " |"
    )
    out.append(
        "| window | " + " | ".join(f"{p['window_ms'] / steps[n][0]:.2f}" for n, p in profiles.items()) + " |"
    )
    out.append("")
    for n, p in profiles.items():
        top = ", ".join(
            f"`{t['name'][:70]}` {t['ms'] / steps[n][0]:.2f} ms ({t['calls'] / steps[n][0]:.0f} calls)"
            for t in p["top"][:6]
        )
        batch = p.get("batch") or {}
        out.append(
            f"- {n}: the biggest kernels a step: {top}. The profiled batch itself ran "
            f"{batch.get('tokens_per_s', 0):,.0f} tokens/s ({batch.get('decode_step_ms', 0):.2f} ms a step)."
        )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--results", type=Path, required=True, help="a folder of one GPU run's logs (docs/gpu-logs/runN)"
    )
    ap.add_argument("--date", default="2026-11-27 14:35 UTC")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--title", default="", help="added to the section titles (e.g. ', run 3')")
    ap.add_argument(
        "--hf-cold-runs",
        type=int,
        default=None,
        help="leading HF runs that were cold, for tp_hf*.json written before they recorded it (run 4: 1)",
    )
    args = ap.parse_args()
    sections = [
        s
        for s in (
            throughput_servers_section(args.results, args.date, args.title, args.hf_cold_runs),
            grpo_section(args.results, args.date, args.title),
            profile_section(args.results, args.date, args.title),
        )
        if s
    ]
    for s in sections:
        print(s)
        if not args.no_report:
            append_report(ROOT / "docs" / "benchmarks.md", s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
