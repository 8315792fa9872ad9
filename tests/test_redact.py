"""Redaction in the web example (issue #12, row 12): each shape of secret, by itself
and through a real server and real execs.

Best effort by nature (see examples/web/redact.py): these are the shapes it
promises to mask, and the look-alikes it must leave alone.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import anyio
import anyio.to_thread
import httpx
import pytest
from test_web import TIMEOUT, _load, exec_events_of
from webserver import WebServer

SHAPES = [
    # row 12 of the issue, one by one
    (["sshpass", "-p", "hunter2", "ssh", "host"], ["sshpass", "-p", "***", "ssh", "host"]),
    (["mysql", "-phunter2", "db"], ["mysql", "-p***", "db"]),
    (["/usr/bin/mysqldump", "-p", "hunter2"], ["/usr/bin/mysqldump", "-p", "***"]),
    (["curl", "-u", "bob:pw9", "https://h/"], ["curl", "-u", "bob:***", "https://h/"]),
    (["curl", "-ubob:pw9", "--user=al:pw8"], ["curl", "-ubob:***", "--user=al:***"]),
    (["curl", "--oauth2-bearer", "tok3n", "https://h/"],
     ["curl", "--oauth2-bearer", "***", "https://h/"]),
    (["openssl", "rsa", "-passin", "pass:s3cret", "-in", "k.pem"],
     ["openssl", "rsa", "-passin", "pass:***", "-in", "k.pem"]),
    (["openssl", "enc", "-k", "x", "-pass", "pass:s3cret"],
     ["openssl", "enc", "-k", "x", "-pass", "***"]),  # -pass itself says secret
    (["openssl", "pkcs12", "-passout", "PASS:s3cret"],
     ["openssl", "pkcs12", "-passout", "PASS:***"]),
    (["nmcli", "dev", "wifi", "connect", "net", "password", "hunter2"],
     ["nmcli", "dev", "wifi", "connect", "net", "password", "***"]),
    (["curl", "-d", '{"user": "bob", "password": "hunter2"}'],
     ["curl", "-d", '{"user": "bob", "password": "***"}']),
    (["x", '{"api_key":"k\\"ey","n":1}'], ["x", '{"api_key":"***","n":1}']),
    (["sudo", "mysql", "-phunter2"], ["sudo", "mysql", "-p***"]),  # after a wrapper
    (["redis-cli", "-a", "hunter2", "ping"], ["redis-cli", "-a", "***", "ping"]),
    (["smbclient", "-U", "bob%hunter2", "//h/s"], ["smbclient", "-U", "bob%***", "//h/s"]),
    # shapes masked before, still masked
    (["mysql", "--password", "s3cret", "db"], ["mysql", "--password", "***", "db"]),
    (["env", "PGPASSWORD=pw", "AWS_ACCESS_KEY=AKIA1"], ["env", "PGPASSWORD=***",
                                                         "AWS_ACCESS_KEY=***"]),
    (["git", "clone", "https://u:tok@github.com/r"], ["git", "clone", "https://u:***@github.com/r"]),
]

LOOKALIKES = [
    ["mkdir", "-p", "/tmp/x"],  # -p is a password only for programs that say so
    ["ssh", "-p", "2222", "host"],
    ["docker", "run", "-u", "1000:1000", "img"],  # -u user:group, not curl's user:password
    ["curl", "-u", "bob", "https://h/"],  # no password given: curl asks for it
    ["pass", "show", "mail"],  # the password manager, as argv[0]
    ["openssl", "rsa", "-passin", "env:VAR"],
    ["echo", '{"user": "bob", "n": "1"}'],
    ["ls", "-la", "/tmp/keys"],
    ["ssh", "--password"],
]


@pytest.mark.parametrize(("argv", "masked"), SHAPES, ids=lambda v: " ".join(v)[:40])
def test_each_shape_is_masked(argv: list[str], masked: list[str]) -> None:
    out = _load("redact").Redactor()(argv)
    assert out == masked
    assert not {"hunter2", "pw9", "pw8", "tok3n", "s3cret"} & set(" ".join(out).split())


@pytest.mark.parametrize("argv", LOOKALIKES, ids=lambda v: " ".join(v)[:40])
def test_lookalikes_are_left_alone(argv: list[str]) -> None:
    assert _load("redact").Redactor()(argv) == argv


def test_redaction_stays_linear_on_hostile_arguments() -> None:
    """In a child with a deadline: a backtracking pattern would not finish."""
    code = ("import sys; sys.path.insert(0, 'examples/web'); from redact import Redactor\n"
            "r = Redactor()\n"
            "args = ['x', '\"password\":\"' * 300, 'password=' * 400, 'a' * 4000 + '=',\n"
            "        '-' + 'p' * 4000, 'pass:' + ':' * 4000, '://' + ':' * 2000 + '@' * 2000]\n"
            "for _ in range(20): r(args)\n"
            "print('ok')\n")
    from webserver import ROOT

    proc = subprocess.run(["python3", "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=20)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_custom_patterns_run_on_re2() -> None:
    import aioringbuf

    redact = _load("redact")
    custom = redact.Redactor([aioringbuf.exec.Pattern(r"pin (\d+)"), re.compile(r"sk-\w+")],
                             defaults=False)
    assert custom(["a", "pin 4711", "sk-123", "--password", "x"]) == \
        ["a", "pin ***", "***", "--password", "x"]


@pytest.fixture(scope="module")
def server(kernel: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    srv = WebServer(tmp_path_factory.mktemp("web") / "server.log", "--redact", r"sk-[a-z0-9]+")
    yield srv
    srv.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_real_exec_with_every_shape_reaches_the_page_masked(
    server: WebServer, tmp_path, anyio_backend: str
) -> None:
    from test_cli_hostile import exec_as
    from webserver import named_program

    name, prog = named_program(tmp_path)
    argv = [prog, "mysql", "-phunter2", "curl", "-u", "bob:pw9", "--oauth2-bearer", "tok3n",
            "pass:s3cret", "password", "hunter2", '{"password": "hunter2"}', "sk-live0", "plain"]
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as client:
        async with client.stream("GET", "/events", params={"name": f"^{name}$"}) as r:
            await anyio.to_thread.run_sync(lambda: exec_as(*argv, program=prog))
            with anyio.fail_after(20):
                (ev,) = await exec_events_of(r, 1)
    # "mysql" and "curl" as arguments (as after sudo or ssh) switch to their options
    assert ev["argv"] == [prog, "mysql", "-p***", "curl", "-u", "bob:***", "--oauth2-bearer",
                          "***", "pass:***", "password", "***", '{"password": "***"}', "***",
                          "plain"]
