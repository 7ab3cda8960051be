"""What a monitoring stack needs beside the usage gauges, from a REAL cellard's metrics listener.

Each cell's limits as gauges (saturation = usage / limit), ``cellar_build_info``, the listener's
routes (``/metrics``, a real ``/healthz``, 404 for anything else), and the counters of the reporter.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest

from agent.version import VERSION
from cells.metrics import limit_families
from cells.spec import CellLimits, CellSpec
from cells.state import CellInfo, CellState, to_dict
from proto.aurae import runtime_pb2
from tests.agent.core import test_metrics
from tests.agent.core.test_metrics import has_sample, scrape, value
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

metered = test_metrics.metered  # the fixture: a REAL cellard with [metrics] listen on a free port


def get(address: str, path: str) -> tuple[int, str, str]:
    """``(status, content type, body)`` of a plain GET (an HTTP error is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_limits_are_gauges_beside_the_usage(metered: tuple[Any, str, Any]) -> None:
    daemon, address, stub = metered
    # (memory.high is left out: hybrid hosts have none; test_limit_families covers it)
    cell = runtime_pb2.Cell(name="capped", memory_max=256 << 20, cpu_max_quota_us=50_000, cpu_max_period_us=100_000,
                            pids_max=64)
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=cell), timeout=30)
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="free")), timeout=30)
    try:
        f = scrape(address)
        assert value(f, "cellar_cell_memory_max_bytes", "cellar_cell_memory_max_bytes", cell="capped") == 256 << 20
        assert value(f, "cellar_cell_cpu_limit_cores", "cellar_cell_cpu_limit_cores", cell="capped") == 0.5
        assert value(f, "cellar_cell_cpu_quota_seconds", "cellar_cell_cpu_quota_seconds", cell="capped") == 0.05
        assert value(f, "cellar_cell_cpu_period_seconds", "cellar_cell_cpu_period_seconds", cell="capped") == 0.1
        assert value(f, "cellar_cell_pids_max", "cellar_cell_pids_max", cell="capped") == 64
        # No limit, no series: "usage / limit" is then empty rather than a division by a sentinel.
        for family in ("cellar_cell_memory_max_bytes", "cellar_cell_memory_high_bytes", "cellar_cell_cpu_limit_cores",
                       "cellar_cell_pids_max"):
            assert not has_sample(f, family, cell="free"), family
    finally:
        for name in ("capped", "free"):
            stub.Free(runtime_pb2.FreeCellRequest(cell_name=name, grace_period_ms=0), timeout=30)


def test_build_info(metered: tuple[Any, str, Any]) -> None:
    _, address, _ = metered
    f = scrape(address)
    samples = [s for s in f["cellar_build_info"].samples if s.name == "cellar_build_info"]
    assert len(samples) == 1
    assert samples[0].value == 1
    assert samples[0].labels["version"] == VERSION
    assert samples[0].labels["python"] == "{}.{}.{}".format(*sys.version_info[:3])


def test_limit_families() -> None:
    """The same from a listing (pure): memory.high, and a quota without a period (the kernel's 100 ms)."""
    cells = [CellInfo("a", CellState.ACTIVE, "/x", True, spec=to_dict(CellSpec(
        "a", CellLimits(memory_high=1 << 30, cpu_max_quota_us=250_000)))),
        CellInfo("b", CellState.ACTIVE, "/y", True, spec=to_dict(CellSpec("b")))]
    got = {(f.name, tuple(s.labels.items()), s.value) for f in limit_families(cells) for s in f.samples}
    assert got == {
        ("cellar_cell_memory_high_bytes", (("cell", "a"),), 1 << 30),
        ("cellar_cell_cpu_limit_cores", (("cell", "a"),), 2.5),
        ("cellar_cell_cpu_quota_seconds", (("cell", "a"),), 0.25),
        ("cellar_cell_cpu_period_seconds", (("cell", "a"),), 0.1),
    }


def test_metrics_only_on_metrics_and_a_real_healthz(metered: tuple[Any, str, Any]) -> None:
    daemon, address, stub = metered
    status, ctype, body = get(address, "/metrics")
    assert status == 200 and "cellar_runtime_up" in body
    for path in ("/", "/foo", "/metrics/x", "/favicon.ico", "/healthz/x"):
        status, _, body = get(address, path)
        assert status == 404, path
        assert "cellar_" not in body
    status, ctype, body = get(address, "/healthz")
    assert (status, body) == (200, "SERVING\n")
    assert ctype.startswith("text/plain")

    # Draining after SIGTERM: cellard's health is NOT_SERVING while an open call finishes; /healthz says 503.
    exe = runtime_pb2.Executable(cell_name="slow", name="stubborn",
                                 argv=["/bin/sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"])
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="slow")), timeout=30)
    stub.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)
    stopping = threading.Thread(target=lambda: _quiet(lambda: stub.Stop(runtime_pb2.StopCellRequest(
        cell_name="slow", executable_name="stubborn", grace_period_ms=4000), timeout=30)), daemon=True)
    stopping.start()
    time.sleep(0.5)  # the Stop is in flight (the workload ignores SIGTERM: it lasts its grace period)
    daemon.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + scaled(3)
    while True:
        status, _, body = get(address, "/healthz")
        if status == 503:
            break
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.05)
    assert body == "NOT_SERVING\n"
    stopping.join(30)
    try:
        daemon.proc.wait(30)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()


