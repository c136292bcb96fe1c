#!/usr/bin/env bash
# Shared set-up for train.sh / test.sh / bench scripts: creates .venv if missing, installs torch
# pinned (the CPU wheel) only when no torch is importable, then installs this package (editable) with
# the extras named in $1 (e.g. "dev" or "dev,bench"). Re-runs are instant: a stamp records what was
# installed, keyed by pyproject.toml and the extras. An existing torch (a CUDA build, say) is left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${A3C_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
TORCH_PIN="torch==2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "setup: installing $TORCH_PIN" >&2
  "$PY" -m pip install --quiet "$TORCH_PIN"
fi
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) extras=$EXTRAS"
stamp="$VENV/.distributed_a3c-installed"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp" 2>/dev/null; then
  spec="$ROOT"
  [ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
  echo "setup: installing distributed_a3c${EXTRAS:+[$EXTRAS]}" >&2
  "$PY" -m pip install --quiet -e "$spec"
  echo "$want" >> "$stamp"
fi
