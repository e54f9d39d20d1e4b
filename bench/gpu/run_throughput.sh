#!/usr/bin/env bash
# run_throughput.sh - on the GPU host after scripts/gpu/host_check.sh's setup (bundle, wheels, the demo
# dataset in /tmp/mesu/datasets): the writer throughput benchmark at the Llama-3.2-3B shape.
#   1. HBM copy bandwidth (the GPU otherwise idle)
#   2. the 3B-shape config (+ SmolLM2's tokenizer) and four random rank-16 LoRAs
#   3. vLLM serves it with --load-format dummy, CUDA graphs on, runtime LoRA (4 slots, rank 16);
#      writer_throughput.py vllm: base, 1 LoRA, 4 LoRAs mixed, base again, time to first option
#   4. server stopped; writer_throughput.py hf: HF generate + PEFT LoRA on the same GPU, which also
#      saves the random weights for the GRPO benchmark (/tmp/models/llama3b-random)
# Results: $LOGS/tp_*.json, packed into $OUT/logs.tgz with the logs. BUDGET_S as in scripts/gpu/lib.sh.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/gpu/lib.sh"
cd "$ROOT"
B=bench/gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv,noheader | tee -a "$LOGS/machine.txt"
step tp_bandwidth 10 60 python3 $B/writer_throughput.py bandwidth --json "$LOGS/tp_bandwidth.json"
step tp_shapes 10 120 sh -c "python3 $B/shapes.py config --out /tmp/models/llama3b-shape && python3 $B/shapes.py loras --base /tmp/models/llama3b-shape --out /tmp/models/llama3b-loras --count 4 --rank 16"
MAX_LORA_RANK=16 MAX_LORAS=4 GPU_UTIL=${TP_GPU_UTIL:-0.8} VLLM_ARGS="--load-format dummy --max-model-len 4096 --max-num-seqs 256" \
  step tp_serve 240 400 bash scripts/gpu/serve.sh /tmp/models/llama3b-shape llama3b 8100 &&
  step tp_vllm 60 240 python3 $B/writer_throughput.py vllm --url http://127.0.0.1:8100 --model llama3b \
    --loras /tmp/models/llama3b-loras --json "$LOGS/tp_vllm.json"
stop_server 8100
step tp_hf 60 240 python3 $B/writer_throughput.py hf --model-dir /tmp/models/llama3b-shape \
  --lora /tmp/models/llama3b-loras/lora1 --cap-s "${HF_CAP_S:-100}" --save-weights /tmp/models/llama3b-random \
  --json "$LOGS/tp_hf.json"
pack_logs
cat "$LOGS/steps.tsv"
exit 0
