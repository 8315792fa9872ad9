"""`aioringbuf exec` as an execsnoop user types it (issue #15, item 4).

The short options of libbpf-tools' and BCC's execsnoop with their meaning,
the success-only default, the live drop warning and the one-line errors:
each against the real CLI process and the real kernel, each test's execs
found by a unique marker or by pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from cgroups import spawn_in
from cliproc import ROOT, aioringbuf_argv, run_aioringbuf, wait_stderr
from privileges import AS_NOBODY
from test_cli import TRUE, Cli, env, json_events, marker, not_traced, rows, run, summary

import aioringbuf

CLI = aioringbuf_argv("exec")


def fail_to_exec(path: str) -> subprocess.Popen:
    """A shell whose exec of ``path`` fails (-ENOENT): one failed attempt, by its pid."""
    return run(["/bin/sh", "-c", 'exec "$0"', path])


def test_default_shows_successes_only_and_x_adds_failures(kernel, tmp_path) -> None:
    """execsnoop's default: no failed rows (a PATH search would print many); the
    kernel keeps them out of the ring and the summary counts them, -x shows them."""
    mark = marker()
    missing = str(tmp_path / mark)
    with Cli() as table, Cli("--json") as js, Cli("-x") as fails, Cli("--fails", "--json") as fjs:
        for cli in (table, js, fails, fjs):
            cli.wait_ready()
        failed = fail_to_exec(missing)
        ok = run([TRUE, mark])
        results = [cli.stop() for cli in (table, js, fails, fjs)]
    for status, _, err in results:
        assert status == 0, err
    (_, out, err), (_, jout, jerr), (_, xout, xerr), (_, xjout, _) = results
    assert [r[:4] for r in rows(out, mark) if r[1] == str(ok.pid)] == \
        [["true", str(ok.pid), str(os.getpid()), "0"]]
    assert [r for r in rows(out, mark) if r[3] != "0"] == []  # the shell's exec succeeded
    assert all(int(line.split()[3]) == 0 for line in out.splitlines()[1:])  # machine-wide
    assert all(e["ret"] == 0 for e in json_events(jout))
    assert [e["pid"] for e in json_events(jout) if mark in e["argv"]] == [ok.pid]
    # Left out in the kernel: never events, never drops, but counted.
    for e in (err, jerr):
        delivered, shown, kernel_drops, queue_drops, *_ = summary(e)
        assert delivered == shown and kernel_drops == queue_drops == 0
        assert not_traced(e) >= 1  # our failed exec at least
        assert "failed execs not traced (-x shows them)" in e
    assert not_traced(xerr) == 0
    # the shell's own exec, its failed exec of the missing file, and true
    want = sorted([(failed.pid, 0), (failed.pid, -2), (ok.pid, 0)])
    assert sorted((int(r[1]), int(r[3])) for r in rows(xout, mark)) == want
    (bad,) = [r for r in rows(xout, mark) if r[3] == "-2"]
    assert bad == ["sh", str(failed.pid), str(os.getpid()), "-2", missing]
    assert sorted((e["pid"], e["ret"]) for e in json_events(xjout)
                  if mark in " ".join(e["argv"])) == want


def test_time_timestamp_and_uid_columns(kernel) -> None:
    """-T: HH:MM:SS; -t: seconds since the trace started; -U: the real uid."""
    mark = marker()
    started = time.monotonic()
    with Cli("-T", "-t", "-U") as cli, Cli("--timestamp", "--print-uid", "--time") as longs:
        cli.wait_ready()
        longs.wait_ready()
        ready = time.monotonic() - started
        time.sleep(0.2)
        nobody = run([*AS_NOBODY, TRUE, mark])
        elapsed = time.monotonic() - started
        status, out, err = cli.stop()
        _, lout, _ = longs.stop()
    assert status == 0, err
    for text in (out, lout):
        header = text.splitlines()[0].split()
        assert header == ["TIME", "TIME(s)", "UID", "PCOMM", "PID", "PPID", "RET", "ARGS"]
        (row,) = [r for r in rows(text, mark) if r[4] == str(nobody.pid) and r[3] == "true"]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", row[0])
        assert re.fullmatch(r"\d+\.\d{3}", row[1])
        # after the trace began (it was ready by then), before we looked
        assert 0 < float(row[1]) <= elapsed and float(row[1]) >= 0.2
        assert row[2] == "65534" and row[3] == "true"
    assert ready < elapsed


def test_line_filters_on_the_joined_arguments(kernel) -> None:
    """-l REGEX: the whole argv, joined by spaces (not only argv[0], as --name);
    with --exits, the exit of a process whose exec matched."""
    mark = marker()
    with Cli("-l", f"{mark} needle$", "--exits") as cli, Cli("--line", "^/bin/true x ") as longs:
        cli.wait_ready()
        longs.wait_ready()
        hit = run([TRUE, mark, "needle"])
        run([TRUE, mark, "needles"])  # the $ rules it out
        run([TRUE, "needle", mark])
        status, out, err = cli.stop()
        _, lout, _ = longs.stop()
    assert status == 0, err
    body = out.splitlines()[1:]
    assert len(body) == 2, out  # one exec, and its exit
    assert body[0].split() == ["true", str(hit.pid), str(os.getpid()), "0", TRUE, mark, "needle"]
    assert body[1].split()[:4] == ["true", str(hit.pid), str(os.getpid()), "0"]
    assert "[exit 0," in body[1]
    assert summary(err)[1] == 2
    assert rows(lout, mark) == []  # argv[1] is not x


def test_max_args_cuts_the_table_not_the_json(kernel) -> None:
    mark = marker()
    many = [f"a{i}" for i in range(30)]
    with Cli("--max-args", "3") as three, Cli() as default, Cli("--json", "--max-args", "2") as js:
        for cli in (three, default, js):
            cli.wait_ready()
        run([TRUE, mark, *many])
        run([TRUE, mark])
        _, out3, _ = three.stop()
        _, out20, _ = default.stop()
        _, jout, _ = js.stop()
    long3, short3 = sorted((r.split(maxsplit=4)[4] for r in out3.splitlines() if mark in r),
                           key=len, reverse=True)
    assert long3 == f"{TRUE} {mark} a0 ..."
    assert short3 == f"{TRUE} {mark}"  # two arguments: nothing cut, no " ..."
    (long20,) = [r.split(maxsplit=4)[4] for r in out20.splitlines() if "a0" in r and mark in r]
    assert long20 == " ".join([TRUE, mark, *many[:18]]) + " ..."  # execsnoop's 20
    assert sorted(len(e["argv"]) for e in json_events(jout) if mark in e["argv"]) == [2, 32]
    bad = run_aioringbuf("exec", "--max-args", "0", env=env())
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr


def test_quote_puts_every_argument_in_double_quotes_escaped(kernel) -> None:
    """-q as execsnoop: "arg" "arg"; a quote inside is \\", a backslash \\\\, and
    control characters stay visible escapes: no forged quote, no raw ESC."""
    mark = marker()
    hostile = ['a"b', "back\\slash", "\x1b[2J\r\n", "two words", "", 'end\\"']
    with Cli("-q") as cli, Cli("--quote") as longs:
        cli.wait_ready()
        longs.wait_ready()
        run([TRUE, mark, *hostile])
        status, out, err = cli.stop()
        _, lout, _ = longs.stop()
    assert status == 0, err
    for text in (out, lout):
        (row,) = [line for line in text.splitlines() if mark in line]
        args = row.split(maxsplit=4)[4]
        assert args == (f'"{TRUE}" "{mark}" "a\\"b" "back\\\\slash" "\\x1b[2J\\r\\n" '
                        f'"two words" "" "end\\\\\\""')
        assert row.isprintable()


def test_short_uid_name_and_cgroup(kernel, cgroup_root, tmp_path) -> None:
    """-u, -n and -c are --uid, --name and --cgroup (the kernel filters included)."""
    mark = marker()
    renamed = tmp_path / f"{mark}-prog"
    renamed.symlink_to(TRUE)
    inner = cgroup_root / "short"
    inner.mkdir()
    with Cli("--json", "-u", "nobody") as by_uid, Cli("-n", f"^{mark}-prog$") as by_name, \
            Cli("--json", "-c", str(cgroup_root)) as by_cgroup:
        for cli in (by_uid, by_name, by_cgroup):
            cli.wait_ready()
        run([TRUE, mark, "root"])
        nobody = run([*AS_NOBODY, TRUE, mark, "nobody"])
        named = run([str(renamed), mark])
        inside = spawn_in(inner, [TRUE, mark, "inside"])
        inside.wait(timeout=20)
        results = [cli.stop() for cli in (by_uid, by_name, by_cgroup)]
    for status, _, err in results:
        assert status == 0, err
    (_, uout, uerr), (_, nout, _), (_, cout, cerr) = results
    assert all(e["uid"] == 65534 for e in json_events(uout))
    assert [e["pid"] for e in json_events(uout) if mark in e["argv"]] == [nobody.pid]
    assert summary(uerr)[0] == summary(uerr)[1]  # one uid: filtered in the kernel
    # PCOMM: the kernel keeps 15 bytes of the name
    assert [r[:2] for r in rows(nout, mark)] == [[f"{mark}-prog"[:15], str(named.pid)]]
    assert [e["pid"] for e in json_events(cout)] == [inside.pid]
    assert summary(cerr)[:2] == (1, 1)


def test_version_and_examples_in_help() -> None:
    for argv in (["--version"], ["exec", "--version"]):
        proc = run_aioringbuf(*argv, env=env())
        assert proc.returncode == 0
        assert proc.stdout.strip() == f"aioringbuf {aioringbuf.__version__}"
    helptext = run_aioringbuf("exec", "--help", env=env()).stdout
    examples = helptext[helptext.index("examples:"):helptext.index("Columns:")]
    assert "aioringbuf exec -x " in examples and "aioringbuf exec -l tpkg" in examples
    # Python 3.13's argparse names the metavar once ("-u, --uid UID"), earlier
    # versions after each form ("-u UID, --uid UID").
    for short, long, meta in (("-x", "--fails", ""), ("-t", "--timestamp", ""),
                              ("-T", "--time", ""), ("-U", "--print-uid", ""),
                              ("-u", "--uid", "UID"), ("-n", "--name", "REGEX"),
                              ("-l", "--line", "REGEX"), ("-c", "--cgroup", "PATH"),
                              ("-q", "--quote", "")):
        m = f" {meta}" if meta else ""
        forms = (f"{short}{m}, {long}{m}", f"{short}, {long}{m}")
        assert any(form in helptext for form in forms), forms
    assert "--max-args N" in helptext and "--failed" in helptext
    assert "neither an\nevent nor a drop" in helptext  # what the kernel filters mean


def _wait_for_warning(cli: Cli, n: int, timeout: float = 20) -> float:
    """Read the CLI's stderr until it holds ``n`` warnings; when the n-th came."""
    n_warnings = re.compile(rb"(?:exec: warning:[\s\S]*?){%d}" % n)
    cli.stderr = wait_stderr(cli.proc, n_warnings, cli.stderr, timeout)[1]
    return time.monotonic()


