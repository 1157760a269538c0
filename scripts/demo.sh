#!/usr/bin/env bash
# The quick start: installs what reelql needs, builds it (release), and runs the main job on the
# bundled fixture videos. Today the job is video ingestion: every video is probed and sampled at
# 2 fps as Qwen2-VL will see it (frames written as PNG under output/demo/); broken files are
# reported with their error. As the model lands, this becomes `reelql run pipelines/demo.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product reelql
BIN="$(swift build -c release --show-bin-path)/reelql"
OUT="${OUT:-output/demo}"
mkdir -p "$OUT"
ok=0; failed=0
for video in fixtures/videos/*; do
  name="$(basename "$video")"
  if summary=$("$BIN" frames "$video" --fps 2 --out "$OUT/${name%.*}" 2>"$OUT/${name%.*}.err"); then
    ok=$((ok + 1))
    printf '%-24s %s\n' "$name" "$(echo "$summary" | head -1)"
  else
    failed=$((failed + 1))
    printf '%-24s %s\n' "$name" "$(head -1 "$OUT/${name%.*}.err")"
  fi
  rm -f "$OUT/${name%.*}.err"
done
echo "demo: $ok videos sampled, $failed reported as unreadable or damaged; frames in $OUT/"
