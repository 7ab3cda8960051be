"""Restart policies through the real gRPC API of a real cellard (issue 14).

The policy rides on the seed's Start (runtime.Executable.restart, a cellar extension); ExecutableInfo
says restarts, restart_at_ns, the policy and why it failed; WatchEvents carries backoff / restarting /
failed; the Prometheus counter cellar_executable_restarts follows. cellard's SIGKILL does not matter:
the supervisor owns the policy.
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto.cellar.v1 import cells_pb2, types_pb2
from tests.support.api import Api, exe_info, restart
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root

S = 1_000_000_000
BACKOFF = types_pb2.EXECUTABLE_STATE_BACKOFF
RUNNING = types_pb2.EXECUTABLE_STATE_RUNNING
EXITED = types_pb2.EXECUTABLE_STATE_EXITED
FAILED = types_pb2.EXECUTABLE_STATE_FAILED


def policy(mode: int, **fields: Any) -> types_pb2.RestartPolicy:
    return types_pb2.RestartPolicy(mode=mode, **fields)


def test_on_failure_through_the_seed_start_restarts_and_says_so(api: Api) -> None:
    api.allocate("rp")
    events: queue.Queue[cells_pb2.ExecutableEvent] = queue.Queue()
    stream = api.cells.WatchEvents(cells_pb2.WatchEventsRequest(cell_prefix="rp"))

    def follow() -> None:
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError:
            pass  # cancelled below

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.2)
    reply = api.start("rp", "crash", "sh", "-c", "exit 1",
                      restart=policy(types_pb2.RESTART_MODE_ON_FAILURE, delay_s=0.2, limit_interval_s=0))
    assert reply.run == 1
    info = wait_for(lambda: (i := exe_info(api, "rp", "crash")).restarts >= 2 and i, what="two restarts")
    assert info.run >= 3
    assert info.restart.mode == types_pb2.RESTART_MODE_ON_FAILURE
    assert (info.restart.delay_s, info.restart.max_delay_s, info.restart.limit_burst) == (0.2, 300.0, 5)
    assert info.restart.limit_interval_s == 0 and info.restart.reset_after_s == 600.0
    seen: list[str] = []
    deadline = time.monotonic() + scaled(10)
    while seen.count("restarting") < 2 and time.monotonic() < deadline:
        with_timeout = events.get(timeout=scaled(10))
        seen.append(with_timeout.kind)
        if with_timeout.kind == "backoff":
            assert with_timeout.executable.state == BACKOFF and with_timeout.executable.restart_at_ns > 0
    stream.cancel()
    assert seen[:5] == ["started", "exited", "backoff", "restarting", "started"], seen
    # Stop in backoff: the last exit, and no restart after it
    wait_for(lambda: exe_info(api, "rp", "crash").state == BACKOFF, what="backoff")
    status = api.stop("rp", "crash").exit
    assert status.code == 1
    after = exe_info(api, "rp", "crash")
    assert after.state == EXITED and after.restart_at_ns == 0
    time.sleep(0.6)
    assert exe_info(api, "rp", "crash").run == after.run
    api.free("rp")


def test_a_seed_start_never_restarts(api: Api) -> None:
    api.allocate("seed")
    api.start("seed", "once", "sh", "-c", "exit 1")
    info = wait_for(lambda: (i := exe_info(api, "seed", "once")).state == EXITED and i, what="exit")
    time.sleep(0.3)
    info = exe_info(api, "seed", "once")
    assert info.state == EXITED and info.run == 1 and info.restarts == 0 and info.restart_at_ns == 0
    assert info.restart.mode == types_pb2.RESTART_MODE_NEVER
    api.free("seed")


def test_the_start_limit_is_failed_with_its_reason(api: Api) -> None:
    api.allocate("lim")
    api.start("lim", "x", "sh", "-c", "exit 7",
              restart=policy(types_pb2.RESTART_MODE_ALWAYS, delay_s=0, limit_burst=2, limit_interval_s=60))
    info = wait_for(lambda: (i := exe_info(api, "lim", "x")).state == FAILED and i, what="failed")
    assert info.run == 2 and info.restarts == 1 and info.exit.code == 7
    assert "start limit" in info.reason and "2 starts within 60s" in info.reason
    api.free("lim")


def test_a_start_of_a_name_in_backoff_is_already_exists(api: Api) -> None:
    api.allocate("busy")
    api.start("busy", "x", "sh", "-c", "exit 1", restart=policy(types_pb2.RESTART_MODE_ON_FAILURE, delay_s=30))
    wait_for(lambda: exe_info(api, "busy", "x").state == BACKOFF, what="backoff")
    with pytest.raises(grpc.RpcError) as err:
        api.start("busy", "x", "true")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and "backoff" in str(err.value.details())
    api.free("busy")  # cancels the restart
    assert "busy" not in {c.name for c in api.list()}


def test_sigkill_of_cellard_during_backoff_restarts_on_schedule_exactly_once(fresh_cellard: Any) -> None:
    daemon = fresh_cellard
    marker = Path(daemon.base) / "starts"
    script = f"echo $$ >> {marker}; [ $(wc -l < {marker}) -ge 2 ] && exec sleep 1000; exit 1"
    channel = daemon.channel()
    api = Api(daemon, channel)
    try:
        api.allocate("k")
        api.start("k", "svc", "sh", "-c", script, privileged=True,
                  restart=policy(types_pb2.RESTART_MODE_ON_FAILURE, delay_s=2.0))
        backoff = wait_for(lambda: (i := exe_info(api, "k", "svc")).state == BACKOFF and i, what="backoff")
        channel.close()
        daemon.proc.kill()
        daemon.proc.wait(10)
        # the restart is the supervisor's: it happens while no cellard runs
        wait_for(lambda: marker.exists() and len(marker.read_text().splitlines()) == 2, timeout=15,
                 what="the restart with cellard down")
        restart(daemon)
        channel = daemon.channel()
        api = Api(daemon, channel)
        info = exe_info(api, "k", "svc")
        assert info.state == RUNNING and info.run == 2 and info.restarts == 1
        assert info.started_at_ns >= backoff.restart_at_ns
        time.sleep(0.5)
        assert len(marker.read_text().splitlines()) == 2
        api.free("k")
    finally:
        channel.close()


def test_restarts_are_a_prometheus_counter(cellard_factory: Any) -> None:
    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}})
    address = daemon.events("metrics.listening")[0]["address"]
    channel = daemon.channel()
    api = Api(daemon, channel)
    try:
        api.allocate("m")
        api.start("m", "c", "sh", "-c", "exit 1",
                  restart=policy(types_pb2.RESTART_MODE_ON_FAILURE, delay_s=0.05, limit_interval_s=0))
        wait_for(lambda: exe_info(api, "m", "c").restarts >= 2, what="two restarts")

        def restarts() -> float:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                families = {f.name: f for f in text_string_to_metric_families(reply.read().decode())}
            return max(s.value for s in families["cellar_executable_restarts"].samples
                       if s.name == "cellar_executable_restarts_total" and s.labels == {"cell": "m", "executable": "c"})

        wait_for(lambda: restarts() >= 2, what="the counter")  # the collector caches a listing for 1 s
        api.free("m")
    finally:
        channel.close()
