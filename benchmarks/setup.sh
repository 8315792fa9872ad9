#!/usr/bin/env bash
# Install what only the benchmarks need (as root, Debian 12), idempotently:
#   - python3-bpfcc: BCC's Python bindings, for the BCC peers (they run on
#     Debian's /usr/bin/python3, which is where python3-bpfcc installs);
#   - linux-headers-amd64: BCC compiles its C at run time against kernel
#     headers, which this kernel does not ship; Debian's nearest headers,
#     linked at /lib/modules/$(uname -r)/{build,source}, are enough for the
#     ring and perf buffer programs (the documented workaround);
#   - libbpf-dev, gcc: the libbpf C peers (ring_buffer__poll, perf_buffer__poll);
#   - matplotlib (the `bench` extra) into the Python that runs run.py.
# run.py calls this itself unless given --no-setup; each peer that still
# cannot run is skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "benchmarks/setup.sh: run as root" >&2
    exit 1
fi

APT_PACKAGES=(python3-bpfcc linux-headers-amd64 libbpf-dev gcc clang llvm bpftool make)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# BCC needs /lib/modules/$(uname -r)/{build,source}: point them at the newest
# Debian headers (build: the -amd64 tree with the generated headers; source:
# its -common tree with the rest).
kdir="/lib/modules/$(uname -r)"
if [ ! -e "$kdir/build/include/generated" ] || [ ! -e "$kdir/source/include/linux/kconfig.h" ]; then
    headers=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    common=${headers%-amd64}-common
    if [ -n "$headers" ] && [ -d "$common" ]; then
        echo "bench setup: linking $kdir/build -> $headers, source -> $common (BCC's headers workaround)"
        mkdir -p "$kdir"
        ln -sfn "$headers" "$kdir/build"
        ln -sfn "$common" "$kdir/source"
    else
        echo "bench setup: no linux-headers-*-amd64 under /usr/src: BCC peers will be skipped" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import matplotlib" 2>/dev/null; then
    echo "bench setup: installing the bench extra (matplotlib) into $PYTHON"
    "$PYTHON" -m pip install -q --disable-pip-version-check matplotlib
fi
if ! "$PYTHON" -c "import numpy" 2>/dev/null; then
    echo "bench setup: installing the arrays extra (numpy) into $PYTHON for the arrays() rows"
    "$PYTHON" -m pip install -q --disable-pip-version-check numpy
fi
