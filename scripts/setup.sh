#!/usr/bin/env bash
# Installs the Debian packages reelql builds against (scripts/apt-packages.txt), when missing.
# Used by scripts/demo.sh, scripts/test.sh, .ci/run and the Dockerfile. Extra lists (as
# scripts/test.sh passes scripts/apt-packages-test.txt) are installed too.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t packages < <(cat scripts/apt-packages.txt "$@" | grep -v '^\s*#' | grep -v '^\s*$')
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
command -v swift >/dev/null || { echo "setup: Swift 6 is required (https://swift.org/install)" >&2; exit 1; }
