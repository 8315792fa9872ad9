"""`aioringbuf exec` as a user runs it: a subprocess, real execs, real signals.

Every run waits for the CLI's "tracing" line on stderr, printed only once
the probes are attached, before making the execs it looks for.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import msgspec
import pytest
from cgroups import spawn_in
from cliproc import TRACING, child_env, run_aioringbuf, start_aioringbuf, wait_stderr
from kernelstate import EXEC_PROGRAMS, exec_links, live_links
from privileges import AS_NOBODY

from aioringbuf.exec import ExecEvent, ExitEvent, kernel_bytes

TRUE = "/bin/true"
SUMMARY = re.compile(
    r"^aioringbuf exec: (\d+) events \((\d+) shown\), (\d+) kernel drops, (\d+) queue drops, "
    r"(\d+) decode errors, (\d+) unread at exit"
    r"(?:, (\d+) lines not written \(stdout not read\))?"
    r"(?:; (\d+) (?:failed|successful) execs not traced(?: \(-x shows them\))?)?$"
)


def marker() -> str:
    return f"aiorb-{uuid.uuid4().hex[:12]}"


def env() -> dict[str, str]:
    """The CLI's environment: never ``-u`` (inherited), it must flush its own lines."""
    return child_env(PYTHONUNBUFFERED="0")


class Cli:
    """One `python -m aioringbuf exec ...` process, killed if a test fails."""

    def __init__(self, *args: str, backend: str = "asyncio") -> None:
        self.proc = start_aioringbuf("exec", "--backend", backend, *args,
                                     stdout=subprocess.PIPE, env=env())
        self.stdout = b""
        self.stderr = b""

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the CLI says it is tracing (after attaching), reading stderr only."""
        self.stderr = wait_stderr(self.proc, TRACING, self.stderr, timeout)[1]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> tuple[int, str, str]:
        """Signal it (0: let it end by itself); return status, stdout, stderr."""
        if sig:
            time.sleep(0.3)  # let it print what the kernel already sent
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return (self.proc.returncode, (self.stdout + (out or b"")).decode(),
                (self.stderr + (err or b"")).decode())

    def __enter__(self) -> Cli:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def run(argv: list[str]) -> subprocess.Popen:
    """Run a child to completion (its exec is what the CLI should report)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.wait(timeout=20)
    return proc


def summary(stderr: str) -> tuple[int, ...]:
    lines = stderr.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m, stderr
    assert "Traceback" not in stderr
    # events, shown, kernel drops, queue drops, decode errors, unread at exit
    return tuple(int(g) for g in m.groups()[:6])


def not_traced(stderr: str) -> int:
    """Attempts the success/failure choice kept out of the ring (0 if none)."""
    m = SUMMARY.match(stderr.strip().splitlines()[-1])
    assert m, stderr
    return int(m.group(8) or 0)


def unwritten(stderr: str) -> int:
    """Lines the CLI could not write to its stdout, from its summary (0 if none)."""
    m = SUMMARY.match(stderr.strip().splitlines()[-1])
    assert m, stderr
    return int(m.group(7) or 0)


def rows(stdout: str, mark: str) -> list[list[str]]:
    """Table rows (split on whitespace) that mention ``mark``."""
    return [line.split() for line in stdout.splitlines() if mark in line]


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_table_shows_each_exec_as_a_row(kernel) -> None:
    mark = marker()
    with Cli() as cli:
        cli.wait_ready()
        proc = run(["/bin/echo", mark, "two words", ""])
        status, out, err = cli.stop(signal.SIGINT)
    assert status == 0
    # execsnoop's default columns: no time (-T, -t add it)
    assert out.splitlines()[0].split() == ["PCOMM", "PID", "PPID", "RET", "ARGS"]
    (row,) = [line for line in out.splitlines() if mark in line]
    assert row.split()[0:4] == ["echo", str(proc.pid), str(os.getpid()), "0"]
    assert row.endswith(f"/bin/echo {mark} 'two words' ''")
    delivered, shown, kernel_drops, queue_drops, decode_errors, _unread = summary(err)
    assert delivered >= shown >= 1 and kernel_drops == queue_drops == decode_errors == 0


