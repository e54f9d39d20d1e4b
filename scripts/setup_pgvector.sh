#!/usr/bin/env bash
# Makes the pgvector extension available to the local PostgreSQL 15.
# Debian bookworm has no pgvector package, so we build pgvector 0.8 from Debian trixie's source
# package against postgresql-server-dev-15 (about 20 s). A no-op when `vector` is already available.
set -euo pipefail
PSQL=(psql -h "${POSTGRES_HOST:-127.0.0.1}" -p "${POSTGRES_PORT:-5432}" -U "${POSTGRES_USER:-postgres}" -d postgres -tAc)
if [ "$("${PSQL[@]}" "select count(*) from pg_available_extensions where name='vector'")" = "1" ]; then
  echo "pgvector: already available"
  exit 0
fi
echo "pgvector: building from Debian trixie's source package"
src=/etc/apt/sources.list.d/mesu-trixie-src.sources
if [ ! -f "$src" ]; then
  # deb-src only: no binary package from trixie is ever installed.
  cat > "$src" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-server-dev-15 build-essential dpkg-dev >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -qq pgvector >/dev/null 2>&1)
dir=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
[ -n "$dir" ] || { echo "pgvector: source package not found" >&2; exit 1; }
make -s -C "$dir" PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config OPTFLAGS="" >/dev/null
make -s -C "$dir" PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config install >/dev/null
echo "pgvector: installed $(basename "$dir")"
