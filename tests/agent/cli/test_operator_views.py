"""What an operator reads (issue 16): docker's STATUS/CREATED in ``ps`` and argv quoted as a shell would,
a ``kubectl describe``-like ``cell inspect``, human units in ``cell ls --stats``, ``daemon-logs`` as
journalctl shows it, and one JSON schema for scripts, pinned by golden files (tests/agent/cli/golden/)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.human import docker_duration, short_duration, size, usage
from tests.support import REPO
from tests.support.api import Api, cells_pb2, exe_info
from tests.support.cli import CELLAR, RFC3339, cellar, cellar_json, check_schema, cli_env, table_rows
from tests.support.timeouts import scaled, wait_for

MIB = 1024 * 1024


# -- the words, against docker's (go-units HumanDuration) and kubectl's (duration.HumanDuration) ---------
@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "Less than a second"), (1, "1 second"), (47, "47 seconds"), (60, "About a minute"), (119, "About a minute"),
    (5 * 60, "5 minutes"), (59 * 60, "59 minutes"), (3600, "About an hour"), (2 * 3600, "2 hours"),
    (47 * 3600, "47 hours"), (3 * 86400, "3 days"), (15 * 86400, "2 weeks"), (61 * 86400, "2 months"),
    (800 * 86400, "2 years")])
def test_docker_durations(seconds: float, text: str) -> None:
    assert docker_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (119, "119s"), (130, "2m10s"), (300, "5m"), (25 * 60, "25m"), (3 * 3600 + 300, "3h5m"),
    (20 * 3600, "20h"), (52 * 3600, "2d4h"), (40 * 86400, "40d"), (3 * 365 * 86400, "3y")])
def test_kubectl_durations(seconds: float, text: str) -> None:
    assert short_duration(seconds) == text


@pytest.mark.parametrize(("n", "text"), [(0, "0B"), (512, "512B"), (1536, "1.5KiB"), (256 * MIB, "256MiB"),
                                         (int(1.5 * 1024 * MIB), "1.5GiB"), (2**40, "1TiB")])
def test_sizes_read_back_as_the_flags_take_them(n: int, text: str) -> None:
    assert size(n) == text


NOW = 1_796_683_614 * 10**9


def _exe(state: str, **fields: Any) -> Any:
    from proto.cellar.v1 import types_pb2

    exe = types_pb2.ExecutableInfo(cell_name="c", name="e", state=getattr(types_pb2, f"EXECUTABLE_STATE_{state}"),
                                   started_at_ns=NOW - 300 * 10**9, run=1)
    for key, value in fields.items():
        if key == "exit":
            exe.exit.CopyFrom(types_pb2.ExitStatus(**value, ended_at_ns=NOW - 120 * 10**9))
        else:
            setattr(exe, key, value)
    return exe


@pytest.mark.parametrize(("exe", "text"), [
    (_exe("RUNNING"), "Up 5 minutes"),
    (_exe("RUNNING", health=1), "Up 5 minutes (starting)"),
    (_exe("EXITED", exit={"code": 1}), "Exited (1) 2 minutes ago"),
    (_exe("EXITED", exit={"signal": 9, "oom_killed": True}), "Exited (SIGKILL, OOM killed) 2 minutes ago"),
    (_exe("BACKOFF", exit={"code": 2}, restart_at_ns=NOW + 8 * 10**9), "Backoff, restart in 8.0s (exited (2))"),
    (_exe("FAILED", exit={"code": 0}), "Failed (exited (0) 2 minutes ago)"),
    (_exe("LOST"), "Lost"), (_exe("STARTING"), "Starting")], ids=str)
def test_status_reads_as_docker_ps(exe: Any, text: str) -> None:
    from agent.cli.rows import created_text, status_text

    assert status_text(exe, NOW) == text
    assert created_text(exe, NOW) == "5 minutes ago"


def test_usage_against_a_limit() -> None:
    assert usage(64 * MIB, 256 * MIB) == "64MiB / 256MiB (25.0%)"
    assert usage(64 * MIB, None) == "64MiB"


@pytest.fixture(scope="module")
def shown(module_cellard: Any) -> Iterator[Api]:
    """One cell with limits, an exited executable (argv with spaces and quotes) and a running one."""
    from tests.support.api import api_session

    with api_session(module_cellard) as api:
        api.allocate("views", memory_max=256 * MIB, pids_max=50, cpu_max_quota_us=50_000, cpu_max_period_us=100_000)
        api.start("views", "said", "sh", "-c", "echo 'it''s'; exit 3", "two words")
        api.start("views", "calm", "sleep", "3600")
        wait_for(lambda: exe_info(api, "views", "said").exit.ByteSize() > 0, "said exited")
        yield api


pytestmark = pytest.mark.root


def test_ps_status_created_and_the_argv_as_a_shell_reads_it(shown: Api) -> None:
    rows = {r["name"]: r for r in table_rows(cellar(shown, "ps", "-a", "views").stdout)}
    assert re.fullmatch(r"Exited \(3\) (Less than a second|\d+ seconds?) ago", rows["said"]["status"]), rows
    assert re.fullmatch(r"Up (Less than a second|\d+ seconds?)", rows["calm"]["status"]), rows
    assert rows["calm"]["created"].endswith(" ago") and rows["calm"]["pid"].isdigit()
    argv = ["sh", "-c", "echo 'it''s'; exit 3", "two words"]
    assert rows["said"]["command"] == shlex.join(argv) and shlex.split(rows["said"]["command"]) == argv
    assert "said" not in {r["name"] for r in table_rows(cellar(shown, "ps", "views").stdout)}  # exited: -a only


def test_ps_and_start_json_follow_the_schema(shown: Api) -> None:
    rows = cellar_json(shown, "ps", "-a", "views")
    check_schema("ps", rows)
    said = next(r for r in rows if r["executable"] == "said")
    assert (said["exit"], said["exit_code"], said["signal"]) == ("code 3", 3, None)
    assert said["argv"] == ["sh", "-c", "echo 'it''s'; exit 3", "two words"]
    assert said["started"] <= said["ended"]
    calm = next(r for r in rows if r["executable"] == "calm")
    assert calm["ended"] is None and calm["exit"] is None and calm["health_check"] is None
    started = cellar_json(shown, "start", "views", "brief", "--", "true")
    check_schema("start", [started])
    wait_for(lambda: exe_info(shown, "views", "brief").exit.ByteSize() > 0, "brief exited")
    check_schema("stop", [cellar_json(shown, "stop", "views", "calm")])
    check_schema("info", [cellar_json(shown, "info")])  # protobuf JSON (int64 as a string) plus "started"
    shown.start("views", "calm", "sleep", "3600")


def test_inspect_reads_like_kubectl_describe_and_json_keeps_the_raw_data(shown: Api) -> None:
    page = cellar(shown, "cell", "inspect", "views").stdout
    fields = dict(re.findall(r"^ *([A-Za-z ()0-9]+):[ \t]+(.+)$", page, re.MULTILINE))
    assert fields["State"] == "active" and fields["Name"] == "views"
    assert re.fullmatch(r"\S+Z \(\d+(s|m\d*s?) ago\)", fields["Created"]), fields["Created"]
    assert fields["Memory max"] == "256MiB" and fields["Pids max"] == "50"
    assert fields["CPU"].startswith("0.50 CPUs (50000/100000 us)")
    assert re.fullmatch(r"[\d.]+(B|KiB|MiB) / 256MiB \([\d.]+%\), peak .*", fields["Memory"]), fields["Memory"]
    assert re.fullmatch(r"[12] / 50", fields["Pids"]), fields["Pids"]
    assert "CELL_STATE" not in page and "_ns" not in page
    executables = table_rows(page.split("Executables:\n", 1)[1].replace("\n  ", "\n").removeprefix("  "))
    assert {e["name"] for e in executables} >= {"said", "calm"}
    raw = cellar_json(shown, "cell", "inspect", "views")
    assert raw["state"] == "CELL_STATE_ACTIVE" and raw["cell"]["memory_max"] == str(256 * MIB)
    shown.cells.Freeze(cells_pb2.FreezeCellRequest(cell_name="views"), timeout=scaled(30))
    try:
        assert "\nState:        frozen\n" in cellar(shown, "cell", "inspect", "views").stdout
    finally:
        shown.cells.Thaw(cells_pb2.ThawCellRequest(cell_name="views"), timeout=scaled(30))


def test_yaml_is_the_json_data(shown: Api) -> None:
    import yaml

    assert yaml.safe_load(cellar(shown, "info", "-o", "yaml").stdout) == cellar_json(shown, "info")
    rows = yaml.safe_load(cellar(shown, "-o", "yaml", "cell", "inspect", "views").stdout)
    assert rows["state"] == "CELL_STATE_ACTIVE" and rows["cell"]["memory_max"] == str(256 * MIB)  # the raw data


def test_cell_ls_stats_in_human_units(shown: Api) -> None:
    (row,) = [r for r in table_rows(cellar(shown, "cell", "ls", "--stats", "views").stdout) if r["name"] == "views"]
    assert re.fullmatch(r"[\d.]+(B|KiB|MiB) / 256MiB \([\d.]+%\)", row["memory"]), row
    assert re.fullmatch(r"[12] / 50", row["pids"]) and re.fullmatch(r"[\d.]+s", row["cpu"]), row


def calls(api: Api, method: str) -> int:
    """How many calls of ``method`` cellard has admitted so far (its auth.call events)."""
    return sum(e.get("method", "").endswith(f"/{method}") for e in api.daemon.events("auth.call"))


def test_events_are_ndjson_with_the_ps_schema(shown: Api) -> None:
    before = calls(shown, "WatchEvents")
    follow = subprocess.Popen([*CELLAR, "--addr", shown.daemon.socket, "-o", "json", "events", "views"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(), cwd=REPO)
    try:
        wait_for(lambda: calls(shown, "WatchEvents") > before, "the watch is on", timeout=scaled(20))
        cellar(shown, "start", "views", "blip", "--", "sh", "-c", "exit 2")
        assert follow.stdout is not None
        lines = [follow.stdout.readline(), follow.stdout.readline()]
    finally:
        follow.kill()
        follow.wait()
    events = [json.loads(line) for line in lines]  # one object a line
    assert [e["event"] for e in events] == ["started", "exited"], lines
    check_schema("events", events)
    assert events[1]["exit_code"] == 2 and events[1]["executable"] == "blip"


def test_logs_json_is_ndjson_with_one_schema(shown: Api) -> None:
    out = cellar(shown, "-o", "json", "logs", "views/said").stdout.splitlines()
    records = [json.loads(line) for line in out]
    check_schema("logs-line", [r for r in records if r.get("channel") == "stdout"])
    check_schema("logs-exit", [r for r in records if r.get("channel") == "exit"])
    check_schema("logs-cursor", [records[-1]])


def test_daemon_logs_level_since_tail_and_formats(shown: Api) -> None:
    everything = [json.loads(line) for line in cellar(shown, "daemon-logs").stdout.splitlines()]  # a pipe: NDJSON
    check_schema("daemon-logs", [{k: e[k] for k in ("timestamp", "level", "event")} for e in everything])
    assert {"debug", "info"} <= {e["level"] for e in everything}
    infos = [e for e in everything if e["level"] != "debug"]
    tail = [json.loads(line) for line in cellar(shown, "daemon-logs", "-p", "info", "--tail", "2").stdout.splitlines()]
    assert len(tail) == 2 and tail == infos[-2:]  # nothing logged at info between the two reads
    assert cellar(shown, "daemon-logs", "--since", "2099-01-01").stdout == ""
    human = cellar(shown, "daemon-logs", "-o", "table", "--level", "info").stdout.splitlines()
    allocated = next(line for line in human if " cell.allocated " in line and "cell=views" in line)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO +cell\.allocated ", allocated), allocated
    bad = cellar(shown, "daemon-logs", "--level", "loud", ok=False)
    assert bad.returncode == 2 and "--level" in bad.stderr


def test_daemon_logs_follow_is_ndjson(shown: Api) -> None:
    before = calls(shown, "GetAuraeDaemonLogStream")
    follow = subprocess.Popen([*CELLAR, "--addr", shown.daemon.socket, "daemon-logs", "-f", "--tail", "0",
                               "--level", "info"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=cli_env(), cwd=REPO)
    try:
        wait_for(lambda: calls(shown, "GetAuraeDaemonLogStream") > before, "the follow is on", timeout=scaled(20))
        cellar(shown, "cell", "allocate", "views-follow")
        assert follow.stdout is not None
        line = follow.stdout.readline()
        while "views-follow" not in line:
            line = follow.stdout.readline()
    finally:
        follow.kill()
        follow.wait()
    event = json.loads(line)
    assert event["event"] == "cell.allocated" and event["cell"] == "views-follow" and RFC3339.match(event["timestamp"])


def _complete(cases: list[list[str]], env: dict[str, str]) -> tuple[list[list[str]], str]:
    """<TAB> after each ``words`` of ``cases`` through the script of ``cellar completion bash``, in one real
    bash: the candidates of each, and bash's stderr."""
    script = subprocess.run([*CELLAR, "completion", "bash"], capture_output=True, text=True, env=env, check=True,
                            timeout=scaled(60)).stdout
    runs = "".join(f'COMPREPLY=(); COMP_WORDS=({" ".join(shlex.quote(w) for w in words)}); '
                   f'COMP_CWORD={len(words) - 1}; _cellar_completion cellar; echo "${{COMPREPLY[*]}}"\n'
                   for words in cases)
    proc = subprocess.run(["bash", "--norc", "-c", f"{script}\n{runs}"], capture_output=True, text=True, env=env,
                          timeout=scaled(60))
    return [line.split() for line in proc.stdout.splitlines()], proc.stderr


