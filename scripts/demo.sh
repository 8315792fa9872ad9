#!/usr/bin/env bash
# The main job: set up (if needed) and stream live kernel events.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/getpgid_events.py "$@"
