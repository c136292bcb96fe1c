#!/usr/bin/env bash
# Shared set-up for train.sh / test.sh / the bench and launch scripts: creates .venv if missing, installs
# torch pinned (the CPU wheel) only when no torch is importable, then installs this package (editable)
# with the extras named in $1 (e.g. "dev" or "dev,atari"). Re-runs are instant: a stamp records what was
# installed, keyed by pyproject.toml, and an install with more extras serves a request for fewer. An
# existing torch (a CUDA build, say) is left alone. Concurrent runs (several launchers) take turns.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${A3C_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
TORCH_PIN="torch==2.13.0"

exec 9>"$VENV.setup.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "setup: installing $TORCH_PIN" >&2
  "$PY" -m pip install --quiet "$TORCH_PIN"
fi

hash="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
stamp="$VENV/.distributed_a3c-installed"
installed() {  # is there a stamp line for this pyproject with every requested extra?
  [ -f "$stamp" ] || return 1
  local line extra have
  while read -r line; do
    [ "${line%% *}" = "$hash" ] || continue
    have=",${line#* extras=},"
    for extra in ${EXTRAS//,/ }; do
      [[ "$have" == *",$extra,"* ]] || continue 2
    done
    return 0
  done < "$stamp"
  return 1
}
if ! installed; then
  spec="$ROOT"
  [ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
  echo "setup: installing distributed_a3c${EXTRAS:+[$EXTRAS]}" >&2
  "$PY" -m pip install --quiet -e "$spec"
  echo "$hash extras=$EXTRAS" >> "$stamp"
fi
