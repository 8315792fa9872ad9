#!/usr/bin/env bash
# The exec and CLI tests once more, while another exec tracer runs on the
# machine: an `aioringbuf exec` from this same checkout (same object file,
# same program names). Tests must find their own programs and links by id
# and count only their own execs; this pass proves they do.
# Run after scripts/setup.sh (needs .venv); arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
.venv/bin/python -m aioringbuf exec >/dev/null 2>"$log" &
tracer=$!
trap 'kill "$tracer" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 200); do
    grep -q tracing "$log" && break
    kill -0 "$tracer" || { cat "$log"; exit 1; }
    sleep 0.1
done
grep -q tracing "$log" || { echo "background aioringbuf exec did not start"; cat "$log"; exit 1; }
echo "== exec and CLI tests beside a running aioringbuf exec (pid $tracer)"
kill -0 "$tracer"
AIORINGBUF_REQUIRE_C=1 .venv/bin/pytest tests/test_exec.py tests/test_exec_capture.py \
    tests/test_exec_context.py tests/test_cli.py "$@"
# The tracer must have lived through it all and stop cleanly on Ctrl-C
# (set -e fails the run otherwise); pytest's line stays the last one.
kill -INT "$tracer"
wait "$tracer"
