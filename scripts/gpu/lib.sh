# lib.sh - sourced by the GPU host drivers (host_check.sh, bench/gpu/run_*.sh): the environment every
# step needs, and `step`, which runs one command under a time limit, logs it and keeps going.
#
#   LOGS     where each step's log goes (default /tmp/mesu/logs); also packed into $OUT/logs.tgz
#            after every step, so a run cut off at the 10-minute limit still brings its logs back
#   BUDGET_S seconds this driver may use in all (default 560); a step that needs more than is left
#            is skipped, and says so

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MESU_HOME=${MESU_HOME:-/tmp/mesu}
LOGS=${LOGS:-$MESU_HOME/logs}
BUDGET_S=${BUDGET_S:-560}
mkdir -p "$LOGS" "$MESU_HOME/work"
T_START=${T_START:-$(date +%s)}

export PYTHONPATH=/tmp/site
export PYTHONUNBUFFERED=1
# Nothing can be downloaded on the GPU host: fail fast instead of waiting on network time-outs.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export TOKENIZERS_PARALLELISM=false
export VLLM_USE_FLASHINFER_SAMPLER=0  # flashinfer is not in the bundle
# The app's settings on a GPU box without PostgreSQL or Redis (mesu_web/settings.py: MESU_SQLITE_PATH).
export DJANGO_DEBUG=1 MESU_SQLITE_PATH=$MESU_HOME/db.sqlite3 MESU_VAR_DIR=$MESU_HOME/var
export WRITER_ENGINE=vllm WRITER_BASE_URL=${WRITER_BASE_URL:-http://127.0.0.1:8000/v1} WRITER_MODEL=smollm2
export WRITER_MODEL_PATH=/tmp/models/smollm2
# Keep NVLink multicast off (the device README asks it of every program there).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

elapsed() { echo $(( $(date +%s) - T_START )); }

pack_logs() {
  [ -n "${OUT:-}" ] || return 0
  # vLLM's log: its start-up (attention backend, tuned configs, KV cache) and its last lines
  for f in /tmp/vllm-*.log; do
    [ -f "$f" ] || continue
    if [ "$(wc -l < "$f")" -le 400 ]; then cp "$f" "$LOGS/"
    else { head -n 150 "$f"; echo "[... $(( $(wc -l < "$f") - 400 )) lines left out ...]"; tail -n 250 "$f"; } > "$LOGS/$(basename "$f")"
    fi
  done
  # one part file per process: steps that run side by side (train_writer.sh) pack at the same time
  tar -czf "$OUT/logs.tgz.part$BASHPID" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" 2>/dev/null &&
    mv "$OUT/logs.tgz.part$BASHPID" "$OUT/logs.tgz"
}

# step NAME NEED_S TIMEOUT_S CMD... : run CMD (stdout+stderr to $LOGS/NAME.log, also echoed with a
# prefix) unless fewer than NEED_S seconds are left; record "NAME rc seconds" in $LOGS/steps.tsv.
step() {
  local name=$1 need=$2 limit=$3; shift 3
  local left=$(( BUDGET_S - $(elapsed) ))
  if [ "$left" -lt "$need" ]; then
    echo "[$(elapsed)s] SKIP $name: ${left}s left, needs ${need}s" | tee -a "$LOGS/steps.tsv"
    return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[$(elapsed)s] START $name (limit ${limit}s)"
  local t0 rc
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')
  printf '%s\trc=%s\t%ss\n' "$name" "$rc" "$secs" >> "$LOGS/steps.tsv"
  echo "[$(elapsed)s] END $name rc=$rc in ${secs}s"
  grep -E '^RESULT|Error|error:|Traceback' "$LOGS/$name.log" | tail -n 6 | cut -c1-600 | sed "s/^/  $name| /"
  pack_logs
  return $rc
}

stop_server() {  # stop_server PORT: the vLLM server serve.sh started on PORT
  local pidfile=/tmp/vllm-$1.pid
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 1; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null
    rm -f "$pidfile"
  fi
}
