#!/usr/bin/env bash
# How the default job's time to mean-100 >= 475 spreads over seeds, for one or more configs, interleaved
# (seed 1 of each config, then seed 2, ...). One line per run: [overrides] seed launch-to-exit-s env-steps
# exit-reason.
#   scripts/bench_seeds.sh                                              # the default job, seeds 1-10
#   CONFIGS="train.max_minutes=3|algo.normalize_advantages=true train.max_minutes=3" scripts/bench_seeds.sh
# CONFIGS: |-separated override sets (default: none); SEEDS: the seeds (default 1..10).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/_setup.sh" ""
TRAIN="${A3C_VENV:-$ROOT/.venv}/bin/a3c-train"
IFS='|' read -ra configs <<< "${CONFIGS:- }"
for seed in ${SEEDS:-1 2 3 4 5 6 7 8 9 10}; do
  for overrides in "${configs[@]}"; do
    run="$(mktemp -d)"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086  # each config is a list of overrides
    (cd "$run" && "$TRAIN" logger=quiet seed="$seed" $overrides hydra.run.dir="$run/run" > "$run/out" 2>&1) || true
    t1=$(date +%s.%N)
    result=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['env_steps'], s['exit_reason'])" \
      "$run/run/summary.json" 2>/dev/null || echo "- failed")
    echo "[$overrides] seed=$seed $(python3 -c "print(round($t1 - $t0, 2))") $result"
    rm -rf "$run"
  done
done
