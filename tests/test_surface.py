"""The package's shape: a small root, no import cycles, small files, options typed once.

No kernel needed: these read the package's own source and objects.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import typing

import pytest

import aioringbuf
import aioringbuf.exec
import aioringbuf.types
from aioringbuf._options import StreamKwargs, StreamOptions

PACKAGE = pathlib.Path(aioringbuf.__file__).parent


def test_the_root_exports_at_most_36_names_each_of_them_real() -> None:
    assert len(aioringbuf.__all__) <= 36
    assert len(set(aioringbuf.__all__)) == len(aioringbuf.__all__)
    for name in aioringbuf.__all__:
        assert hasattr(aioringbuf, name), name
    for module in (aioringbuf.types, aioringbuf.exec):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_a_name_that_left_the_root_says_where_it_went() -> None:
    with pytest.raises(AttributeError, match=r"aioringbuf\.exec"):
        aioringbuf.ExecFilter  # noqa: B018
    with pytest.raises(AttributeError, match=r"aioringbuf\.types"):
        aioringbuf.layout_of  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        aioringbuf.nonsense  # noqa: B018


def _imports(path: pathlib.Path) -> set[str]:
    """Package modules ``path`` imports anywhere (deferred imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aioringbuf."):
            found.add(node.module.split(".")[1])
    return found


def test_no_import_cycles_deferred_imports_included() -> None:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, name, dep]))
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert "_stream" not in graph["_ringbuf"] or "_ringbuf" not in graph["_stream"]


def test_no_file_in_the_package_is_over_600_lines() -> None:
    sources = [*PACKAGE.glob("*.py"), *PACKAGE.glob("**/*.c"), *PACKAGE.glob("**/*.h")]
    assert sources
    long = {p.name: n for p in sources if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_the_stream_options_are_spelled_once() -> None:
    assert [f.name for f in dataclasses.fields(StreamOptions)] == list(StreamKwargs.__annotations__)
    assert typing.get_type_hints(StreamOptions) == typing.get_type_hints(StreamKwargs)
    with pytest.raises(ValueError, match="overflow"):
        StreamOptions(overflow="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StreamOptions.of({"maxsze": 10})


def test_exec_events_is_a_stream_on_the_cursor_fast_path() -> None:
    from aioringbuf import _fast
    from aioringbuf.types import QueuedStream, RawStream

    events = aioringbuf.exec_events()  # nothing loads before the first event
    try:
        assert isinstance(events, RawStream)
        assert type(events).__anext__ is _fast.Cursor.__anext__  # no wrapper coroutine
    finally:
        events.close()
    queued = aioringbuf.exec_events(overflow="drop_oldest")
    try:
        assert isinstance(queued, QueuedStream) and isinstance(queued.raw, RawStream)
    finally:
        queued.close()