def test_json_lines_are_lossless_events(kernel) -> None:
    """--json is msgspec.json.encode(ev): bytes that are not UTF-8 and a typed
    backslash stay apart, and each line decodes back into the ExecEvent."""
    mark = marker()
    with Cli("--json", backend="trio") as cli:
        cli.wait_ready()
        proc = run([TRUE.encode(), mark.encode(), b"caf\xc3\xa9", b"bad-\xff", b"typed-\\xff"])
        status, out, err = cli.stop(signal.SIGTERM)
    assert status == 0
    (line,) = [line for line in out.splitlines() if mark in line]
    decoded = msgspec.json.decode(line, type=ExecEvent)
    assert msgspec.json.encode(decoded).decode() == line
    assert [kernel_bytes(a) for a in decoded.argv] == \
        [TRUE.encode(), mark.encode(), b"caf\xc3\xa9", b"bad-\xff", b"typed-\\xff"]
    ev = json.loads(line)
    assert ev["argv"] == [TRUE, mark, "café", "bad-\U0010ffff", "typed-\\xff"]
    assert (ev["pid"], ev["tid"], ev["ppid"], ev["uid"]) == (proc.pid, proc.pid, os.getpid(), 0)
    assert (ev["filename"], ev["comm"], ev["ret"], ev["syscall"]) == (TRUE, "true", 0, "execve")
    assert ev["args_truncated"] is False and isinstance(ev["ts_ns"], int)
    assert abs(ev["realtime_ns"] - time.time_ns()) < 60e9
    assert summary(err)[1] >= 1


def test_json_schema_describes_the_json_lines(kernel) -> None:
    proc = run_aioringbuf("exec", "--json-schema", check=True)
    schema = json.loads(proc.stdout)
    assert schema == msgspec.json.schema(ExecEvent)
    props = schema["$defs"]["ExecEvent"]["properties"]
    assert props["argv"] == {"type": "array", "items": {"type": "string"}}
    mark = marker()
    with Cli("--json") as cli:
        cli.wait_ready()
        run([TRUE, mark])
        _, out, _ = cli.stop(signal.SIGINT)
    (ev,) = [e for e in json_events(out) if mark in e["argv"]]
    assert set(ev) == set(props)
    assert set(schema["$defs"]["ExecEvent"]["required"]) <= set(ev)


