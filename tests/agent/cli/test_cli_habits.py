"""``cellar`` as kubectl, docker and git users type it (issue 16): ``-o`` in any position, a
suggestion for a mistyped command in every group, and what to do when cellard cannot be reached."""

from __future__ import annotations

import json
import subprocess
import tomllib

import pytest

from tests.support.api import Api
from tests.support.cli import CELLAR, cellar, cli_env

# Read-only commands that answer on a test daemon: each as `-o json CMD` and `CMD -o json`.
LISTINGS = [("ps", "-a"), ("cell", "ls"), ("info",), ("health",), ("version",), ("queue", "ls"),
            ("files", "ls"), ("jobs", "ls"), ("inventory",)]


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI with nothing listening at --addr."""
    return subprocess.run([*CELLAR, *args], capture_output=True, text=True, env=cli_env(), timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.root
@pytest.mark.parametrize("command", LISTINGS, ids=" ".join)
def test_output_after_the_subcommand_as_kubectl_takes_it(api: Api, command: tuple[str, ...]) -> None:
    before = cellar(api, "-o", "json", *command)
    after = cellar(api, *command, "-o", "json")
    long_form = cellar(api, *command, "--output=json")
    for proc in (before, after, long_form):
        json.loads(proc.stdout)  # JSON in every position
    assert type(json.loads(after.stdout)) is type(json.loads(before.stdout))
    table = cellar(api, "-o", "json", *command, "-o", "table").stdout  # the later, nearer one wins
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)


@pytest.mark.root
def test_output_after_a_group_and_its_choices(api: Api) -> None:
    json.loads(cellar(api, "cell", "-o", "json", "ls").stdout)
    bad = cellar(api, "ps", "-o", "xml", ok=False)
    assert bad.returncode == 2 and bad.stderr.startswith("cellar: usage: Invalid value for '-o' / '--output': "
                                                         "'xml' is not one of 'table', 'json', 'yaml'"), bad.stderr


@pytest.mark.root
def test_get_keeps_its_own_output_choices(api: Api) -> None:
    api.allocate("habits")
    assert "habits" in tomllib.loads(cellar(api, "get", "habits", "-o", "toml").stdout)["cells"]
    json.loads(cellar(api, "get", "habits", "-o", "json").stdout)


def test_every_command_has_output_in_its_help() -> None:
    from agent.cli import COMMANDS, cli

    ctx = cli.make_context("cellar", ["--help"], resilient_parsing=True)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert any("-o" in getattr(p, "opts", ()) for p in command.params), name


@pytest.mark.parametrize(("args", "suggestion"), [
    (("cel",), "cell"), (("helth",), "health"), (("pss",), "ps"), (("daemon-log",), "daemon-logs"),
    (("cell", "alocate"), "allocate"), (("cell", "lss"), "ls"), (("files", "cta"), "cat"),
    (("queue", "craete"), "create"), (("jobs", "shwo"), "show"), (("fl", "modles"), "models"),
    (("pki", "isue"), "issue"), (("machines", "shw"), "show"), (("dispatch", "lss"), "ls"),
])
def test_a_mistyped_command_suggests_the_nearest(args: tuple[str, ...], suggestion: str) -> None:
    proc = offline("--addr", "/nonexistent/cellar.sock", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"cellar: usage: No such command {args[-1]!r}. Did you mean {suggestion!r}?"], proc.stderr


def test_nothing_near_is_no_suggestion() -> None:
    proc = offline("xyzzy")
    assert proc.returncode == 2 and proc.stderr.splitlines() == ["cellar: usage: No such command 'xyzzy'."]


def test_unreachable_socket_says_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sock = tmp_path / "none.sock"
    proc = offline("--addr", str(sock), "ps")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"cellar: UNAVAILABLE: cannot reach cellard at {sock} (no such socket): is it running? "
        "start it with `cellard`, or set --addr / CELLAR_ADDR"], proc.stderr
    assert "failed to connect" not in proc.stderr


def test_unreachable_tcp_names_the_address_and_the_tls_flags() -> None:
    proc = offline("--insecure-tcp-dev", "--addr", "127.0.0.1:1", "health")
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("cellar: UNAVAILABLE: cannot reach cellard at 127.0.0.1:1 (connection refused): ")
    assert "--ca, --cert, --key" in line and "CELLAR_ADDR" in line


def test_version_without_a_server_says_so_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = json.loads(offline("--addr", str(tmp_path / "none.sock"), "version", "-o", "json").stdout)
    assert out["server"] is None and "cannot reach cellard at" in out["server_error"]
