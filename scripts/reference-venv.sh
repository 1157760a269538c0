#!/usr/bin/env bash
# Creates (once) the Python virtualenv with the reference implementation — PyTorch, Hugging Face
# transformers, qwen-vl-utils, PyAV — at the versions pinned in scripts/requirements-reference.txt,
# and prints the path of its python. Everything that regenerates fixtures, trains or evaluates the
# demo model, or benchmarks transformers runs with that python:
#   PY=$(scripts/reference-venv.sh)
#   $PY fixtures/scripts/reference_vision.py
# The venv lives outside the repository ($REELQL_REF, default ~/.cache/reelql-ref); the download
# is large (PyTorch with its CUDA wheels, several GB). It is brought up to date when the pins change.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements-reference.txt"
lock="$here/constraints-reference.txt"
REF="${REELQL_REF:-$HOME/.cache/reelql-ref}"
PY="$REF/venv/bin/python"
stamp="$REF/venv/.requirements"
if [ ! -x "$PY" ] || ! cat "$req" "$lock" | cmp -s - "$stamp" || ! "$PY" -c "import torch, transformers, av, qwen_vl_utils, torchvision" 2>/dev/null; then
  mkdir -p "$REF"
  [ -x "$PY" ] || python3 -m venv "$REF/venv" >&2
  "$REF/venv/bin/pip" install -q --disable-pip-version-check -r "$req" -c "$lock" >&2
  cat "$req" "$lock" > "$stamp"
fi
echo "$PY"
