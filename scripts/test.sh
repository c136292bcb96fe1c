#!/usr/bin/env bash
# Set up (first run only, with the dev and env extras) and run the test suite. Extra arguments go to pytest:
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/unit -q   # a subset
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The env-family, sweep and TensorBoard extras too: their tests must run, not skip.
"$ROOT/scripts/_setup.sh" "dev,atari,box2d,mujoco,sweep,tensorboard"
cd "$ROOT"
set +e
"${A3C_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$code"