def test_bash_completes_cell_and_executable_names_from_the_daemon(shown: Api) -> None:
    if Path(CELLAR[0]).name != "cellar":
        pytest.fail("the completion script runs `cellar` from PATH: install the venv (.venv/bin/cellar)")
    from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc

    queue_pb2_grpc.QueueStub(shown.channel).CreateQueue(queue_pb2.CreateQueueRequest(queue_name="views-q"),
                                                        timeout=scaled(30))
    env = {**cli_env(), "PATH": f"{Path(CELLAR[0]).parent}:{cli_env()['PATH']}", "CELLAR_ADDR": shown.daemon.socket}
    got, stderr = _complete([
        ["cellar", "cell", "inspect", "vie"],  # the address from CELLAR_ADDR
        ["cellar", "--addr", shown.daemon.socket, "logs", "views/s"],
        ["cellar", "stop", "views", ""],
        ["cellar", "queue", "rm", "views-"],
        ["cellar", "--addr", "/nonexistent/cellar.sock", "cell", "inspect", ""],  # nothing answers: nothing, quietly
    ], env)
    assert got == [sorted(c.name for c in shown.list() if c.name.startswith("vie")), ["views/said"],
                   sorted(e.name for e in shown.inspect("views").executables), ["views-q"], []], got
    assert "views" in got[0]
    assert stderr == ""


