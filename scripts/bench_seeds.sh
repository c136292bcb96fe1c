#!/usr/bin/env bash
# How the default job's time to mean-100 >= 475 spreads over seeds, for one or more configs, interleaved
# (seed 1 of each config, then seed 2, ...). One line per run: [overrides] seed launch-to-exit-s env-steps
# exit-reason.
#   scripts/bench_seeds.sh                                              # the default job, seeds 1-10
#   CONFIGS="train.max_minutes=3|algo.normalize_advantages=true train.max_minutes=3" scripts/bench_seeds.sh
# CONFIGS: |-separated override sets (default: none); SEEDS: the seeds (default 1..10); KEEP_DIR: keep each
# run directory (metrics.jsonl, summary.json) as KEEP_DIR/c<config index>_s<seed>, e.g. for a3c-plot.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/_setup.sh" ""
TRAIN="${A3C_VENV:-$ROOT/.venv}/bin/a3c-train"
IFS='|' read -ra configs <<< "${CONFIGS:- }"
lines="$(mktemp)"
trap 'rm -f "$lines"' EXIT
for seed in ${SEEDS:-1 2 3 4 5 6 7 8 9 10}; do
  for index in "${!configs[@]}"; do
    overrides="${configs[$index]}"
    run="$(mktemp -d)"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086  # each config is a list of overrides
    (cd "$run" && "$TRAIN" logger=quiet seed="$seed" $overrides hydra.run.dir="$run/run" > "$run/out" 2>&1) || true
    t1=$(date +%s.%N)
    result=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['env_steps'], s['exit_reason'])" \
      "$run/run/summary.json" 2>/dev/null || echo "- failed")
    echo "[$overrides] seed=$seed $(python3 -c "print(round($t1 - $t0, 2))") $result" | tee -a "$lines"
    if [[ -n "${KEEP_DIR:-}" && -d "$run/run" ]]; then
      mkdir -p "$KEEP_DIR" && rm -rf "$KEEP_DIR/c${index}_s$seed" && mv "$run/run" "$KEEP_DIR/c${index}_s$seed"
    fi
    rm -rf "$run"
  done
done
# Per config: runs that reached the target, median env steps, max / median, runs over twice the median,
# median launch-to-exit.
python3 - "$lines" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    config, rest = line[1:].split("] ", 1)
    _, seconds, steps, reason = rest.split()
    runs.setdefault(config, []).append((float(seconds), int(steps) if steps != "-" else None, reason))
for config, rows in runs.items():
    steps = sorted(s for _, s, r in rows if r == "target_return")
    med = statistics.median(steps) if steps else float("nan")
    print(f"[{config}] reached {len(steps)}/{len(rows)}, env steps median {med / 1e3:.0f}k, "
          f"max/median {steps[-1] / med if steps else float('nan'):.2f}, over 2x median {sum(s > 2 * med for s in steps)}, "
          f"launch-to-exit median {statistics.median(t for t, _, _ in rows):.2f} s")
EOF
