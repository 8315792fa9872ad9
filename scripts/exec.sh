#!/usr/bin/env bash
# The main job: set up (if needed), then a live execsnoop: every exec on the
# machine as it happens. Arguments go to `aioringbuf exec` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/aioringbuf exec "$@"
