#!/usr/bin/env bash
# The regression gate on the embedded default: run nn, constant and SAE-Rad (offline) on the
# phantom test split and check each against its committed baseline in results/baselines/
# (written by scripts/phantom_results.py). Exit 1 if any metric got worse beyond noise,
# became unavailable, or was computed differently; JUnit files land beside the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/ci-gate}"
bench run --system nn,constant,saerad --out "$out" >/dev/null
status=0
for system in nn constant saerad; do
  bench check --run "$out/$system" --baseline "results/baselines/phantom-$system.json" \
    --junit "$out/$system-check.xml" || status=1
done
exit $status
