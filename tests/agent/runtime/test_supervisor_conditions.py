"""The supervisor's warnings and errors reach cellard's own log and its daemon log stream.

The supervisor (the parent of every workload) logs to ``<state_dir>/supervisor.log``; conditions an
operator must see there, like the log disk filling up, must also show in ``cellar daemon-logs``.
cellard keeps one ``log_events`` subscription to the supervisor and logs each warning or error as its
own event: same event name and fields, plus ``source="supervisor"``. Info events stay in supervisor.log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.core.supervisor_log import SupervisorLogRelay
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.supervisor import MAX_RELAYED_FIELDS, MAX_RELAYED_VALUE, relayed
from proto.aurae import observe_pb2, observe_pb2_grpc
from tests.agent.runtime.test_logs_load import tiny_fs  # noqa: F401 - the fixture
from tests.agent.runtime.test_logs_rpc import allocate, follow_to_exit, start
from tests.support.cellard import Cellard, StartCellard
from tests.support.cleanup import supervisor_pids
from tests.support.timeouts import scaled

# ---------------------------------------------------------------- helpers


def supervisor_events(daemon: Cellard, name: str) -> list[dict[str, Any]]:
    """``name`` events in cellard's own log that came from the supervisor."""
    return [e for e in daemon.events(name) if e.get("source") == "supervisor"]


