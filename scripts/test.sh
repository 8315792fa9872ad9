#!/usr/bin/env bash
# Set up (if needed), rebuild the BPF objects, lint, and run every test
# against the real kernel on asyncio, uvloop and trio: once on the C hot
# path (aioringbuf/_c/, which must have been built) and once on the
# pure-Python fallback, which must behave the same.
#   PYTHON=python3.12 VENV=.venv-3.12 bash scripts/test.sh   # another Python
#   AIORINGBUF_PATHS=c bash scripts/test.sh                  # the C path only
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=${VENV:-.venv}
# Only the tests need a browser (tests/test_web.py drives headless Chromium)
# and a NATS server (tests/test_ship*.py start their own): setup.sh installs
# them with its own packages, in one apt-get run.
AIORINGBUF_EXTRA_APT="chromium nats-server" bash scripts/setup.sh
"$VENV/bin/ruff" check .
echo "== $("$VENV/bin/python" -V), pylibbpf $("$VENV/bin/python" -c \
    'import importlib.metadata as m; print(m.version("pylibbpf"))')"
for path in ${AIORINGBUF_PATHS:-c pure}; do
    case $path in
    c)
        echo "== tests on the C hot path"
        AIORINGBUF_REQUIRE_C=1 "$VENV/bin/pytest" "$@" ;;
    pure)
        # tests/test_dist.py builds and installs its own wheel (the C path),
        # whatever this run's path: the C run has already run it.
        echo "== tests on the pure-Python path (AIORINGBUF_PURE=1)"
        AIORINGBUF_PURE=1 "$VENV/bin/pytest" --ignore=tests/test_dist.py "$@" ;;
    *)
        echo "test.sh: AIORINGBUF_PATHS takes c and pure, not $path" >&2
        exit 2 ;;
    esac
done
