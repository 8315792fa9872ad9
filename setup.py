"""Build the optional C extension; everything else is in pyproject.toml.

``aioringbuf._fastring`` is optional: when no C compiler is there (or the
build fails for any other reason) setuptools warns and installs without
it, and aioringbuf runs on its pure-Python path (see aioringbuf/_fast.py).

It is one extension module built from one C source per Python module it
speeds up (aioringbuf/_c/: walk.c, codec.c, cursor.c, order.c, gathered
by module.c): the walks call the codec's decoder natively, which one module
allows without a capsule or an indirect call per record.
"""

from setuptools import Extension, setup

C_DIR = "aioringbuf/_c"

setup(
    ext_modules=[
        Extension(
            "aioringbuf._fastring",
            [f"{C_DIR}/{name}.c" for name in ("module", "walk", "codec", "cursor", "order")],
            depends=[f"{C_DIR}/fastring.h"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers",
                                "-fvisibility=hidden"],
            optional=True,
        )
    ]
)