def wait_events(daemon: Cellard, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Until cellard's log holds ``count`` ``name`` events relayed from the supervisor."""
    deadline = time.monotonic() + scaled(timeout)
    while len(found := supervisor_events(daemon, name)) < count:
        assert time.monotonic() < deadline, f"cellard did not log {count} x {name} from the supervisor"
        time.sleep(0.05)
    return found


def wait_own_events(daemon: Cellard, name: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while len(daemon.events(name)) < count:
        assert time.monotonic() < deadline, f"cellard did not log {count} x {name}"
        time.sleep(0.05)


def daemon_log_history(daemon: Cellard) -> list[dict[str, Any]]:
    """The history part of observe.Observe/GetAuraeDaemonLogStream, parsed."""
    with daemon.channel() as ch:
        call = observe_pb2_grpc.ObserveStub(ch).GetAuraeDaemonLogStream(
            observe_pb2.GetAuraeDaemonLogStreamRequest(), timeout=scaled(30))
        try:
            history = int(dict(call.initial_metadata())["cellar-history-events"])
            return [json.loads(next(call).line) for _ in range(history)]
        finally:
            call.cancel()


def bad_request(config: RuntimeConfig) -> None:
    """A line that is not JSON: the supervisor logs ``request.failed`` at error level."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(scaled(10))
        sock.connect(config.socket_path)
        sock.sendall(b"this is not json\n")
        sock.recv(65536)  # the error reply


# ---------------------------------------------------------------- through a real cellard


@pytest.mark.root
def test_disk_full_shows_in_cellards_log_and_daemon_log_stream(
    tiny_fs: Path, cellard_factory: StartCellard  # noqa: F811 - the fixture imported above
) -> None:
    # tiny_fs is set up before cellard_factory, so it is torn down after the daemon and supervisor.
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(b"\0" * 128 * 1024)
    daemon = cellard_factory({"paths": {"log_dir": str(tiny_fs / "logs")}})
    n = 30_000  # one echo per line: ~870 KB of records for ~380 KB free (see test_logs_load)
    with daemon.channel() as ch:
        cell = allocate(ch)
        start(ch, cell, "flood", f"i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); done")
        dropped = wait_events(daemon, "capture.lines_dropped")[0]  # logged once per episode
        assert dropped["level"] == "error" and dropped["exe"] == f"{cell}/flood"
        assert dropped["dropped"] > 0 and dropped["error"]
        assert "supervisor_time" in dropped, "the supervisor's own timestamp is kept"
        streamed = [e for e in daemon_log_history(daemon) if e.get("event") == "capture.lines_dropped"]
        assert streamed and streamed[0]["source"] == "supervisor" and streamed[0]["exe"] == f"{cell}/flood"
        [lost] = wait_events(daemon, "capture.lines_lost")  # logged when its output ends
        assert lost["level"] == "error" and lost["lines"] > 0 and lost["exe"] == f"{cell}/flood"
        ballast.unlink()  # space returns (and the workload writes no more): LOST and EXIT records
        records = follow_to_exit(ch, cell, "flood")
    assert records[-1].exit.code == 0, "the workload ran to completion"
    assert daemon.health() == "SERVING"


@pytest.mark.root
def test_relay_resubscribes_after_a_supervisor_restart(cellard: Cellard) -> None:
    config = cellard.runtime_config()
    wait_own_events(cellard, "supervisor_log.subscribed", 1)
    bad_request(config)
    [failed] = wait_events(cellard, "request.failed")
    assert failed["level"] == "error" and "JSONDecodeError" in failed["exception"]

    [pid] = supervisor_pids(config)
    os.kill(pid, signal.SIGKILL)
    wait_own_events(cellard, "supervisor_log.disconnected", 1)  # its socket closed: it is gone
    runtime = asyncio.run(RuntimeClient.connect(config, timeout=scaled(10)))  # a successor
    try:
        wait_own_events(cellard, "supervisor_log.subscribed", 2)
        bad_request(config)
        wait_events(cellard, "request.failed", 2)
    finally:
        asyncio.run(runtime.shutdown_supervisor())
        if runtime.process is not None:
            runtime.process.wait(scaled(10))
    relayed_events = [e for e in cellard.events() if e.get("source") == "supervisor"]
    assert {e["level"] for e in relayed_events} <= {"warning", "error", "critical"}, "info stays in supervisor.log"


# ---------------------------------------------------------------- bounds, without a supervisor


def test_supervisor_relays_only_bounded_warnings() -> None:
    assert relayed({"event": "supervisor.ready", "level": "info", "pid": 1}) is None
    assert relayed({"event": "x", "level": "debug"}) is None
    big = relayed({"event": "capture.append_failed", "level": "error", "error": "e" * 1_000_000, "obj": object(),
                   "lines": 3, **{f"k{i}": i for i in range(1000)}})
    assert big is not None
    assert big["event"] == "capture.append_failed" and big["level"] == "error" and big["lines"] == 3
    assert len(big) <= MAX_RELAYED_FIELDS and "truncated" in big
    assert len(big["error"]) <= MAX_RELAYED_VALUE + 100
    assert big["error"].startswith("eee") and big["error"].endswith("eee")
    assert isinstance(big["obj"], str)  # anything but JSON scalars arrives as its repr


class _FloodingRuntime:
    """``log_events`` once: a flood of warnings plus the supervisor's own "dropped" marker; then gone."""

    def __init__(self, flood: int) -> None:
        self.flood = flood
        self.config = RuntimeConfig(state_dir="/nonexistent/state")
        self.subscriptions = 0

    async def log_events(self) -> Any:
        self.subscriptions += 1
        if self.subscriptions > 1:
            raise ConnectionRefusedError("the supervisor is gone")

        async def events() -> Any:
            for i in range(self.flood):
                yield {"event": "capture.read_failed", "level": "warning", "i": i, "timestamp": "t"}
            yield {"event": "daemonlog.dropped", "count": 5, "level": "warning"}

        return events()


def test_relay_caps_a_flood_and_counts_what_it_left_out() -> None:
    runtime = _FloodingRuntime(1000)

    async def main() -> None:
        relay = SupervisorLogRelay(runtime, rate=0.001, burst=10)
        await relay.start()
        while not any(e["event"] == "supervisor_log.disconnected" for e in logs):
            await asyncio.sleep(0.01)
        while runtime.subscriptions < 2:  # it retries (and fails: the fake supervisor stays gone)
            await asyncio.sleep(0.01)
        await relay.stop()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(asyncio.wait_for(main(), scaled(30)))
    shown = [e for e in logs if e["event"] == "capture.read_failed"]
    assert [e["i"] for e in shown] == list(range(10))
    assert all(e["source"] == "supervisor" and e["log_level"] == "warning" for e in shown)
    assert shown[0]["supervisor_time"] == "t"
    missed = [e for e in logs if e["event"] == "supervisor_log.missed"]
    assert missed and sum(e["count"] for e in missed) == 990 + 5
    assert missed[0]["log"] == runtime.config.supervisor_log
