#!/usr/bin/env bash
# The quick start: installs what reelql needs, builds it (release), and runs the main job — the
# demo pipeline (pipelines/demo.yaml): the bundled demo model (models/demo) over the synthetic demo
# clips (fixtures/demo), into output/demo.sqlite — then shows what is in the database.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --force-resolved-versions --product reelql
BIN="$(swift build -c release --show-bin-path)/reelql"
"$BIN" run pipelines/demo.yaml
echo
echo "== reelql search \"circle OR square OR triangle\" --db output/demo.sqlite"
"$BIN" search "circle OR square OR triangle" --db output/demo.sqlite --limit 6
echo
echo "Ground truth of the demo clips: fixtures/demo/scenes.jsonl (\"description\" and \"qa\" per clip)."
"$BIN" report output/demo.sqlite > /dev/null
echo "Look at it: output/demo.html (reelql report: pictures, descriptions and answers of every clip)."
echo "Query it: output/demo.sqlite (tables runs, videos, clips, results; views clip_results, answers, video_results)."
