"""Where the C header for your own BPF programs is installed.

The header ships inside the package (wheel and sdist alike), so a program
built against a pip-installed aioringbuf gets the same drop counters that
``stats().kernel_drops`` reads::

    clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I. -I"$(python -c \\
        'from aioringbuf.types import include_dir; print(include_dir())')" \\
        -c prog.bpf.c -o prog.bpf.o
"""

from __future__ import annotations

import pathlib

_INCLUDE = pathlib.Path(__file__).resolve().parent / "include"


def include_dir() -> str:
    """The directory holding ``aioringbuf.bpf.h``, for clang's ``-I``."""
    return str(_INCLUDE)
