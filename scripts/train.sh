#!/usr/bin/env bash
# Set up (first run only) and train. With no arguments: the default CartPole job, 1 server + 2 workers.
#   scripts/train.sh                          # default job
#   scripts/train.sh env=acrobot workers=4    # any Hydra overrides
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/_setup.sh" ""
cd "$ROOT"
exec "${A3C_VENV:-$ROOT/.venv}/bin/a3c-train" "$@"
