"""``cellar start --restart ...`` and what ``cellar ps`` / ``cellar events`` show of it (issue 14)."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.api import Api
from tests.support.cli import cellar, ps_json, table_rows
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root

def test_start_with_a_restart_policy_and_ps_shows_restarts_and_the_backoff(api: Api) -> None:
    cellar(api, "cell", "allocate", "rc")
    out = json.loads(cellar(api, "-o", "json", "start", "rc", "crash", "--restart", "on-failure",
                            "--restart-delay", "0.1", "--restart-max-delay", "30", "--start-limit", "off",
                            "--sh", "exit 1").stdout)
    assert out["run"] == 1 and out["restart"] == "on-failure"
    # the delay doubles to 30 s quickly: caught in backoff with restarts behind it
    row = wait_for(lambda: next((r for r in ps_json(api, "rc") if r["state"] == "backoff" and r["restarts"] >= 3), None),
                   "backoff after 3 restarts")
    assert row["restart_at_ns"] > time.time_ns() - 10**9 and row["restart_in_s"] >= 0
    assert row["restart"]["mode"] == "on-failure" and row["restart"]["max_delay_s"] == 30
    (line,) = table_rows(cellar(api, "ps", "rc").stdout)
    assert line["status"].startswith("Backoff, restart in ") and line["status"].endswith("(exited (1))"), line
    assert int(line["run"]) >= 4 and int(line["restarts"]) == int(line["run"]) - 1, line
    cellar(api, "stop", "rc", "crash")
    assert ps_json(api, "-a", "rc")[0]["state"] == "exited"
    cellar(api, "cell", "free", "rc")


def test_the_start_limit_flag_and_failed_in_ps(api: Api) -> None:
    cellar(api, "cell", "allocate", "rl")
    cellar(api, "start", "rl", "x", "--restart", "always", "--restart-delay", "0", "--start-limit", "2/60",
           "--sh", "exit 0")
    row = wait_for(lambda: next((r for r in ps_json(api, "rl") if r["state"] == "failed"), None), "failed")
    assert row["restarts"] == 1 and row["run"] == 2 and "start limit" in row["reason"]
    (line,) = table_rows(cellar(api, "ps", "rl").stdout)  # shown without --all: it needs attention
    assert line["status"].startswith("Failed (exited (0) "), line
    cellar(api, "cell", "free", "rl")


def test_bad_restart_flags_are_usage_errors(api: Api) -> None:
    for args in (["--restart", "sometimes"], ["--restart-delay", "soon"], ["--start-limit", "5"],
                 ["--start-limit", "x/10"]):
        proc = cellar(api, "start", "none", "x", *args, "--", "true", ok=False)
        assert proc.returncode == 2 and proc.stderr.startswith("cellar: usage:"), (args, proc.stderr)
    proc = cellar(api, "start", "none", "x", "--restart", "always", "--restart-delay", "-1", "--", "true", ok=False)
    assert proc.returncode in (1, 2) and "delay_s" in proc.stderr, proc.stderr
    proc = cellar(api, "start", "none", "x", "--restart-delay", "1", "--", "true", ok=False)
    assert proc.returncode == 2 and "--restart" in proc.stderr, proc.stderr


def test_events_show_backoff_restarting_and_failed(api: Api) -> None:
    import subprocess

    from tests.support import REPO
    from tests.support.cli import CELLAR, cli_env

    cellar(api, "cell", "allocate", "re")
    follow = subprocess.Popen([*CELLAR, "--addr", api.daemon.socket, "events", "re"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=cli_env(), cwd=REPO)
    try:
        time.sleep(1.0)  # the watch is on
        cellar(api, "start", "re", "x", "--restart", "on-failure", "--restart-delay", "0.3", "--start-limit", "2/60",
               "--sh", "exit 4")
        lines: list[str] = []
        deadline = time.monotonic() + scaled(20)
        assert follow.stdout is not None
        while time.monotonic() < deadline and not any(" failed " in line for line in lines):
            lines.append(follow.stdout.readline())
    finally:
        follow.kill()
        follow.wait()
    events = [line.split()[1] for line in lines if line.strip()]
    assert events == ["started", "exited", "backoff", "restarting", "started", "exited", "failed"], lines
    (backoff,) = [line for line in lines if " backoff " in line]
    assert "re/x" in backoff and "exit=code 4" in backoff and "restart in 0." in backoff, backoff
    (failed,) = [line for line in lines if " failed " in line]
    assert "reason=start limit hit: 2 starts within 60s" in failed, failed
    cellar(api, "cell", "free", "re")
