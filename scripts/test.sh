#!/usr/bin/env bash
# The README's test command: sets up the system packages (a no-op when present) and runs the
# whole test suite: swift test (with exactly the dependency versions in Package.resolved), then,
# when no arguments narrow the run, the cluster recipes for real (Tests/Cluster/cluster_tests.py:
# a single-node Slurm running pipelines/cluster/slurm-array.sh, and the Kubernetes manifest
# against its schema; each is skipped with the reason printed where it cannot run).
# .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh scripts/apt-packages-test.txt
swift test --force-resolved-versions "$@"
if [ $# -eq 0 ]; then
  python3 Tests/Cluster/cluster_tests.py --reelql "$(swift build --show-bin-path)/reelql"
fi