WARNING = re.compile(r"^aioringbuf exec: warning: lost since the last warning: (\d+) kernel "
                     r"drops(?: \(\d+ at entry: too many execs in flight\))?, (\d+) queue "
                     r"drops, (\d+) lines not written(?:; a larger --ring-size holds longer "
                     r"bursts)?$")


@pytest.mark.timeout(120)
def test_drops_are_reported_live_at_most_once_a_second(kernel, cgroup_root) -> None:
    """A 4 KiB ring and a consumer held still (SIGSTOP) during bursts of execs
    in its cgroup: on stderr, while it runs, a warning per burst with the
    drops since the last one; together they add up to the summary's."""
    group = cgroup_root / "drops"
    group.mkdir()
    loop = f"for i in $(seq 200); do {TRUE}; done"
    with Cli("--json", "-c", str(group), "--ring-size", "4096") as cli:
        cli.wait_ready()
        times = []
        for n in (1, 2):
            cli.proc.send_signal(signal.SIGSTOP)
            assert spawn_in(group, ["/bin/sh", "-c", loop]).wait(timeout=60) == 0
            cli.proc.send_signal(signal.SIGCONT)
            times.append(_wait_for_warning(cli, n))
        time.sleep(1.5)  # no exec in the cgroup now: no warning either
        status, _out, err = cli.stop()
    assert status == 0, err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert "Traceback" not in err
    counts = []
    for line in lines:
        m = WARNING.match(line)
        assert m, line
        counts.append(tuple(int(g) for g in m.groups()))
    assert all(sum(c) > 0 for c in counts)  # a warning only when something was lost
    delivered, _shown, kernel_drops, queue_drops, _, _ = summary(err)
    assert kernel_drops > 0
    assert sum(c[0] for c in counts) == kernel_drops  # each drop reported once, live
    assert sum(c[1] for c in counts) == queue_drops == 0
    assert delivered + kernel_drops == 2 * 202  # sh, seq and 200 execs of true, twice
    assert len(lines) == 2 and times[1] - times[0] >= 0.9


