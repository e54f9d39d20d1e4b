#!/usr/bin/env bash
# Puts llama.cpp's Hugging Face -> GGUF converter where training/export.py finds it:
#   ${MESU_VAR_DIR:-<repo>/var}/tools/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE}
# taken from the llama-cpp-python sdist on PyPI (vendor/llama.cpp holds the llama.cpp release it
# binds, converter included). Nothing is fetched when an adapter is exported.
#
# The converter runs with the gguf-py it ships: its writer uses classes (LazyChunkedTensor) that PyPI's
# gguf 0.19.0 does not have yet, and it puts its own gguf-py first on sys.path unless NO_LOCAL_GGUF
# is set (export.py unsets it). The files it writes are read back with PyPI's gguf==0.19.0, which is what
# transformers loads GGUF files with. It also needs torch, transformers, numpy and sentencepiece (in
# pyproject.toml).
#
# Opt-in, not part of the default setup: MESU_BUILD_LLAMA_QUANTIZE=1 also builds llama.cpp's
# llama-quantize (for GGUF q4_k_m) from the same sdist with cmake into tools/llama.cpp/bin/: about
# 4.5-6 minutes on the 2-core box (134 compile steps: too long for every setup, hence opt-in),
# static, CPU only.
#
# Idempotent: one line and no download when the folder is complete for this version.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR_DIR="${MESU_VAR_DIR:-$ROOT/var}"
TARGET="$VAR_DIR/tools/llama.cpp"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION=0.3.36 # llama-cpp-python; training/export.py's CONVERTER_SOURCE names the same
SOURCE="llama-cpp-python==$VERSION"
BUILD_QUANTIZE="${MESU_BUILD_LLAMA_QUANTIZE:-0}"
NEEDED=(convert_hf_to_gguf.py conversion/__init__.py gguf-py/gguf/__init__.py gguf-py/gguf/gguf_writer.py)

converter_ready() {
  local f
  [ "$(cat "$1/SOURCE" 2>/dev/null)" = "$SOURCE" ] || return 1
  for f in "${NEEDED[@]}"; do [ -s "$1/$f" ] || return 1; done
}
quantize_ready() { [ -x "$TARGET/bin/llama-quantize" ] && [ "$(cat "$TARGET/bin/SOURCE" 2>/dev/null)" = "$SOURCE" ]; }

want_quantize=0
case "$BUILD_QUANTIZE" in 1 | true | yes) want_quantize=1 ;; 0 | false | no | "") ;;
  *) echo "MESU_BUILD_LLAMA_QUANTIZE must be 1 or 0" >&2; exit 2 ;;
esac

if converter_ready "$TARGET" && { [ $want_quantize = 0 ] || quantize_ready; }; then
  echo "gguf converter: already at $TARGET ($SOURCE)"
  exit 0
fi

mkdir -p "$VAR_DIR/tools"
work=$(mktemp -d "$VAR_DIR/tools/.llama.cpp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "gguf converter: taking llama.cpp's converter from the $SOURCE sdist (~75 MB)"
"$PY" -m pip download --quiet --no-deps --no-binary :all: -d "$work" "$SOURCE"
sdist=$(find "$work" -maxdepth 1 -name "llama_cpp_python-$VERSION*.tar.gz" -type f | head -n1)
[ -n "$sdist" ] || { echo "gguf converter: the $SOURCE sdist did not download" >&2; exit 1; }
vendor="llama_cpp_python-$VERSION/vendor/llama.cpp"

if ! converter_ready "$TARGET"; then
  mkdir -p "$work/src"
  tar -xzf "$sdist" -C "$work/src" --wildcards "$vendor/convert_hf_to_gguf.py" "$vendor/conversion/*" \
    "$vendor/gguf-py/*" "$vendor/LICENSE"
  build="$work/llama.cpp"
  mv "$work/src/$vendor" "$build"
  echo "$SOURCE" > "$build/SOURCE"
  converter_ready "$build" || { echo "gguf converter: the sdist lacks ${NEEDED[*]}" >&2; exit 1; }
  if [ -x "$PY" ]; then
    # Imports the converter and its gguf-py (torch, transformers): proves it runs in this venv.
    env -u NO_LOCAL_GGUF HF_HUB_OFFLINE=1 "$PY" "$build/convert_hf_to_gguf.py" --help >/dev/null ||
      { echo "gguf converter: convert_hf_to_gguf.py --help failed in $PY" >&2; exit 1; }
    "$PY" -c "import sentencepiece" 2>/dev/null ||
      echo "gguf converter: warning: sentencepiece is not installed in $PY; the converter imports it" >&2
  fi
  [ -d "$TARGET/bin" ] && mv "$TARGET/bin" "$build/bin"  # keep an llama-quantize built before
  rm -rf "$TARGET.old"
  [ -e "$TARGET" ] && mv "$TARGET" "$TARGET.old"
  mv "$build" "$TARGET"
  rm -rf "$TARGET.old"
  echo "gguf converter: ready at $TARGET"
fi

if [ $want_quantize = 1 ] && ! quantize_ready; then
  for tool in cmake c++; do
    command -v $tool >/dev/null || { echo "gguf converter: building llama-quantize needs $tool" >&2; exit 1; }
  done
  echo "gguf converter: building llama-quantize from $SOURCE (about 5 minutes on 2 cores, 4.5-6 measured)"
  tar -xzf "$sdist" -C "$work" "$vendor"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # Static and portable (no -march=native: the binary may be copied to another x86-64 box); no curl,
  # server, tests or examples: only the quantize tool and the libraries it links.
  cmake -S "$work/$vendor" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$work/cmake.log" 2>&1 ||
    { tail -20 "$work/cmake.log" >&2; exit 1; }
  nice cmake --build "$work/build" --target llama-quantize -j "$(nproc)" >"$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log" >&2; exit 1; }
  mkdir -p "$TARGET/bin"
  cp "$work/build/bin/llama-quantize" "$TARGET/bin/.llama-quantize.tmp"
  mv "$TARGET/bin/.llama-quantize.tmp" "$TARGET/bin/llama-quantize"
  echo "$SOURCE" > "$TARGET/bin/SOURCE"
  echo "gguf converter: llama-quantize ready at $TARGET/bin/llama-quantize"
fi
