cd /work/main
export DJANGO_DEBUG=1 HF_HUB_OFFLINE=1
setsid bash scripts/vllm_server.sh var/models/qwen2.5-coder-0.5b 8014 > /tmp/run11/vllm-q05.log 2>&1 &
for i in $(seq 1 120); do curl -fsS http://127.0.0.1:8014/health >/dev/null 2>&1 && break; sleep 3; done
curl -s http://127.0.0.1:8014/v1/models | head -c 300; echo
NAME=$(curl -s http://127.0.0.1:8014/v1/models | python3 -c "import json,sys; print(json.load(sys.stdin)['data'][0]['id'])")
date
WRITER_BASE_URL=http://127.0.0.1:8014/v1 WRITER_MODEL=$NAME WRITER_TOKENIZER_PATH=var/models/qwen2.5-coder-0.5b WRITER_MODEL_PATH=var/models/qwen2.5-coder-0.5b \
  .venv/bin/python manage.py evaluate_adapter --adapter base --dataset /tmp/corpus-ds --limit 32 \
  --rewards format_exact,format_partial,bleu,rouge1,rouge2,rougeL,repetition --max-new-tokens 640 --engine vllm --seed 0 \
  --concurrency 8 --answers-out /tmp/run11/answers-q05.jsonl > /tmp/run11/eval-q05.json 2> /tmp/run11/eval-q05.err
echo "eval rc=$?"; date
pkill -f "port 8014" ; pkill -f "vllm_server.sh var/models/qwen2.5-coder-0.5b"
