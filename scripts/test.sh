#!/usr/bin/env bash
# Set up (if needed), rebuild the BPF objects, lint, and run every test
# against the real kernel on asyncio, uvloop and trio: once on the C hot
# path (aioringbuf/_c/, which must have been built) and once on the
# pure-Python fallback, which must behave the same.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Only the tests need a browser (tests/test_web.py drives headless Chromium),
# so it is installed here rather than by setup.sh.
if ! command -v chromium >/dev/null; then
    echo "test: installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The fleet tests (tests/test_ship*.py) start their own JetStream servers.
if ! command -v nats-server >/dev/null; then
    echo "test: installing nats-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
.venv/bin/ruff check .
echo "== tests on the C hot path"
AIORINGBUF_REQUIRE_C=1 .venv/bin/pytest "$@"
echo "== tests on the pure-Python path (AIORINGBUF_PURE=1)"
AIORINGBUF_PURE=1 .venv/bin/pytest "$@"