def _quiet(call: Any) -> None:
    with contextlib.suppress(grpc.RpcError):
        call()


def test_reporter_counters(cellard_factory: Any) -> None:
    """A reporter towards a saver that is not there: failures count, no success timestamp yet."""
    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"},
                              "reporter": {"savers": ["127.0.0.1:9"], "insecure": True, "backoff_max_s": 0.5}})
    (listening,) = daemon.events("metrics.listening")
    address = listening["address"]
    deadline = time.monotonic() + scaled(15)
    while True:
        f = scrape(address)
        if has_sample(f, "cellar_reporter_failures_total", saver="127.0.0.1:9") and value(
                f, "cellar_reporter_failures", "cellar_reporter_failures_total", saver="127.0.0.1:9") >= 2:
            break
        assert time.monotonic() < deadline, sorted(f)
        time.sleep(0.2)
    assert value(f, "cellar_reporter_reports_sent", "cellar_reporter_reports_sent_total", saver="127.0.0.1:9") == 0
    assert not has_sample(f, "cellar_reporter_last_success_timestamp_seconds", saver="127.0.0.1:9")


def test_saver_and_queue_counters(cellard_factory: Any) -> None:
    """The saver in cellard counts what it received, stored and refused; the queue what it moved."""
    from google.protobuf import wrappers_pb2

    from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
    from proto.pb import workerServer_pb2 as pb
    from proto.pb import workerServer_pb2_grpc
    from tests.support.local import local_socket

    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}, "saver": {"enabled": True}})
    (listening,) = daemon.events("metrics.listening")
    address = listening["address"]
    with daemon.channel() as ch:
        saver = workerServer_pb2_grpc.WorkerSaverStub(ch)
        ok = saver.SaveMachine(pb.SaveMachineReq(machine=pb.Machine(uuid="m-1")), timeout=10)
        bad = saver.SaveMachine(pb.SaveMachineReq(), timeout=10)  # no machine: NOT_ACCEPTED
    assert (ok.status, bad.status) == (pb.SaveMachineRes.ACCEPTED, pb.SaveMachineRes.NOT_ACCEPTED)

    with grpc.insecure_channel("unix:" + local_socket(daemon)) as ch:
        q = queue_pb2_grpc.QueueStub(ch)
        qid = q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name="metered"), timeout=10).id

        def msg(text: str) -> queue_pb2.QueueMsg:
            m = queue_pb2.QueueMsg()
            m.payload.Pack(wrappers_pb2.StringValue(value=text))
            return m

        sent = q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("a"), msg("b"), msg("c")]), timeout=10)
        assert len(sent.succeed) == 3
        got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=2), timeout=10).message
        assert len(got) == 2
        done = q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[got[0].msg_id, sent.succeed[2]]), timeout=10)
        assert len(done.unmodified) == 0
        q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[got[0].msg_id]), timeout=10)  # again: unmodified

    f = scrape(address)
    for family, expected in (("cellar_saver_reports_received", 2), ("cellar_saver_reports_stored", 1),
                             ("cellar_saver_reports_rejected", 1), ("cellar_saver_errors", 0),
                             ("cellar_queue_messages_sent", 3), ("cellar_queue_messages_received", 2),
                             ("cellar_queue_messages_acknowledged", 2)):
        assert value(f, family, family + "_total") == expected, family


def test_reporter_counters_on_success(cellard_factory: Any) -> None:
    """A cellard that reports to its own saver (plain TCP, development mode): sent counts, the timestamp is set."""
    from tests.agent.pb.conftest import free_port

    tcp = f"127.0.0.1:{free_port()}"
    daemon = cellard_factory({"metrics": {"listen": "127.0.0.1:0"}, "saver": {"enabled": True},
                              "server": {"tcp_listen": tcp, "insecure_tcp_dev": True},
                              "reporter": {"savers": [tcp], "insecure": True, "backoff_max_s": 0.5}})
    (listening,) = daemon.events("metrics.listening")
    address = listening["address"]
    started = time.time()
    deadline = time.monotonic() + scaled(20)
    while True:
        f = scrape(address)
        if value(f, "cellar_reporter_reports_sent", "cellar_reporter_reports_sent_total", saver=tcp) >= 1:
            break
        assert time.monotonic() < deadline, daemon.log_text()[-3000:]
        time.sleep(0.2)
    last = value(f, "cellar_reporter_last_success_timestamp_seconds",
                 "cellar_reporter_last_success_timestamp_seconds", saver=tcp)
    assert started - 1 <= last <= time.time() + 1
    assert value(f, "cellar_saver_reports_stored", "cellar_saver_reports_stored_total") >= 1
