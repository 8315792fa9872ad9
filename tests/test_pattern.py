"""aioringbuf.exec.Pattern: RE2 for patterns and texts that strangers choose.

The texts are the ones of issue #12: ``(a+)+$`` against 26 ``a`` and a
``!`` (any user can exec that argv[0]), and ``(.|.|.|.|.|.|.|.)*X``
against any text without an X. Python's ``re`` takes seconds to hours on
them; the tests run each in a child process that must answer within the
test's timeout, so a backtracking engine fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioringbuf.exec import ExecFilter, Pattern, PatternError

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOSTILE = [
    (r"(a+)+$", "a" * 26 + "!"),
    (r"(.|.|.|.|.|.|.|.)*X", "b" * 4000),
    (r"(a|aa)*c", "a" * 4000),
    (r"(\w+\s?)+$", "word " * 800 + "!"),
]


def run_child(code: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env))


@pytest.mark.parametrize(("pattern", "text"), HOSTILE)
def test_catastrophic_patterns_finish_at_once(pattern: str, text: str) -> None:
    """In a child, so that a backtracking engine is a TimeoutExpired, not a hung suite."""
    code = (f"from aioringbuf.exec import Pattern\n"
            f"print(Pattern({pattern!r}).search({text!r} * 10))\n")
    proc = run_child(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_same_patterns_with_python_re_do_not_finish() -> None:
    """The control: what the tests above guard against is real on this Python."""
    with pytest.raises(subprocess.TimeoutExpired):
        run_child(f"import re; re.search({HOSTILE[0][0]!r}, {HOSTILE[0][1]!r} + 'aaaaaa')",
                  timeout=3)


def test_exec_filter_with_a_pattern_matches_name_basename_and_argv0() -> None:
    ev = SimpleNamespace(pid=1, ppid=0, uid=0, ret=0, comm="bash", filename="/usr/bin/bash",
                         argv=["-bash", "x"])
    assert ExecFilter(name=Pattern("^ba"))(ev)
    assert ExecFilter(name=Pattern("^-b"))(ev)  # argv[0]
    assert not ExecFilter(name=Pattern("^x$"))(ev)  # argv[1] is not searched
    assert not ExecFilter(name=Pattern("usr"))(ev)  # the directory is not searched


def test_text_that_is_not_utf8_matches_as_it_is_shown() -> None:
    raw = b"caf\xff-x".decode("utf-8", "surrogateescape")
    assert Pattern(r"caf\\xff").search(raw)
    assert Pattern("caf").search(raw)
    assert not Pattern("^x").search(raw)


@pytest.mark.parametrize("bad", [r"(a)\1", r"(?=a)", r"(?<!a)b", "(", "x{1001}",
                                 "(x{1000}){1000}"])
def test_patterns_re2_refuses_say_why(bad: str) -> None:
    with pytest.raises(PatternError, match="bad pattern"):
        Pattern(bad)


def test_long_patterns_are_refused() -> None:
    Pattern("a" * 256)
    with pytest.raises(PatternError, match="at most 256"):
        Pattern("a" * 257)
    with pytest.raises(TypeError):
        Pattern(b"bytes")  # type: ignore[arg-type]


SIMPLE = st.text(alphabet="ab.*+?|()^$", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(pattern=SIMPLE, text=st.text(alphabet="abc", max_size=12))
def test_agrees_with_python_re_where_both_accept(pattern: str, text: str) -> None:
    """RE2 and re differ in exotic syntax, not in what these patterns mean."""
    try:
        expected = re.search(pattern, text) is not None
    except re.error:
        return
    try:
        compiled = Pattern(pattern)
    except PatternError:
        return  # e.g. a** (re2 refuses repeated repetition)
    assert compiled.search(text) == expected


WITHOUT_RE2 = """
import sys
sys.modules["re2"] = None  # as if google-re2 were not installed
import aioringbuf
from aioringbuf.exec import Pattern
p = Pattern("sshd")
print(p.engine, p.search("/usr/sbin/sshd"), p.search("ssh"))
try:
    Pattern("(a+)+$")
except aioringbuf.MissingDependencyError as exc:
    print("refused:", exc)
"""


def test_without_re2_plain_text_still_works_and_regexes_say_what_to_install() -> None:
    proc = run_child(WITHOUT_RE2)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "substring True False"
    assert second.startswith("refused: the pattern '(a+)+$' needs google-re2")
    assert "pip install 'aioringbuf[re2]'" in second
