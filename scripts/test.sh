#!/usr/bin/env bash
# The README's test command: sets up the system packages (a no-op when present) and runs the
# whole test suite. .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift test --force-resolved-versions "$@"
