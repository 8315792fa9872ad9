"""Build the optional C extension; everything else is in pyproject.toml.

``aioringbuf._fastring`` is optional: when no C compiler is there (or the
build fails for any other reason) setuptools warns and installs without
it, and aioringbuf runs on its pure-Python path (see aioringbuf/_fast.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aioringbuf._fastring",
            ["aioringbuf/_fastring.c"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
