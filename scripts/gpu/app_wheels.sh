#!/usr/bin/env bash
# app_wheels.sh - on your machine (pip, PyPI), in the repository root: put the app's wheels for the GPU
# host (app_wheels.txt, CPython 3.12 x86-64) and the small files the GPU checks read into ./.whl,
# which travels with `carry: [".whl"]` and is kept out of git by .git/info/exclude.
#
#   .whl/*.whl              Django, Celery, psycopg, the reward libraries, pytest-django (app_wheels.txt)
#   .whl/data/demo          build_dataset on samples/ (9 pairs, prompts within 960 tokens)
#   .whl/assets/minilm      MiniLM-L6's config and tokenizer, no weights (BERTScore timing on the GPU:
#                           the weights do not change its speed, and 88 MB would not fit a transfer)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
HERE=scripts/gpu
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
specs=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/app_wheels.txt" | grep -v '^$' | grep -v '^rouge_score==')
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps "${PLAT[@]}" -d .whl $specs
python3 -m pip wheel -q --no-deps -w .whl "$(grep -o '^rouge_score==[^ #]*' "$HERE/app_wheels.txt")"

PY=${PYTHON:-.venv/bin/python}
if [ ! -f .whl/data/demo/train.jsonl ]; then
  DJANGO_DEBUG=1 HF_HUB_OFFLINE=1 "$PY" manage.py build_dataset --books samples --out .whl/data/demo \
    --test-fraction 0 --budget-tokens 960
fi
mini=$("$PY" -c 'from brands.embedder import packaged_model_path; print(packaged_model_path())')
mkdir -p .whl/assets/minilm
cp "$mini"/{config.json,vocab.txt,tokenizer_config.json,special_tokens_map.json} .whl/assets/minilm/
du -sh .whl
