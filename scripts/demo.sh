#!/usr/bin/env bash
# The quick start: installs what reelql needs, builds it (release), and runs the main job — the
# demo pipeline (pipelines/demo.yaml) over the fixture videos, good and broken, into
# output/demo.sqlite — then shows what is in the database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product reelql
BIN="$(swift build -c release --show-bin-path)/reelql"
status=0
"$BIN" run pipelines/demo.yaml || status=$?
# Exit status 3 means some files failed (the fixtures include broken ones on purpose).
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
echo
echo "== reelql search \"let OR dog\" --db output/demo.sqlite"
"$BIN" search "let OR dog" --db output/demo.sqlite --limit 3 || true
echo
echo "Query it: output/demo.sqlite (tables runs, videos, clips, results; views clip_results, answers, video_results)."
echo "The demo model is a tiny random-weight Qwen2-VL (fixtures/models/tiny-qwen2vl-chat): its descriptions are random words until the trained demo model lands."
