#!/usr/bin/env bash
# run_tests.sh - on the GPU host after host_check.sh's setup step: the whole `gpu` test suite in one
# command, with a SmolLM2 vLLM server (runtime LoRA loading) started beside it for the engine test
# (MESU_GPU_VLLM_URL); the server comes up while the TRL and Unsloth tests run, and stops at the end.
# Log: $LOGS/gpu_tests.log (verbose, with each test's duration). TESTS_LIMIT_S (540) bounds the run.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
MAX_LORA_RANK=16 GPU_UTIL=0.25 DETACH=1 VLLM_ARGS="--enforce-eager --max-model-len 4096" \
  bash scripts/gpu/serve.sh /tmp/models/smollm2 smollm2 8000 > "$LOGS/serve_tests.log" 2>&1 &
MESU_GPU_VLLM_URL=http://127.0.0.1:8000/v1 step gpu_tests 120 "${TESTS_LIMIT_S:-540}" \
  python3 -m pytest tests/gpu -m gpu -p no:cacheprovider -v -rs --durations=0
rc=$?
wait
stop_server 8000
grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$LOGS/gpu_tests.log" | tail -n 12
pack_logs
exit $rc
