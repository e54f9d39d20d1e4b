#!/usr/bin/env bash
# run_throughput.sh - on the GPU host after scripts/gpu/host_check.sh's setup (bundle, wheels, the demo
# dataset in /tmp/mesu/datasets): the writer throughput benchmark at the Llama-3.2-3B shape.
#   prep     HBM copy bandwidth (the GPU otherwise idle); the 3B-shape config (+ SmolLM2's tokenizer)
#            and four random rank-16 LoRAs; tune_lora.py: vLLM's LoRA kernels tuned for this GPU and
#            shape (VLLM_TUNED_CONFIG_FOLDER, copied to $LOGS/lora-configs)
#   tuned    vLLM serves the shape with --load-format dummy, CUDA graphs on, runtime LoRA (4 slots, rank
#            16), the tuned kernel configs and VLLM_LORA_ENABLE_DUAL_STREAM=1 (LoRA on a second CUDA
#            stream beside the base layer; without it if the server does not start so);
#            writer_throughput.py vllm: base, 1 LoRA, 4 LoRAs mixed (3 interleaved rounds), first option
#   hf       server stopped; HF generate + PEFT LoRA on the same GPU, which also saves the random weights
#            for the GRPO benchmark (/tmp/models/llama3b-random)
#   default  the same server with vLLM's default LoRA kernel configs and one stream (what the tuning gains)
#   beside   (not in the default list) the tuned server with GPU memory TP_BESIDE_GPU_UTIL (0.55), measured;
#            HF (HF_REPEATS runs) while that server idles; the server measured again (tp_vllm_tuned_after):
#            vLLM and HF side by side on one GPU within minutes. TP_VLLM_REPEATS rounds per measurement (3).
#   specialize  (not in the default list) tuned + dual stream + --specialize-active-lora
#   notopp   (not in the default list) the tuned server measured with the writer's sampling (temperature 0.8,
#            top_p 0.95), then without top_p: what the top-p sort costs a step (the bundle has no FlashInfer,
#            so vLLM sorts with PyTorch; VLLM_USE_FLASHINFER_SAMPLER=0 in scripts/gpu/lib.sh)
#   profile  (not in the default list) the tuned server started with the torch profiler: a 0.3 s window in the
#            middle of the base and the one-LoRA batch (profile_step.py): kernel time by category and name
#   fp8kv    (not in the default list) tuned + dual stream + --kv-cache-dtype fp8 (the KV cache in FP8 E4M3)
#   distinct (not in the default list) the tuned server measured with the benchmark's one prompt for all 32
#            requests, then with 32 prompts of their own (--distinct-prompts: no KV block shared between requests)
#   fp8w     (not in the default list) tuned + dual stream + --quantization fp8 (the base weights in FP8, dynamic
#            per-tensor scales; LoRA stays bf16): what halving the weight bytes read per step buys
# TP_SERVER_ARGS adds vLLM flags to every server of the run (e.g. --attention-backend TRITON_ATTN) and
# TP_LABEL_SUFFIX is added to every server's label (tp_vllm_tuned_triton.json), so variants keep their own files.
# TP_CONFIGS_FROM=bench/gpu/lora-configs takes kernel configs tuned before on this GPU model instead of tuning.
# TP_PARTS picks (default: all four, in that order). Results: $LOGS/tp_*.json, packed into $OUT/logs.tgz
# with the logs. BUDGET_S as in scripts/gpu/lib.sh.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/gpu/lib.sh"
cd "$ROOT"
B=bench/gpu
PARTS=",${TP_PARTS:-prep,tuned,hf,default},"
CONFIGS=$MESU_HOME/lora-configs
SERVER_FLAGS="--load-format dummy --max-model-len 4096 --max-num-seqs 256${TP_SERVER_ARGS:+ $TP_SERVER_ARGS}"
SFX=${TP_LABEL_SUFFIX:-}
SERVE_ENV=(MAX_LORA_RANK=16 MAX_LORAS=4 GPU_UTIL=${TP_GPU_UTIL:-0.8} "VLLM_ARGS=$SERVER_FLAGS")
TUNED_ENV=(VLLM_TUNED_CONFIG_FOLDER="$CONFIGS" VLLM_LORA_ENABLE_DUAL_STREAM=1)  # the writer's LoRA settings

