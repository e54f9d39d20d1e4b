#!/usr/bin/env bash
# Installs Debian's Chromium for the browser journeys (tests/browser/): Playwright drives it through
# `executable_path` (MESU_CHROMIUM, default /usr/bin/chromium), so `playwright install` never downloads
# a browser. Idempotent: a quiet no-op when Chromium is already there. Needs root and apt-get.
#   --no-install-recommends: the recommends are a desktop (mesa, upower, a notification daemon...);
#   fonts-liberation (one of them) is kept so that the screenshots have metric-compatible fonts.
set -euo pipefail
CHROMIUM="${MESU_CHROMIUM:-/usr/bin/chromium}"
PACKAGES=(chromium fonts-liberation)

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium: $CHROMIUM is missing; install Debian's chromium package (apt-get install chromium) as root" >&2
  exit 1
fi
echo "chromium: installing Debian's ${PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}")
# Update the package lists only when the install fails on them (missing or stale).
"${APT[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${APT[@]}" >/dev/null; }
[ -x "$CHROMIUM" ] || { echo "chromium: installed, but $CHROMIUM is still missing" >&2; exit 1; }
echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo installed)"