def test_pid_filter(kernel) -> None:
    mark = marker()
    # The shell's pid is known before it execs (exec keeps the pid).
    waiting = subprocess.Popen(["/bin/sh", "-c", f'read x; exec {TRUE} {mark} chosen'],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        with Cli("--json", "--pid", str(waiting.pid)) as cli:
            cli.wait_ready()
            run([TRUE, mark, "other"])
            assert waiting.stdin is not None
            waiting.stdin.write(b"go\n")
            waiting.stdin.close()
            waiting.wait(timeout=20)
            status, out, err = cli.stop()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert status == 0
    events = json_events(out)
    assert [e["argv"] for e in events] == [[TRUE, mark, "chosen"]]
    assert events[0]["pid"] == waiting.pid
    assert summary(err)[1] == 1


def test_uid_filter(kernel) -> None:
    mark = marker()
    with Cli("--json", "--uid", "65534") as cli:
        cli.wait_ready()
        run([TRUE, mark, "root"])
        nobody = run([*AS_NOBODY, TRUE, mark, "nobody"])
        status, out, err = cli.stop()
    assert status == 0
    events = json_events(out)
    assert all(e["uid"] == 65534 for e in events)
    (ev,) = [e for e in events if mark in e["argv"]]
    assert ev["argv"] == [TRUE, mark, "nobody"] and ev["pid"] == nobody.pid
    assert ev["gid"] == 65534
    delivered, shown, *_ = summary(err)
    # filtered in the kernel: nothing else entered the ring or the counts
    assert delivered == shown == len(events)


def test_cgroup_filter_in_the_kernel(kernel, cgroup_root) -> None:
    mark = marker()
    inner = cgroup_root / "svc"
    inner.mkdir()
    with Cli("--json", "--cgroup", str(cgroup_root)) as cli:
        cli.wait_ready()
        run([TRUE, mark, "outside"])
        inside = spawn_in(inner, [TRUE, mark, "inside"])
        inside.wait(timeout=20)
        status, out, err = cli.stop()
    assert status == 0, err
    (ev,) = json_events(out)  # the only exec in that cgroup
    assert ev["argv"] == [TRUE, mark, "inside"] and ev["pid"] == inside.pid
    assert ev["cgroup"] == "/" + str(inner.relative_to(cgroup_root.parent))
    assert summary(err)[:2] == (1, 1)
    bad = run_aioringbuf("exec", "--cgroup", str(cgroup_root / "missing"))
    assert bad.returncode == 2 and "not a cgroup v2 directory" in bad.stderr


def test_name_filter_matches_the_program_name(kernel, tmp_path) -> None:
    mark = marker()
    renamed = tmp_path / "aiorb-renamed"  # a name no other program has
    renamed.symlink_to(TRUE)
    with Cli("--name", "^aiorb-renamed$") as cli:
        cli.wait_ready()
        run([TRUE, mark])
        proc = run([str(renamed), mark])
        status, out, err = cli.stop()
    assert status == 0
    (row,) = rows(out, mark)
    assert row[0:4] == ["aiorb-renamed", str(proc.pid), str(os.getpid()), "0"]
    assert len(out.splitlines()) == 2  # the header and that row
    assert summary(err)[1] == 1


def test_failed_filter_shows_only_failures(kernel, tmp_path) -> None:
    mark = marker()
    missing = tmp_path / mark
    with Cli("--failed") as cli:
        cli.wait_ready()
        run([TRUE, mark])
        proc = run(["/bin/sh", "-c", 'exec "$0"', str(missing)])
        status, out, err = cli.stop()
    assert status == 0 and proc.returncode != 0
    body = out.splitlines()[1:]
    assert body and all(int(line.split()[3]) < 0 for line in body)
    (row,) = rows(out, mark)
    assert row == ["sh", str(proc.pid), str(os.getpid()), "-2", str(missing)]
    delivered, shown, *_ = summary(err)
    assert delivered == shown == len(body)  # no success entered the ring
    assert not_traced(err) >= 1  # but each was counted: our /bin/true at least


def test_duration_ends_the_trace_by_itself(kernel) -> None:
    with Cli("--duration", "0.5", backend="uvloop") as cli:
        cli.wait_ready()
        started = time.monotonic()
        status, out, err = cli.stop(sig=0)
    assert status == 0
    assert time.monotonic() - started < 5
    assert out.startswith("PCOMM")
    summary(err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_signals_end_cleanly_with_a_summary(kernel, sig, backend) -> None:
    with Cli(backend=backend) as cli:
        cli.wait_ready()
        status, out, err = cli.stop(sig)
    assert status == 0, err
    assert out.startswith("PCOMM")
    summary(err)


def test_a_reader_that_leaves_ends_the_trace_quietly(kernel) -> None:
    """`aioringbuf exec | head -2`: EPIPE on the next row ends it, status 0."""
    with Cli() as cli:
        cli.wait_ready()
        assert cli.proc.stdout is not None
        cli.proc.stdout.close()  # the reader is gone
        run([TRUE, marker()])
        cli.proc.stdout = None  # nothing left to read: communicate() skips it
        status, _, err = cli.stop(sig=0)
    assert status == 0, err
    summary(err)
    assert unwritten(err) >= 1  # the row that met EPIPE, at least, counted as not written


def test_unprivileged_run_says_why_without_a_traceback(kernel) -> None:
    proc = run_aioringbuf("exec", prefix=[*AS_NOBODY, "--inh-caps=-all", "--bounding-set=-all"],
                          cwd="/")
    assert proc.returncode == 77
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("aioringbuf exec: ") and "not permitted" in line
    assert "CAP_BPF" in line
    assert proc.stdout == ""


def test_usage_errors_and_help() -> None:
    bad = run_aioringbuf("exec", "--name", "(")
    assert bad.returncode == 2 and "bad pattern '('" in bad.stderr
    helptext = run_aioringbuf("exec", "--help")
    assert helptext.returncode == 0
    assert "U+10FF00 + byte" in helptext.stdout and "--failed" in helptext.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_leave_nothing_attached(kernel, sig) -> None:
    with Cli() as cli:
        cli.wait_ready()
        links = exec_links(cli.proc.pid)  # what this CLI attached, by id
        assert len(links) == len(EXEC_PROGRAMS)
        status, _, err = cli.stop(sig)
    assert status == 0, err
    assert live_links(links) == set()


def test_second_ctrl_c_during_shutdown_exits_at_once(kernel) -> None:
    with Cli() as cli:
        cli.wait_ready()
        links = exec_links(cli.proc.pid)
        assert len(links) == len(EXEC_PROGRAMS)
        cli.proc.send_signal(signal.SIGINT)
        cli.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        status, _, err = cli.stop(sig=0, timeout=10)
    assert time.monotonic() - started < 5
    assert status == 0, err
    assert "Traceback" not in err
    assert live_links(links) == set()


def test_an_interrupt_inside_a_task_group_exits_quietly(monkeypatch) -> None:
    """The race behind the test above: the second Ctrl-C lands while the signal
    receiver hands SIGINT back to Python, and the task group wraps it."""
    from aioringbuf import _cli

    if sys.version_info >= (3, 11):
        group = builtins.BaseExceptionGroup
    else:  # what anyio's task groups raise on 3.10: the backport it depends on
        from exceptiongroup import BaseExceptionGroup as group

    def interrupted(args):
        raise group("unhandled errors in a TaskGroup", [group("inner", [KeyboardInterrupt()])])

    monkeypatch.setattr(_cli, "run_exec", interrupted)
    assert _cli.main(["exec"]) == _cli.EXIT_OK

    def broken(args):
        raise group("two", [KeyboardInterrupt(), OSError("real")])

    monkeypatch.setattr(_cli, "run_exec", broken)
    with pytest.raises(group):  # a real error is never swallowed
        _cli.main(["exec"])


def test_exits_show_code_signal_and_time(kernel, cgroup_root) -> None:
    group = cgroup_root / "exits"
    group.mkdir()
    with Cli("--exits", "--cgroup", str(group)) as cli:
        cli.wait_ready()
        code = spawn_in(group, ["/bin/sh", "-c", "exit 7"])
        code.wait(timeout=20)
        with Cli("--json", "--exits", "--cgroup", str(group)) as js:
            js.wait_ready()
            killed = spawn_in(group, ["/bin/sleep", "30"])
            time.sleep(0.2)
            killed.kill()
            killed.wait(timeout=20)
            _, jout, _ = js.stop()
        status, out, err = cli.stop()
    assert status == 0, err
    (row,) = [r for r in out.splitlines() if r.split()[1:2] == [str(code.pid)] and "[" in r]
    assert row.split()[0:4] == ["sh", str(code.pid), str(os.getpid()), "7"]
    assert re.search(r"\[exit 7, \d+\.\d{3} s after its exec\]$", row)
    killed_row = [r for r in out.splitlines() if str(killed.pid) in r and "[SIGKILL" in r]
    assert len(killed_row) == 1
    (ev,) = [e for e in json_events(jout) if e.get("event") == "exit"]
    assert (ev["pid"], ev["signal"], ev["exit_code"], ev["comm"]) == (killed.pid, 9, 0, "sleep")
    assert ev["since_exec"] and ev["duration_ns"] > 0


NOT_UTF8 = "import ctypes; ctypes.CDLL(None).prctl(15, b'\\xff\\xfe-aiorb\\xc3', 0, 0, 0); exit(5)"


def test_an_exit_with_a_comm_that_is_not_utf8_round_trips_as_json(kernel, cgroup_root) -> None:
    """prctl(PR_SET_NAME) gives the process a name that is not UTF-8; its
    exit line decodes back to the ExitEvent with those exact bytes."""
    group = cgroup_root / "exit-name"
    group.mkdir()
    with Cli("--json", "--exits", "--cgroup", str(group)) as cli:
        cli.wait_ready()
        child = spawn_in(group, [sys.executable, "-c", NOT_UTF8])
        assert child.wait(timeout=20) == 5
        status, out, err = cli.stop()
    assert status == 0, err
    (line,) = [ln for ln in out.splitlines()
               if json.loads(ln).get("event") == "exit" and json.loads(ln)["pid"] == child.pid]
    ev = msgspec.json.decode(line, type=ExitEvent)
    assert kernel_bytes(ev.comm) == b"\xff\xfe-aiorb\xc3"
    assert (ev.exit_code, ev.signal, ev.ppid) == (5, 0, os.getpid())
    doc = json.loads(line)
    assert {k: doc[k] for k in ev.__struct_fields__} == msgspec.to_builtins(ev)
    assert doc["since_exec"] is ev.since_exec is True


def test_exits_json_schema_describes_exit_lines_too(kernel, cgroup_root) -> None:
    proc = run_aioringbuf("exec", "--exits", "--json-schema", check=True)
    schema = json.loads(proc.stdout)
    assert schema["anyOf"] == [{"$ref": "#/$defs/ExecEvent"}, {"$ref": "#/$defs/ExitEvent"}]
    assert schema["$defs"]["ExecEvent"] == msgspec.json.schema(ExecEvent)["$defs"]["ExecEvent"]
    exit_def = schema["$defs"]["ExitEvent"]
    group = cgroup_root / "exit-schema"
    group.mkdir()
    with Cli("--json", "--exits", "--cgroup", str(group)) as cli:
        cli.wait_ready()
        spawn_in(group, ["/bin/sh", "-c", "exit 3"]).wait(timeout=20)
        _, out, _ = cli.stop()
    (ev,) = [e for e in json_events(out) if e.get("event") == "exit"]
    assert set(ev) == set(exit_def["properties"]) and set(exit_def["required"]) <= set(ev)
    assert exit_def["properties"]["event"] == {"const": "exit"} and ev["exit_code"] == 3


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ring_size", [8 << 20, 256 << 10])
def test_shutdown_accounts_for_every_attempt(kernel, cgroup_root, ring_size) -> None:
    """The consumer is stopped (SIGSTOP) while 6,000 execs run in its cgroup,
    then gets SIGTERM: it detaches, prints what the ring holds for up to a
    second, and its summary accounts for every attempt, exactly."""
    group = cgroup_root / "burst"
    group.mkdir()
    workers, each = 4, 1500
    # -x: every attempt, failed ones included (none is expected; if one is,
    # it is counted like the rest)
    with Cli("-x", "--json", "--cgroup", str(group), "--ring-size", str(ring_size)) as cli:
        cli.wait_ready()
        cli.proc.send_signal(signal.SIGSTOP)
        loop = f"for i in $(seq {each}); do {TRUE}; done"
        shells = [spawn_in(group, ["/bin/sh", "-c", loop]) for _ in range(workers)]
        for p in shells:
            assert p.wait(timeout=120) == 0
        cli.proc.send_signal(signal.SIGTERM)  # pending until it runs again
        cli.proc.send_signal(signal.SIGCONT)
        status, out, err = cli.stop(sig=0, timeout=60)
    assert status == 0, err
    attempts = workers * (each + 2)  # each worker also execs sh and seq
    delivered, shown, kernel_drops, queue_drops, decode_errors, unread = summary(err)
    printed = json_events(out)
    print(f"ring {ring_size}: {attempts} attempts = {delivered} delivered + {kernel_drops} "
          f"kernel drops + {queue_drops} queue drops + {decode_errors} decode errors + "
          f"{unread} unread")
    assert len(printed) == shown == delivered  # all in the cgroup, all shown
    assert delivered + kernel_drops + queue_drops + decode_errors + unread == attempts
    assert queue_drops == decode_errors == 0
    if ring_size == 8 << 20:
        assert kernel_drops == 0  # 6,008 records fit in 8 MiB
    else:
        assert kernel_drops > 0
