#!/usr/bin/env bash
# host_check.sh - on the GPU host, in the repository root, after unpack.sh (the bundle in /tmp/site,
# SmolLM2 in /tmp/models/smollm2) and with .whl carried (scripts/gpu/app_wheels.sh): proves the
# project's GPU paths with the project's own code, one step after another, logging each.
#
#   1. the app's wheels into /tmp/site; `manage.py migrate training` on SQLite (MESU_SQLITE_PATH)
#   2. vLLM serves SmolLM2 on :8000 with runtime LoRA loading (scripts/gpu/serve.sh)
#   3. `manage.py train_grpo --backend trl` (TRL + PEFT); the command registers the adapter, and the
#      registry loads it into the server at run time (the app's vllm engine, POST /v1/load_lora_adapter)
#   4. writer_check.py: the app's VLLMEngine asks for n=4 options through that adapter, parse_output
#   5. `manage.py train_grpo --backend unsloth --use-vllm` (fast_inference: vLLM rollouts), same
#      config and data; without --use-vllm if that fails; writer_check.py through its adapter
#   6. export_check.py: training.export.export_adapter lora + merged16 + merged4, checked on the GPU
#   7. vLLM serves the merged 16-bit folder on :8002; writer_check.py asks it for n=4 options
#
# Environment: BUDGET_S (560: seconds for the whole run; steps that no longer fit are skipped),
# STEPS (default "all"; e.g. "trl,writer" for a subset), OUT (where logs.tgz and summary.txt go).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
STEPS=${STEPS:-all}
want() { [ "$STEPS" = all ] || [[ ",$STEPS," == *",$1,"* ]]; }
MANAGE="python3 $ROOT/manage.py"
DATA=$MESU_HOME/datasets/demo
# The one job config both backends train with (8 completions a step: 2 prompts x 4 generations).
COMMON=(--dataset "$DATA" --base-model /tmp/models/smollm2 --max-steps 4 --num-generations 4
        --per-device-train-batch-size 4 --gradient-accumulation-steps 2 --max-completion-length 256
        --max-prompt-length 1100 --lora-rank 16 --learning-rate 5e-5 --warmup-ratio 0 --save-steps 100
        --rewards format_exact,format_partial,bleu,rouge1,rougeL --no-resume)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)'; } > "$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"

if want setup; then
  step wheels 20 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target /tmp/site .whl/*.whl
  mkdir -p "$MESU_HOME/datasets" "$MESU_HOME/assets"
  cp -r .whl/data/. "$MESU_HOME/datasets/" 2>/dev/null; cp -r .whl/assets/. "$MESU_HOME/assets/" 2>/dev/null
  step migrate 20 120 $MANAGE migrate training --no-input
fi

if want serve; then
  MAX_LORA_RANK=16 GPU_UTIL=${GPU_UTIL:-0.25} VLLM_ARGS="--enforce-eager --max-model-len 4096" \
    step serve_smollm2 60 300 bash scripts/gpu/serve.sh /tmp/models/smollm2 smollm2 8000
fi

cd "$MESU_HOME/work"  # Unsloth writes unsloth_compiled_cache/ into the working folder
if want trl; then
  step train_trl 60 240 sh -c "$MANAGE train_grpo --backend trl --out $MESU_HOME/runs/trl $(printf '%q ' "${COMMON[@]}") > $LOGS/train_trl.json"
fi
if want writer; then
  step writer_trl 20 120 python3 "$ROOT/scripts/gpu/writer_check.py" --n 4 --json "$LOGS/writer_trl.json"
fi
if want unsloth; then
  if ! step train_unsloth_vllm 120 300 sh -c "$MANAGE train_grpo --backend unsloth --use-vllm --out $MESU_HOME/runs/unsloth $(printf '%q ' "${COMMON[@]}") > $LOGS/train_unsloth_vllm.json"; then
    step train_unsloth 90 240 sh -c "$MANAGE train_grpo --backend unsloth --out $MESU_HOME/runs/unsloth $(printf '%q ' "${COMMON[@]}") > $LOGS/train_unsloth.json"
  fi
  step writer_unsloth 20 90 python3 "$ROOT/scripts/gpu/writer_check.py" --n 4 --json "$LOGS/writer_unsloth.json"
fi
if want export; then
  step export 40 180 python3 "$ROOT/scripts/gpu/export_check.py" --adapter "$MESU_HOME/runs/trl/adapter" \
    --out "$MESU_HOME/export" --json "$LOGS/export.json"
  ENABLE_LORA=0 GPU_UTIL=0.2 VLLM_ARGS="--enforce-eager --max-model-len 4096" \
    step serve_merged16 50 240 bash "$ROOT/scripts/gpu/serve.sh" "$MESU_HOME/export/merged16" merged16 8002 &&
    step writer_merged16 15 90 python3 "$ROOT/scripts/gpu/writer_check.py" --base-url http://127.0.0.1:8002/v1 \
      --model merged16 --n 4 --json "$LOGS/writer_merged16.json"
  stop_server 8002
fi
cd "$ROOT"
[ "${KEEP_SERVER:-0}" = 1 ] || stop_server 8000

python3 - "$LOGS" > "$LOGS/versions.txt" 2>&1 <<'EOF'
import importlib.metadata as md
for n in ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "unsloth", "unsloth_zoo",
          "bitsandbytes", "Django", "openai"]:
    try:
        print(n, md.version(n))
    except md.PackageNotFoundError:
        print(n, "-")
EOF
{ echo "== $(date -u +%FT%TZ) host_check on $(head -1 "$LOGS/machine.txt")"; cat "$LOGS/steps.tsv"; tr '\n' ' ' < "$LOGS/versions.txt"; echo; } | tee "$LOGS/summary.txt"
pack_logs
[ -n "${OUT:-}" ] && cp "$LOGS/summary.txt" "$OUT/summary.txt"
exit 0
