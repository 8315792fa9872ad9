#!/usr/bin/env bash
# The benchmarks from a fresh clone: set up (scripts/setup.sh), then
# benchmarks/run.py, which installs its own extras (benchmarks/setup.sh),
# builds the producer and the C peers, runs every consumer and writes
# benchmarks/results/. Arguments go to run.py (--quick, --only NAME, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmarks/run.py "$@"
