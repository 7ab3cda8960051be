"""``cellar logs`` as kubectl, docker and journalctl users expect it (issue 16): ``--tail N`` is N
lines (the exit record is a marker, not a line, and still prints), ``--since``/``--until`` read
durations, dates and times as journalctl does."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from tests.agent.cli.test_cells_cli import wait_exited
from tests.support.api import Api
from tests.support.cli import cellar

pytestmark = pytest.mark.root


def _finished(api: Api, cell: str, *names: str) -> None:
    api.allocate(cell)
    for name in names:
        api.start(cell, name, "sh", "-c", f"for i in 1 2 3 4; do echo {name}$i; done")
        wait_exited(api, cell, name)


def test_tail_counts_lines_not_the_exit_record(api: Api) -> None:
    _finished(api, "tail", "x")
    for args in (("--tail", "3"), ("-f", "--tail", "3")):
        proc = cellar(api, "logs", "tail/x", *args)
        assert proc.stdout.splitlines() == ["x2", "x3", "x4"], (args, proc.stdout)
        assert [line for line in proc.stderr.splitlines() if "exited: code 0" in line], (args, proc.stderr)
    for args in (("--tail", "1"), ("-f", "--tail", "1")):
        proc = cellar(api, "logs", "tail/x", *args)
        assert proc.stdout.splitlines() == ["x4"], (args, proc.stdout, proc.stderr)
        assert "exited: code 0" in proc.stderr
    records = [json.loads(x) for x in cellar(api, "-o", "json", "logs", "tail/x", "--tail", "2").stdout.splitlines()]
    assert [r.get("line") for r in records if r.get("channel") == "stdout"] == ["x3", "x4"]
    assert [r["channel"] for r in records if "channel" in r][-1] == "exit"


def test_tail_of_a_whole_cell_counts_lines_of_every_executable(api: Api) -> None:
    _finished(api, "tails", "a", "b")
    proc = cellar(api, "logs", "tails", "--tail", "3")
    assert proc.stdout.splitlines() == ["[b] b2", "[b] b3", "[b] b4"], proc.stdout
    assert "[b] exited: code 0" in proc.stderr and "[a] exited" not in proc.stderr, proc.stderr
    proc = cellar(api, "logs", "tails", "--tail", "5")
    assert proc.stdout.splitlines() == ["[a] a4", "[b] b1", "[b] b2", "[b] b3", "[b] b4"], proc.stdout
    assert "[a] exited: code 0" in proc.stderr and "[b] exited: code 0" in proc.stderr, proc.stderr


def test_since_and_until_read_durations_dates_and_local_times(api: Api) -> None:
    _finished(api, "since", "x")
    lines = ["x1", "x2", "x3", "x4"]
    today = datetime.now().strftime("%Y-%m-%d")
    local = datetime.fromtimestamp(time.time() - 3600).strftime("%Y-%m-%dT%H:%M:%S")
    for since in ("1h30m", "2d", "1h ago", "-1h", today, f"{today} 00:00", local, "today", "yesterday"):
        assert cellar(api, "logs", "since/x", "--since", since).stdout.splitlines() == lines, since
    for since in ("tomorrow", "+1h"):
        assert cellar(api, "logs", "since/x", "--since", since).stdout == "", since
    for until in ("1h30m", "2d", "yesterday", local):
        assert cellar(api, "logs", "since/x", "--until", until).stdout == "", until
    assert cellar(api, "logs", "since/x", "--until", "tomorrow").stdout.splitlines() == lines


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_a_bad_time_is_a_usage_error_naming_the_flag(api: Api, flag: str) -> None:
    proc = cellar(api, "logs", "since/x", flag, "soon", ok=False)
    assert proc.returncode == 2 and proc.stderr.startswith(f"cellar: usage: Invalid value for '{flag}': 'soon' is not")
