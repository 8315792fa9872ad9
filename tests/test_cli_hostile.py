"""`aioringbuf exec` against what a stranger can do (issue #12, rows 1, 2, 10, 11).

Any user chooses the name and argv of a program they exec, and the reader
of the CLI's stdout may stop reading. Each test execs or reads as that
stranger would, against the real CLI process and the real kernel.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import termios
import time

import pytest
from cliproc import TRACING, run_aioringbuf, start_aioringbuf, wait_stderr
from test_cli import TRUE, Cli, env, json_events, marker, run, summary, unwritten

F_SETPIPE_SZ = 1031


def exec_as(argv0: bytes | str, *args: bytes | str, program: str = TRUE) -> None:
    """Exec ``program`` with a chosen argv[0] (``exec -a``: any user can)."""
    proc = subprocess.Popen([argv0, *args], executable=program, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait(timeout=20)


def test_name_pattern_cannot_stall_the_trace(kernel) -> None:
    """Row 1: --name '(a+)+$' and an exec whose argv[0] is 30 'a' and a '!'.

    With Python's re the search backtracks for minutes and the CLI hears
    neither the next exec nor SIGTERM; with RE2 the next row comes at once.
    """
    mark = marker()
    with Cli("--name", r"(a+)+$") as cli:
        cli.wait_ready()
        exec_as("a" * 30 + "!")
        exec_as(f"{mark}-a")  # matches: ends in an 'a'
        status, out, err = cli.stop(signal.SIGTERM, timeout=20)
    assert status == 0, err
    (row,) = [line for line in out.splitlines() if mark in line]
    assert row.endswith(f"{mark}-a")
    assert "a" * 30 + "!" not in out  # it does not match: no $ after the '!'
    summary(err)


HOSTILE_NAME = b"\x1b[2J\x1b]0;t\x07\r"  # clear screen, set title, carriage return (14 bytes)
FORGED_ROW = "\r\n07:50:35 sshd             1       0    0 /usr/sbin/sshd -D"


def _assert_no_controls(out: str) -> None:
    # In JSON a byte that is not UTF-8 is U+10FF00 + byte (kernel_text): a
    # private-use or noncharacter code point, which no terminal acts on.
    out = re.sub("[\U0010ff80-\U0010ffff]", "", out)
    for line in out.splitlines():
        assert line.isprintable(), repr(line)  # no C0, DEL, C1, bidi or zero-width
    assert "\r" not in out and "\x1b" not in out


def test_table_shows_controls_and_bad_bytes_as_visible_escapes(kernel, tmp_path) -> None:
    """Row 2: comm, file name and argv full of ESC, CR, LF, BEL, DEL, C1, bidi."""
    mark = marker()
    program = os.path.join(os.fsencode(tmp_path), HOSTILE_NAME)
    os.symlink(TRUE, program)
    args = [FORGED_ROW.encode(), b"\x7f\xc2\x9b31m\xe2\x80\xae", b"bad-\xff"]
    with Cli("--name", mark) as cli:
        cli.wait_ready()
        exec_as(f"{mark}\x1b[8m".encode(), *args, program=os.fsdecode(program))
        status, out, err = cli.stop(signal.SIGINT)
    assert status == 0, err
    _assert_no_controls(out)
    (row,) = [line for line in out.splitlines() if mark in line]  # one row: none forged
    assert "07:50:35 sshd" not in out.replace(row, "")
    assert row.split()[0] == "\\x1b[2J\\x1b]0;t\\x07\\r"  # PCOMM, visible
    assert f"{mark}\\x1b[8m" in row
    assert "\\r\\n07:50:35 sshd" in row
    assert "\\x7f\\u009b31m\\u202e" in row
    assert "bad-\\xff" in row


def test_json_keeps_the_exact_characters(kernel, tmp_path) -> None:
    """Row 2, the other half: JSON is already safe (the encoder escapes), and exact."""
    mark = marker()
    program = os.path.join(os.fsencode(tmp_path), HOSTILE_NAME)
    os.symlink(TRUE, program)
    with Cli("--json", "--name", mark) as cli:
        cli.wait_ready()
        exec_as(mark.encode(), FORGED_ROW.encode(), b"bad-\xff", program=os.fsdecode(program))
        status, out, err = cli.stop(signal.SIGINT)
    assert status == 0, err
    _assert_no_controls(out)  # JSON writes \u001b, \r, \n as escapes itself
    (ev,) = json_events(out)
    assert ev["comm"] == HOSTILE_NAME.decode()
    assert ev["argv"] == [mark, FORGED_ROW, "bad-\U0010ffff"]
    assert json.loads(out.splitlines()[0])["filename"].endswith(HOSTILE_NAME.decode())


def test_json_survives_a_parent_whose_name_is_not_utf8(kernel, tmp_path) -> None:
    """Every string field can hold a stranger's bytes: here the parent's comm."""
    mark = marker()
    shell = os.path.join(os.fsencode(tmp_path), b"\xff\x1b[2Jsh")
    os.symlink("/bin/sh", shell)
    with Cli("--json", "--name", mark) as cli:
        cli.wait_ready()
        program = tmp_path / mark
        program.symlink_to(TRUE)
        subprocess.run([shell, b"-c", f"{program} x; true".encode()], check=True, timeout=20)
        status, out, err = cli.stop(signal.SIGINT)
    assert status == 0, err
    assert "Traceback" not in err
    _assert_no_controls(out)
    (ev,) = json_events(out)
    assert ev["argv"] == [str(tmp_path / mark), "x"]
    if "pcomm" in ev:  # the parent's name, as far as the kernel tells it
        assert ev["pcomm"] == "\U0010ffff\x1b[2Jsh"


@pytest.mark.parametrize("size", [1 << 30, 1 << 32, (1 << 32) + 4096])
def test_ring_sizes_beyond_the_kernel_limit_are_one_line(kernel, size: int) -> None:
    """Row 10: refused before any BTF is rewritten: no libbpf dump, no struct.error."""
    proc = run_aioringbuf("exec", "--ring-size", str(size))
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"aioringbuf exec: exec_events ring_size {size} is too large: the kernel "
                    "accepts ring buffers of at most 536870912 bytes (512 MiB) in a BPF "
                    "object's map definitions")
    assert proc.stdout == ""


def test_largest_ring_the_kernel_accepts_works(kernel) -> None:
    with Cli("--ring-size", str(1 << 29), "--duration", "0.5") as cli:
        cli.wait_ready(timeout=40)
        status, _, err = cli.stop(sig=0, timeout=40)
    assert status == 0, err
    summary(err)


def _queued(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, sys.byteorder)


def _blocked_in_pipe_write(pid: int) -> bool:
    """Is a thread of ``pid`` asleep in a pipe write (wchan: pipe_write, or
    anon_pipe_write on newer kernels)?"""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                if f.read().endswith("pipe_write"):
                    return True
        except OSError:
            continue
    return False


def test_signals_end_the_cli_while_nobody_reads_its_stdout(kernel) -> None:
    """Row 11: a stalled pager. SIGTERM must end the trace at once, lines counted."""
    read_end, write_end = os.pipe()
    try:
        size = fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # a small pipe fills quickly
        proc = start_aioringbuf("exec", stdout=write_end, env=env())
        os.close(write_end)
        write_end = -1
        try:
            _, ready = wait_stderr(proc, TRACING)
            filler = "x" * 500
            deadline = time.monotonic() + 30
            # Until writes block: the pipe is full, or the CLI's writer waits
            # in the kernel (a write of up to one page is atomic, so a batch
            # larger than the room left blocks with less than that queued).
            while _queued(read_end) < size - 600 and not _blocked_in_pipe_write(proc.pid):
                assert time.monotonic() < deadline, "the pipe never filled"
                for _ in range(20):
                    run([TRUE, marker(), filler])
            for _ in range(50):  # and more lines behind the blocked write
                run([TRUE, marker(), filler])
            proc.send_signal(signal.SIGTERM)
            try:
                err = (ready + proc.communicate(timeout=10)[1]).decode()
            except subprocess.TimeoutExpired:
                pytest.fail("SIGTERM did not end `aioringbuf exec` while its stdout was full")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    _, shown, *_ = summary(err)
    assert shown >= 50
    assert unwritten(err) >= 1  # what the pipe could not take is counted, not silently lost
