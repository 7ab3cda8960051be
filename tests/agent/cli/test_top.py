"""``cellar top`` in a real terminal (tmux on a private socket) and in a pipe: a busy cell with a CPU quota
shows its CPU near the quota and its memory against its limit (issue 16). The captured pane is saved
as ``cellar-top.txt`` in the test's tmp dir (the path is printed)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.api import Api, exe_info
from tests.support.cli import CELLAR, cellar, check_schema, cli_env
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root

MIB = 1024 * 1024
#: Burns CPU while holding ~16 MiB in a shell variable.
BUSY = "x=$(head -c 16000000 /dev/zero | tr '\\0' a); while :; do :; done"


@pytest.fixture
def busy(api: Api) -> Iterator[Api]:
    api.allocate("busy", cpu_max_quota_us=20_000, cpu_max_period_us=100_000, memory_max=64 * MIB, pids_max=20)
    api.start("busy", "spin", "sh", "-c", BUSY)
    wait_for(lambda: api.inspect("busy").stats.memory_current > 12 * MIB, "the busy cell holds its memory",
             timeout=scaled(20))
    yield api
    api.free("busy")


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """tmux on a private server (-L), killed at the end even when the test fails."""
    server = ["tmux", "-L", f"cellar-top-{uuid.uuid4().hex[:8]}"]
    yield server
    subprocess.run([*server, "kill-server"], capture_output=True, timeout=30)


def _busy_row(screen: str) -> list[str] | None:
    """The busy cell's cells on the pane, split on runs of 2+ spaces (rich pads with spaces)."""
    for line in screen.splitlines():
        if line.strip().startswith("busy "):
            return re.split(r"\s{2,}", line.strip())
    return None


def _cpu_near_quota(row: list[str] | None) -> bool:
    match = row and re.fullmatch(r"([\d.]+)% / 20%", row[1])
    return bool(match) and 12.0 <= float(match.group(1)) <= 26.0  # type: ignore[union-attr]


def test_top_in_a_terminal_shows_cpu_near_the_quota_and_memory_against_the_limit(
        busy: Api, tmux: list[str], tmp_path: Path) -> None:
    command = shlex.join([*CELLAR, "--addr", busy.daemon.socket, "top", "busy", "--interval", "0.5"])
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli_env().items() if k in ("PYTHONPATH", "HOME", "PATH"))
    subprocess.run([*tmux, "new-session", "-d", "-x", "150", "-y", "20", "-c", str(REPO),
                    f"env -u COLUMNS -u LINES {env} {command}"], check=True, timeout=30)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "0"], capture_output=True, text=True,
                              timeout=30).stdout

    def near_quota() -> str | None:
        shown = screen()
        return shown if _cpu_near_quota(_busy_row(shown)) else None

    pane = wait_for(near_quota, "top shows the busy cell's CPU near its quota", timeout=scaled(30))
    artifact = tmp_path / "cellar-top.txt"
    artifact.write_text(pane)
    print(f"cellar top pane saved to {artifact}")
    row = _busy_row(pane)
    assert row is not None and "CELL" in pane and "PSI CPU/MEM/IO" in pane, pane
    _cell, _cpu, memory, pids, oom, psi, running = row
    assert re.fullmatch(r"1[2-9](\.\d)?MiB / 64MiB \(\d+\.\d%\)", memory), memory
    assert re.fullmatch(r"[1-9] / 20", pids) and oom == "0" and running == "1", row
    assert re.fullmatch(r"[\d.]+/[\d.]+/[\d.]+", psi), psi
    assert "every 0.5s" in pane.splitlines()[0]


def test_top_in_a_pipe_is_plain_text_or_ndjson(busy: Api) -> None:
    plain = cellar(busy, "top", "busy", "--interval", "0.5").stdout  # no terminal: one sample, no escapes
    assert "\x1b" not in plain and plain.splitlines()[1].split()[:3] == ["CELL", "CPU", "MEMORY"], plain
    samples = [json.loads(line) for line in cellar(busy, "-o", "json", "top", "busy", "-d", "0.5", "-n", "2").stdout
               .splitlines()]
    assert [s["cell"] for s in samples] == ["busy", "busy"]
    check_schema("top", samples)
    for s in samples:
        assert s["cpu_limit_percent"] == 20.0 and 10 <= s["cpu_percent"] <= 28, s
        assert s["memory_max"] == 64 * MIB and 12 * MIB < s["memory"] < 64 * MIB and s["pids_max"] == 20, s
    bad = cellar(busy, "top", "-n", "0", ok=False)
    assert bad.returncode == 2 and "--iterations" in bad.stderr, bad.stderr
    assert exe_info(busy, "busy", "spin").state == 2  # RUNNING: top only reads