def _without(module: str) -> list[str]:
    """`python -m aioringbuf` where ``import module`` fails as if it were not
    installed: None in sys.modules is how Python blocks an import."""
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; "
            "sys.argv = ['aioringbuf', *sys.argv[1:]]; "
            "runpy.run_module('aioringbuf', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("backend", ["trio", "uvloop"])
def test_a_backend_that_is_not_installed_is_one_line(backend) -> None:
    proc = subprocess.run([*_without(backend), "exec", "--backend", backend],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"aioringbuf exec: --backend {backend} needs the {backend} package")
    assert line.endswith(f"pip install 'aioringbuf[{backend}]'")
    assert proc.stdout == ""


def test_a_missing_tracefs_is_one_line_that_says_how_to_mount_it(kernel) -> None:
    """In a mount namespace of its own (the machine's tracefs stays), unmounted."""
    script = ("umount /sys/kernel/tracing; umount /sys/kernel/debug 2>/dev/null; "
              "! mountpoint -q /sys/kernel/tracing || exit 99; exec \"$@\"")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                           script, "sh", *CLI], capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("aioringbuf exec: tracefs is not mounted")
    assert line.endswith("mount -t tracefs nodev /sys/kernel/tracing")
    assert proc.stdout == ""
    assert os.path.isdir("/sys/kernel/tracing/events")  # ours was never touched


