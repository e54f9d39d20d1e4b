"""Export a train_grpo adapter on the GPU (lora, merged 16-bit, merged 4-bit) and check the results.

    python3 scripts/gpu/export_check.py --adapter DIR [--base /tmp/models/smollm2] [--out DIR] [--json FILE]

Calls the project's `training.export.export_adapter` (formats lora, merged16, merged4: bitsandbytes
NF4 needs CUDA), then checks on the GPU that
- the merged 16-bit model gives the same next-token logits as base + adapter through PEFT (bf16), and
- the merged 4-bit folder loads with transformers and generates.
Serving the merged 16-bit folder with vLLM is host_check.sh's next step. Prints one RESULT line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--base", default="/tmp/models/smollm2")
    ap.add_argument("--out", default="/tmp/mesu/export")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from training.export import export_adapter

    t0 = time.perf_counter()
    result = export_adapter(
        adapter_dir=Path(args.adapter),
        base_model=Path(args.base),
        out_dir=Path(args.out),
        formats=["lora", "merged16", "merged4"],
        on_progress=lambda p: print(f"export: {p.get('key')} {p.get('status')} {p.get('message', '')[:160]}"),
    )
    report: dict = {"export": result.to_dict(), "export_s": round(time.perf_counter() - t0, 2)}
    for e in result.entries:
        print(f"export: {e.key}: ok={e.ok} skipped={e.skipped} {e.bytes / 2**20:.1f} MiB {e.seconds:.1f} s {e.message[:200]}")

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.base)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Write the first line of a chapter about a lighthouse."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, return_tensors="pt").to("cuda")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.bfloat16).to("cuda")
        peft_logits = PeftModel.from_pretrained(base, args.adapter).eval()(**ids).logits[0, -1].float()
        del base
        merged16 = Path(args.out) / "merged16"
        if merged16.is_dir():
            m16 = AutoModelForCausalLM.from_pretrained(merged16, dtype=torch.bfloat16).to("cuda").eval()
            m16_logits = m16(**ids).logits[0, -1].float()
            report["merged16_vs_peft"] = {
                "max_abs_logit_diff": round(float((m16_logits - peft_logits).abs().max()), 4),
                "same_argmax": bool(m16_logits.argmax() == peft_logits.argmax()),
                "logit_scale": round(float(peft_logits.abs().max()), 2),
            }
            del m16
        merged4 = Path(args.out) / "merged4"
        if merged4.is_dir():
            t = time.perf_counter()
            m4 = AutoModelForCausalLM.from_pretrained(merged4, device_map={"": 0}).eval()
            out = m4.generate(**ids, max_new_tokens=24, do_sample=False)
            m4_logits = m4(**ids).logits[0, -1].float()
            report["merged4"] = {
                "load_generate_s": round(time.perf_counter() - t, 2),
                "linear4bit": sum(1 for m in m4.modules() if type(m).__name__ == "Linear4bit"),
                "gpu_mem_gib": round(m4.get_memory_footprint() / 2**30, 3),
                "same_argmax_as_peft": bool(m4_logits.argmax() == peft_logits.argmax()),
                "text": tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)[:120],
            }
    report["ok"] = bool(result.ok) and "merged16_vs_peft" in report
    print("RESULT " + json.dumps({k: v for k, v in report.items() if k != "export"}
                                 | {"entries": [(e.key, e.ok, e.skipped, e.bytes) for e in result.entries]}))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
