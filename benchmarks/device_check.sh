#!/usr/bin/env bash
# The project's GPU checks in one run (issues 2, 5, 7, 24), for a session lent a GPU machine
# (`device` tool): benchmarks/device_check.py runs each step under its own cap, 470 s in all.
#   on the GPU machine: bash benchmarks/device_check.sh             (run's timeout_s: 520 or more)
#   anywhere:           bash benchmarks/device_check.sh --dry-run   (prints every step, checks its code)
# Unbuffered, so a step stopped by its cap keeps what it printed. The machine has torch but no
# network: the project runs from the checkout via PYTHONPATH. Results land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$PWD/tests:${PYTHONPATH:-}"
export OUT="${OUT:-/tmp/out}"
exec python3 benchmarks/device_check.py "$@"
