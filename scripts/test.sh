#!/usr/bin/env bash
# Set up (if needed), rebuild the BPF objects, lint, and run every test
# against the real kernel on asyncio, uvloop and trio: once on the C hot
# path (aioringbuf/_c/, which must have been built) and once on the
# pure-Python fallback, which must behave the same.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only the tests need a browser (tests/test_web.py drives headless Chromium)
# and a NATS server (tests/test_ship*.py start their own): setup.sh installs
# them with its own packages, in one apt-get run.
AIORINGBUF_EXTRA_APT="chromium nats-server" bash scripts/setup.sh
.venv/bin/ruff check .
echo "== tests on the C hot path"
AIORINGBUF_REQUIRE_C=1 .venv/bin/pytest "$@"
echo "== tests on the pure-Python path (AIORINGBUF_PURE=1)"
AIORINGBUF_PURE=1 .venv/bin/pytest "$@"
