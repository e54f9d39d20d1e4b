"""The app's `vllm` writer engine against a GPU vLLM server, with an adapter trained by `train_grpo`.

    python3 scripts/gpu/writer_check.py [--adapter NAME] [--n 4] [--max-tokens 384] [--dataset DIR]
                                        [--base-url URL --model NAME] [--json FILE]

Runs the project's own code path: `writer.engines.vllm.VLLMEngine` (settings from Django, i.e.
WRITER_BASE_URL / WRITER_MODEL / WRITER_ADAPTER_DIR, unless --base-url is given) loads the adapter
into the server at run time when the server does not list it yet (`POST /v1/load_lora_adapter`),
asks ONE chat completion for `n` options with the reasoning prefill, and every option goes through
`writer.parsing.parse_output`. The prompt is the first training pair's (made by `build_dataset` with
`writer.prompting`), so it is the prompt shape the writer serves.

Without --adapter the newest registered WriterAdapter row is used (train_grpo registers the adapter it
trains). The same request is also made to the base model, for comparison. Prints one RESULT line.
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
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mesu_web.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="", help="registered adapter name (default: the newest)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--dataset", default="/tmp/mesu/datasets/demo")
    ap.add_argument("--base-url", default="", help="another server (e.g. a merged model); no adapter then")
    ap.add_argument("--model", default="", help="served model name at --base-url")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from writer.engines import resolve_adapter
    from writer.engines.base import Sampling
    from writer.engines.vllm import VLLMEngine, VLLMSettings
    from writer.parsing import parse_output
    from writer.prompting import REASONING_START

    if args.base_url:
        engine = VLLMEngine(
            VLLMSettings(
                base_url=args.base_url.rstrip("/"),
                api_key="",
                model=args.model,
                timeout=300.0,
                max_retries=1,
                retry_backoff=1.0,
                stream=True,
                tokenizer_path=str(settings.WRITER_TOKENIZER_PATH),
            )
        )
        adapter = None
    else:
        engine = VLLMEngine()  # the Django settings, as the app's worker uses it
        name = args.adapter
        if not name:
            from training.models import WriterAdapter

            row = WriterAdapter.objects.order_by("-pk").first()
            if row is None:
                print("writer_check: no registered adapter; run train_grpo first", file=sys.stderr)
                return 2
            name = row.name
        adapter = resolve_adapter(name)
    print(f"writer_check: server {engine.settings.base_url}, health={engine.health()}")
    before = engine.list_models()
    print(f"writer_check: models served before: {before}")

    row = json.loads((Path(args.dataset) / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    messages = row["prompt"]
    sampling = Sampling(max_tokens=args.max_tokens, temperature=0.8, top_p=0.95, seed=7, prefill=REASONING_START)
    result: dict = {"server": engine.settings.base_url, "models_before": before, "runs": []}
    targets = [adapter, None] if adapter is not None else [None]
    for target in targets:
        progress = {"tokens": 0, "first_token_s": None}
        t0 = time.perf_counter()

        def on_progress(total: int, t0=t0, progress=progress) -> None:
            if progress["first_token_s"] is None:
                progress["first_token_s"] = round(time.perf_counter() - t0, 3)
            progress["tokens"] = total

        generated = engine.generate(messages, n=args.n, sampling=sampling, adapter=target, on_progress=on_progress)
        seconds = time.perf_counter() - t0
        options = []
        for i, completion in enumerate(generated.completions):
            parsed = parse_output(completion.text)
            options.append(
                {
                    "option": i,
                    "tokens": completion.tokens,
                    "finish_reason": completion.finish_reason,
                    "format_ok": parsed.format_ok,
                    "warning": parsed.warning[:160],
                    "reasoning_chars": len(parsed.reasoning),
                    "text_chars": len(parsed.text),
                    "text_start": parsed.text[:160],
                }
            )
        run = {
            "model": generated.model,
            "adapter": target.name if target else None,
            "adapter_path": str(target.path) if target else None,
            "n": len(generated.completions),
            "prompt_tokens": generated.prompt_tokens,
            "seconds": round(seconds, 3),
            "first_token_s": progress["first_token_s"],
            "tokens_total": sum(c.tokens for c in generated.completions),
            "format_ok": sum(o["format_ok"] for o in options),
            "options": options,
        }
        result["runs"].append(run)
        print(
            f"writer_check: {run['model']}: {run['n']} options in {run['seconds']} s "
            f"(first token {run['first_token_s']} s), {run['tokens_total']} tokens, "
            f"format_ok {run['format_ok']}/{run['n']}"
        )
        for o in options:
            print(f"  [{o['option']}] {o['tokens']} tok {o['finish_reason']} format_ok={o['format_ok']} "
                  f"text={o['text_start'][:90]!r}")
    result["models_after"] = engine.list_models()
    print(f"writer_check: models served after: {result['models_after']}")
    ok = all(r["n"] == args.n for r in result["runs"])
    if adapter is not None:
        ok = ok and adapter.name in result["models_after"]
    result["ok"] = ok
    print("RESULT " + json.dumps({k: v for k, v in result.items() if k != "runs"} | {
        "runs": [{k: v for k, v in r.items() if k != "options"} for r in result["runs"]]}))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