def test_logs_all_for_a_shipper_ndjson_and_a_cursor_file(shown: Api, tmp_path: Path) -> None:
    """The README's shipping path: `cellar logs --all -f -o json --cursor-file F`: every cell, new cells too,
    and a restart goes on after the last printed batch (no gap, no duplicate)."""
    cursor = tmp_path / "cellar.cursor"
    shown.allocate("ship-a")
    shown.start("ship-a", "w", "sh", "-c", "echo a1; echo a2")
    wait_for(lambda: exe_info(shown, "ship-a", "w").exit.ByteSize() > 0, "ship-a/w exited")
    first = [json.loads(line) for line in cellar(shown, "-o", "json", "logs", "--all", "--cursor-file", str(cursor))
             .stdout.splitlines()]
    check_schema("logs-line", [r for r in first if r["channel"] == "stdout"])
    assert [r["line"] for r in first if r["cell"] == "ship-a" and r["channel"] == "stdout"] == ["a1", "a2"]
    assert {"views", "ship-a"} <= {r["cell"] for r in first}
    assert json.loads(cursor.read_text())["positions"]["ship-a"] == {"w": "1.3"}  # a1, a2, the exit record

    follow = subprocess.Popen([*CELLAR, "--addr", shown.daemon.socket, "-o", "json", "logs", "--all", "-f",
                               "--cursor-file", str(cursor)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cli_env(), cwd=REPO)
    try:
        shown.allocate("ship-b")  # a cell that did not exist when the follow began
        shown.start("ship-b", "late", "sh", "-c", "echo b1; echo b2")
        assert follow.stdout is not None
        got = [json.loads(follow.stdout.readline()) for _ in range(3)]  # b1, b2, the exit record
        wait_for(lambda: json.loads(cursor.read_text())["positions"].get("ship-b"), "ship-b's position recorded")
    finally:
        follow.terminate()
        follow.wait(timeout=scaled(20))
    assert [(r["cell"], r["channel"], r.get("line")) for r in got] == [
        ("ship-b", "stdout", "b1"), ("ship-b", "stdout", "b2"), ("ship-b", "exit", None)], got  # nothing old again
    shown.start("ship-a", "w2", "sh", "-c", "echo a3")  # a new executable
    shown.start("ship-a", "w", "sh", "-c", "echo a4")  # run 2 of a known one
    for exe in ("w", "w2"):
        wait_for(lambda e=exe: exe_info(shown, "ship-a", e).exit.ByteSize() > 0, f"ship-a/{exe} exited")  # type: ignore[misc]
    again = [json.loads(line) for line in cellar(shown, "-o", "json", "logs", "--all", "--cursor-file", str(cursor))
             .stdout.splitlines()]
    assert sorted((r["executable"], r["run"], r["line"]) for r in again if r["channel"] == "stdout") == [
        ("w", 2, "a4"), ("w2", 1, "a3")], again

    cursor.write_text('{"version": 1, "positions": {"ship-a": {"w": 7}}}')  # not ours: said, not followed
    bad = cellar(shown, "logs", "--all", "--cursor-file", str(cursor), ok=False)
    assert bad.returncode == 2 and "not a cellar cursor file" in bad.stderr, bad.stderr
    cursor.write_text('{"version": 1, "positions": {"ship-a": {"w": "999.999999"}}}')  # a lying position
    proc = cellar(shown, "logs", "--all", "--cursor-file", str(cursor), ok=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