def _bpf_fds(pid: int) -> int:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return 0
    count = 0
    for name in names:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("anon_inode:bpf")
        except OSError:
            continue
    return count


@pytest.mark.timeout(180)
def test_ctrl_c_during_start_up_is_one_line_and_status_130(kernel) -> None:
    """SIGINT while the BPF object is being loaded (its maps exist, nothing is
    announced yet): no trace, no traceback, 128 + SIGINT. Tried a few times:
    loading is quick, and the signal must land inside it."""
    for _ in range(10):
        with Cli("--ring-size", str(1 << 29)) as cli:
            pid = cli.proc.pid
            deadline = time.monotonic() + 30
            while _bpf_fds(pid) < 2 and cli.proc.poll() is None:  # loading: maps created
                assert time.monotonic() < deadline, "never started loading"
                time.sleep(0.0005)
            cli.proc.send_signal(signal.SIGINT)
            status, out, err = cli.stop(sig=0)
        assert "Traceback" not in err, err
        if "tracing" in err:  # the load won the race: a normal end
            assert status == 0, err
            summary(err)
            continue
        assert status == 130, err
        (line,) = err.strip().splitlines()
        assert line == "aioringbuf exec: interrupted (SIGINT) while starting; nothing was traced"
        assert out == ""
        return
    pytest.fail("SIGINT never landed during start-up in 10 tries")


def _maps_msgspec(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "msgspec/_core" in f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_ctrl_c_while_the_modules_import_is_one_line_and_status_130() -> None:
    """SIGINT while `python -m aioringbuf` is still importing the command's
    modules (msgspec's extension is mapped, no BPF object exists yet): one
    line and 128 + SIGINT, not a traceback. The package root imports nothing
    itself, so the command's own code is running by then."""
    for _ in range(10):
        with Cli() as cli:
            pid = cli.proc.pid
            deadline = time.monotonic() + 30
            while not _maps_msgspec(pid) and cli.proc.poll() is None:
                assert time.monotonic() < deadline, "never started importing"
                time.sleep(0.0005)
            landed_in_import = _bpf_fds(pid) == 0
            cli.proc.send_signal(signal.SIGINT)
            status, out, err = cli.stop(sig=0)
        assert "Traceback" not in err, err
        if "tracing" in err:  # start-up won the race: a normal end
            assert status == 0, err
            continue
        assert status == 130, err
        (line,) = err.strip().splitlines()
        assert out == ""
        if line == "aioringbuf: interrupted (SIGINT) while starting; nothing was traced":
            assert landed_in_import
            return
        assert line == "aioringbuf exec: interrupted (SIGINT) while starting; nothing was traced"
    pytest.fail("SIGINT never landed while the modules imported in 10 tries")
