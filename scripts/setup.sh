#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine, as root: system packages,
# kernel filesystems, a virtualenv in .venv with aioringbuf installed
# (editable) and the BPF objects rebuilt from source.
#   PYTHON=python3.12 VENV=.venv-3.12 bash scripts/setup.sh   # another Python
# cmake and g++: pylibbpf has no wheel for some Pythons (3.10: 0.0.6's sdist
# is built, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm libbpf-dev bpftool make gcc g++ cmake util-linux python3 python3-venv
              python3-dev)
# More for the caller (scripts/test.sh: the browser and the NATS server the
# tests start), in the same single apt-get run.
read -r -a EXTRA <<< "${AIORINGBUF_EXTRA_APT:-}"
APT_PACKAGES+=("${EXTRA[@]}")

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (BPF needs it; see README 'Privileges')" >&2
    exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Tracepoints need tracefs; pinning needs bpffs.
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# The venv first on PATH: pylibbpf's sdist (3.10) builds with CMake, which
# takes the first python3 on PATH, and would otherwise build the module for
# another Python (pylibbpf.cpython-311-*.so in a 3.10 venv: ImportError).
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e ".[test]"
# A wheel that pip built earlier for this Python with the wrong PATH sits in
# pip's cache and would be taken again: drop it and build pylibbpf once more.
if ! "$VENV/bin/python" -c "import pylibbpf" 2>/dev/null; then
    echo "setup: pylibbpf does not import in $VENV; building it again, not from pip's cache"
    "$VENV/bin/python" -m pip cache remove 'pylibbpf*' >/dev/null 2>&1 || true
    PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --force-reinstall --no-deps "pylibbpf>=0.0.6,<0.0.8"
fi
"$VENV/bin/python" -c "import pylibbpf" || {
    echo "setup: pylibbpf does not import in $VENV (rm -r $VENV and run again)" >&2; exit 1; }

make -s -C bpf
