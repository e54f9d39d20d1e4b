#!/usr/bin/env bash
# Real public-domain novels for the book reader's tests (tests/writer/test_book_import.py, read through
# tests/books.py): Debian ships them inside R packages' data,
#   r-cran-tokenizers  `mobydick`: Project Gutenberg's Moby-Dick (EBook #2701), header and licence included;
#   r-cran-janeaustenr `emma`, `prideprejudice`, ...: Jane Austen's six novels, one element per line.
# The tests read them with Rscript (r-base-core, which both packages depend on) and skip, saying why,
# where they are missing. Installed with apt-get when missing and we are root (CI, `./dev test`);
# idempotent: a no-op (<1 s) when both data sets load.
set -euo pipefail
PACKAGES=(r-cran-tokenizers r-cran-janeaustenr)
CHECK='suppressWarnings({data("mobydick", package = "tokenizers"); data("emma", package = "janeaustenr")})
stopifnot(nchar(mobydick) > 1e6, length(emma) > 10000)'

loads() { command -v Rscript >/dev/null && Rscript --vanilla -e "$CHECK" >/dev/null 2>&1; }

if loads; then
  echo "books: Moby-Dick and Austen's novels are available (${PACKAGES[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "books: ${PACKAGES[*]} are not installed and this is not root with apt-get:" \
    "the real-book tests will be skipped (run this script as root to install them)" >&2
  exit 0
fi
echo "books: installing Debian's ${PACKAGES[*]} (with r-base-core)"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}")
"${APT[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${APT[@]}" >/dev/null; }
loads || { echo "books: ${PACKAGES[*]} are installed but their data sets do not load with Rscript" >&2; exit 1; }
echo "books: Moby-Dick and Austen's novels are available"
