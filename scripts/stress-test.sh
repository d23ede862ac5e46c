#!/usr/bin/env bash
# The suite RUNS times in a row beside two CPU-burning processes, stopping at the first
# failure: a test that waits for a fixed time or asserts a timing fails here first.
#
#   scripts/stress-test.sh [-n RUNS] [pytest arguments...]
#
# Default: 5 runs of the whole suite (make stress). Arguments go to pytest as they are, e.g.
# `scripts/stress-test.sh -n 1 -m "slow or process"` for the process tests once.
# PYTEST names the pytest to run (default .venv/bin/pytest). The burners are this script's
# own children and are stopped on every exit.
set -euo pipefail

runs=5
if [[ "${1:-}" == "-n" ]]; then
  runs=$2
  shift 2
fi
cd "$(dirname "$0")/.."
pytest=${PYTEST:-.venv/bin/pytest}

burners=()
stop_burners() {
  for pid in "${burners[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait "${burners[@]}" 2>/dev/null || true
}
trap stop_burners EXIT
for _ in 1 2; do
  python3 -c 'while True: pass' &
  burners+=("$!")
done

for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs beside ${#burners[@]} CPU burners (load $(cut -d' ' -f1-3 /proc/loadavg))"
  start=$SECONDS
  if ! "$pytest" "$@"; then
    echo "== run $run of $runs FAILED after $((SECONDS - start)) s" >&2
    exit 1
  fi
  echo "== run $run of $runs passed in $((SECONDS - start)) s"
done
echo "== $runs runs in a row passed"
