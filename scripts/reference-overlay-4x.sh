#!/usr/bin/env bash
# Creates (once) an overlay of transformers 4.57 (scripts/requirements-reference-4x.txt) beside the
# reference venv (scripts/reference-venv.sh) and prints its directory. Run a script against the
# released 4.x behaviour with:
#   PY=$(scripts/reference-venv.sh); PYTHONPATH=$(scripts/reference-overlay-4x.sh) $PY SCRIPT
# torch, PyAV, qwen-vl-utils come from the venv; transformers, tokenizers and huggingface-hub from
# the overlay. Swift builds and tests never need it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements-reference-4x.txt"
PY="$("$here/reference-venv.sh")"
REF="${REELQL_REF:-$HOME/.cache/reelql-ref}"
OVERLAY="$REF/transformers-4x"
stamp="$OVERLAY/.requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  rm -rf "$OVERLAY"
  mkdir -p "$OVERLAY"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$OVERLAY" -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$OVERLAY"
