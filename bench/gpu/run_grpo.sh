#!/usr/bin/env bash
# run_grpo.sh - on the GPU host after scripts/gpu/host_check.sh's setup: GRPO step time, one process per
# run, side by side on one GPU, in this order (what is most needed first; BUDGET_S skips the rest):
#   3B shape: TRL + PEFT, Unsloth (fast_inference: vLLM rollouts), TRL with use_vllm (colocate);
#   SmolLM2: the same three, then Unsloth without fast_inference. GRPO_RUNS=label,... picks some.
# The 3B folder with random weights comes from run_throughput.sh (or is made here).
# Results: $LOGS/grpo_*.json in $OUT/logs.tgz.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/gpu/lib.sh"
cd "$ROOT"
B=$ROOT/bench/gpu
export REWARD_DEVICE=cuda REWARD_EMBEDDING_MODEL_PATH=$MESU_HOME/assets/minilm-random
[ -f "$REWARD_EMBEDDING_MODEL_PATH/config.json" ] ||
  step grpo_minilm 10 60 python3 $B/shapes.py minilm --assets "$MESU_HOME/assets/minilm" --out "$REWARD_EMBEDDING_MODEL_PATH"
[ -f /tmp/models/llama3b-shape/config.json ] || python3 $B/shapes.py config --out /tmp/models/llama3b-shape
[ -f /tmp/models/llama3b-random/model.safetensors.index.json ] || [ -f /tmp/models/llama3b-random/model.safetensors ] ||
  step grpo_weights 40 120 python3 $B/shapes.py weights --base /tmp/models/llama3b-shape --out /tmp/models/llama3b-random
# TRL's colocated vLLM runs as a one-process torch.distributed group.
COLOCATE_ENV=(env RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533)
cd "$MESU_HOME/work"
RUNS=",${GRPO_RUNS:-3b_trl,3b_unsloth_vllm,3b_trl_vllm,smollm2_trl,smollm2_unsloth_vllm,smollm2_trl_vllm,smollm2_unsloth},"
run() {  # run LABEL NEED LIMIT [args...] (only the labels GRPO_RUNS names)
  local label=$1 need=$2 limit=$3; shift 3
  [[ $RUNS == *,$label,* ]] || return 0
  step "grpo_$label" "$need" "$limit" "$@" --label "$label" --json "$LOGS/grpo_$label.json"
}
M3=/tmp/models/llama3b-random
run 3b_trl 90 200 python3 $B/grpo_steps.py --backend trl --model $M3
run 3b_unsloth_vllm 150 240 python3 $B/grpo_steps.py --backend unsloth --use-vllm --model $M3
run 3b_trl_vllm 120 220 "${COLOCATE_ENV[@]}" python3 $B/grpo_steps.py --backend trl --use-vllm --model $M3
run smollm2_trl 40 120 python3 $B/grpo_steps.py --backend trl --model /tmp/models/smollm2
run smollm2_unsloth_vllm 90 180 python3 $B/grpo_steps.py --backend unsloth --use-vllm --model /tmp/models/smollm2
run smollm2_trl_vllm 80 150 "${COLOCATE_ENV[@]}" python3 $B/grpo_steps.py --backend trl --use-vllm --model /tmp/models/smollm2
run smollm2_unsloth 70 150 python3 $B/grpo_steps.py --backend unsloth --model /tmp/models/smollm2
cd "$ROOT"
pack_logs
cat "$LOGS/steps.tsv"
exit 0
