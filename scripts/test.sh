#!/usr/bin/env bash
# Set up (if needed), rebuild the BPF objects, lint, and run every test
# against the real kernel on asyncio, uvloop and trio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