serve() {  # serve LABEL ENV... : start the 3B-shape server on :8100 (ENV wins over SERVE_ENV)
  local label=$1; shift
  step "tp_serve_$label$SFX" 200 400 env "${SERVE_ENV[@]}" "$@" bash scripts/gpu/serve.sh /tmp/models/llama3b-shape llama3b 8100 || {
    stop_server 8100; return 1; }
}
measure() {  # measure LABEL SERVER_ENV [NEED [ARGS...]]: writer_throughput.py vllm against the running server
  local label=$1$SFX env=$2${TP_SERVER_ARGS:+ VLLM_ARGS+=$TP_SERVER_ARGS} need=${3:-150}; shift $(( $# < 3 ? $# : 3 ))
  step "tp_vllm_$label" "$need" 300 python3 $B/writer_throughput.py vllm --url http://127.0.0.1:8100 --model llama3b \
    --loras /tmp/models/llama3b-loras --repeats "${TP_VLLM_REPEATS:-3}" --label "$label" --server-env "$env" \
    --json "$LOGS/tp_vllm_$label.json" "$@"
}
hf() {  # hf [--beside-server TEXT]: HF generate + PEFT with lora1; saves the random weights for run_grpo.sh
  step tp_hf 60 "$(( 60 + (1 + ${HF_REPEATS:-1}) * ${HF_CAP_S:-100} ))" python3 $B/writer_throughput.py hf \
    --model-dir /tmp/models/llama3b-shape --lora /tmp/models/llama3b-loras/lora1 --cap-s "${HF_CAP_S:-100}" \
    --hf-repeats "${HF_REPEATS:-1}" --save-weights /tmp/models/llama3b-random --json "$LOGS/tp_hf.json" "$@"
}
tuned_then() {  # tuned_then LABEL ARGS...: one tuned server measured as is, then as LABEL with writer_throughput ARGS
  local label=$1; shift
  serve tuned "${TUNED_ENV[@]}" || return 1
  measure tuned "${TUNED_ENV[*]}" 100
  measure "$label" "${TUNED_ENV[*]}" 60 "$@"
  stop_server 8100
}
serve_and_measure() {  # serve_and_measure LABEL ENV... : one server, the vLLM runs, server stopped
  local label=$1; shift
  serve "$label" "$@" || return 1
  measure "$label" "$*"
  stop_server 8100
}

if [[ $PARTS == *,prep,* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv,noheader | tee -a "$LOGS/machine.txt"
  step tp_bandwidth 10 60 python3 $B/writer_throughput.py bandwidth --json "$LOGS/tp_bandwidth.json"
  step tp_shapes 10 120 sh -c "python3 $B/shapes.py config --out /tmp/models/llama3b-shape && python3 $B/shapes.py loras --base /tmp/models/llama3b-shape --out /tmp/models/llama3b-loras --count 4 --rank 16"
  if [ -n "${TP_CONFIGS_FROM:-}" ]; then  # configs tuned on this GPU model before (bench/gpu/lora-configs)
    mkdir -p "$CONFIGS" && cp "$TP_CONFIGS_FROM"/*.json "$CONFIGS/"
  else
    step tp_tune 60 200 python3 $B/tune_lora.py --model-dir /tmp/models/llama3b-shape --rank 16 --max-loras 4 \
      --out "$CONFIGS" --json "$LOGS/tp_tune.json"
  fi
  mkdir -p "$LOGS/lora-configs" && cp "$CONFIGS"/*.json "$LOGS/lora-configs/" 2>/dev/null
fi
if [[ $PARTS == *,tuned,* ]]; then
  serve_and_measure tuned "${TUNED_ENV[@]}" ||
    serve_and_measure tuned_one_stream VLLM_TUNED_CONFIG_FOLDER="$CONFIGS"
fi
if [[ $PARTS == *,specialize,* ]]; then  # also: one CUDA graph per number of active LoRAs (1, 2, 4)
  serve_and_measure tuned_specialize "${TUNED_ENV[@]}" "VLLM_ARGS=$SERVER_FLAGS --specialize-active-lora"
fi
if [[ $PARTS == *,fp8kv,* ]]; then  # what halving the KV bytes read per step buys (changes numerics a little)
  serve_and_measure tuned_fp8kv "${TUNED_ENV[@]}" "VLLM_ARGS=$SERVER_FLAGS --kv-cache-dtype fp8"
fi
if [[ $PARTS == *,fp8w,* ]]; then  # what halving the weight bytes read per step buys (changes numerics)
  serve_and_measure tuned_fp8w "${TUNED_ENV[@]}" "VLLM_ARGS=$SERVER_FLAGS --quantization fp8"
fi
if [[ $PARTS == *,distinct,* ]]; then  # one prompt for all 32 requests (prefix-cached), then 32 of their own
  tuned_then tuned_distinct --distinct-prompts
fi
if [[ $PARTS == *,notopp,* ]]; then  # the tuned server with the writer's sampling, then without top_p
  tuned_then tuned_no_top_p --no-top-p
fi
if [[ $PARTS == *,profile,* ]]; then  # where a decode step goes: torch-profiler windows mid-batch (profile_step.py)
  PROFILE_DIR=$MESU_HOME/profile
  PCONF="{\"profiler\":\"torch\",\"torch_profiler_dir\":\"$PROFILE_DIR\",\"torch_profiler_with_stack\":false}"
  if serve tuned_profile "${TUNED_ENV[@]}" VLLM_RPC_TIMEOUT=600000 "VLLM_ARGS=$SERVER_FLAGS --profiler-config $PCONF"; then
    for model in llama3b lora1; do
      step "tp_profile_$model$SFX" 40 240 python3 $B/profile_step.py run --url http://127.0.0.1:8100 --model "$model" \
        --loras /tmp/models/llama3b-loras --trace-dir "$PROFILE_DIR" --layers 28 --json "$LOGS/tp_profile_$model$SFX.json"
    done
    stop_server 8100
  fi
fi
if [[ $PARTS == *,beside,* ]]; then  # tuned server; HF while it idles (GPU memory shared); tuned again
  BESIDE_ENV=("${TUNED_ENV[@]}" GPU_UTIL=${TP_BESIDE_GPU_UTIL:-0.55})
  if serve tuned "${BESIDE_ENV[@]}"; then
    measure tuned "${BESIDE_ENV[*]}" 100
    hf --beside-server "tuned vLLM server idle on :8100 with GPU memory ${TP_BESIDE_GPU_UTIL:-0.55}"
    measure tuned_after "${BESIDE_ENV[*]}" 60
    stop_server 8100
  fi
fi
if [[ $PARTS == *,hf,* ]]; then
  hf
fi
if [[ $PARTS == *,default,* ]]; then
  serve_and_measure default VLLM_LORA_ENABLE_DUAL_STREAM=0
fi
pack_logs
cat "$LOGS/steps.tsv"
exit 0
