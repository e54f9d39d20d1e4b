#!/usr/bin/env bash
# Runs vLLM's OpenAI-compatible server on the CPU in the foreground (exec: signals reach vLLM).
#   scripts/vllm_server.sh MODEL_DIR PORT [SERVED_NAME]
# MODEL_DIR is a Hugging Face folder (python manage.py prepare_model makes one). LoRA adapters are
# loaded at runtime by the writer engine (POST /v1/load_lora_adapter). Ready in ~60 s on 2 cores:
# poll http://127.0.0.1:PORT/health.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL_DIR PORT [SERVED_NAME]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_DIR="$(cd "$1" && pwd)"
PORT="$2"
SERVED_NAME="${3:-smollm2}"
PY="$ROOT/.venv-vllm/bin/python"
if [ ! -x "$PY" ]; then
  echo "vllm_server: $PY is missing; run scripts/setup_vllm_venv.sh first" >&2
  exit 1
fi

# KV cache for all sequences in flight (GiB): 2 GiB holds ~45k tokens of this model, i.e. several
# requests of 3 options x 4096 tokens. Raise it on a bigger box.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
# Lets the writer engine load adapters while the server runs (POST /v1/load_lora_adapter).
export VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
# Model hubs are unreachable here: never try to download.
export HF_HUB_OFFLINE=1

# The largest LoRA rank the server accepts. On the CPU, vLLM pads every adapter to this rank and
# gathers the padded weights per token, so a lower cap makes LoRA generation faster
# (docs/benchmarks.md); it must be at least the rank training uses.
MAX_LORA_RANK="${VLLM_MAX_LORA_RANK:-64}"

# The writer's context window (WRITER_CONTEXT_TOKENS), in tokens.
MAX_MODEL_LEN="${VLLM_MAX_MODEL_LEN:-4096}"

# No chunked prefill, and a step budget of a whole context: a prompt is never split across steps. On
# the CPU (vllm-cpu 0.32) a seeded request whose prompt is split (a cold prompt longer than the
# 2048-token default chunk, or one that meets another prompt in the same step) kills the engine:
# "RuntimeError: CPU Generator does not use offset", then EngineDeadError for every request. With a
# budget of 4096 alone, two seeded 2,700-token prompts arriving together still crashed it; with both
# flags, concurrent seeded prompts of 2,700-3,900 tokens passed (docs in README, "vLLM").
# VLLM_EXTRA_ARGS: more server flags, split on spaces (e.g. --profiler-config with a JSON value
# written without spaces).
# shellcheck disable=SC2086
exec "$PY" -m vllm.entrypoints.openai.api_server ${VLLM_EXTRA_ARGS:-} \
  --model "$MODEL_DIR" \
  --served-model-name "$SERVED_NAME" \
  --enable-lora \
  --max-lora-rank "$MAX_LORA_RANK" \
  --dtype bfloat16 \
  --max-model-len "$MAX_MODEL_LEN" \
  --no-enable-chunked-prefill \
  --max-num-batched-tokens "$MAX_MODEL_LEN" \
  --port "$PORT" \
  --host 127.0.0.1
