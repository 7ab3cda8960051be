"""cellard's reporter against a REAL saver process: delivery, change detection, saver outage.

The outage lasts ``CELLAR_TEST_SAVER_DOWN_S`` seconds: 30 by default, the issue's scenario, long enough
for the reporter's backoff to grow past its first steps (it runs beside the rest of the suite under xdist).
It runs once per saver backend (the ``database`` fixture: SQLite and a real PostgreSQL).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import workerServer_pb2

pytestmark = pytest.mark.root

DOWN_S = float(os.environ.get("CELLAR_TEST_SAVER_DOWN_S", "30"))


def stored(saver) -> workerServer_pb2.Machine | None:
    with saver.channel() as ch:
        listed = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(), timeout=5).machines
        if not listed:
            return None
        return inventory_pb2_grpc.MachinesStub(ch).Show(
            inventory_pb2.ShowMachineRequest(uuid=listed[0].uuid), timeout=5).latest.machine


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def has_port(machine: workerServer_pb2.Machine | None, port: int) -> bool:
    return machine is not None and any(p.port == port for i in machine.ifaces for a in i.address for p in a.ports)


def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_reporter_delivers_follows_changes_and_survives_a_saver_outage(saver_factory, cellard_factory, database):
    saver = saver_factory(database)  # SQLite and PostgreSQL (tests/agent/pb/conftest.py): the same scenario on each
    daemon = cellard_factory({"reporter": {"savers": [saver.address], "insecure": True, "poll_s": 0.5,
                                           "backoff_max_s": 1.0, "interval_s": 60}})
    first = wait_for(lambda: stored(saver), 10, "the first report")
    assert first.uuid and any(i.name == "lo" for i in first.ifaces)

    a = listener()
    try:
        port_a = a.getsockname()[1]
        wait_for(lambda: has_port(stored(saver), port_a), 10, "a new listener in the stored report")

        saver.stop()
        b = listener()
        port_b = b.getsockname()[1]
        time.sleep(DOWN_S)
        assert daemon.events("reporter.send_failed"), "the reporter should have retried while the saver was down"
        saver.start()
        machine = wait_for(lambda: (m := stored(saver)) is not None and has_port(m, port_b) and m, 15,
                           "delivery after the saver came back")
        assert has_port(machine, port_a)  # type: ignore[arg-type]
        b.close()
    finally:
        a.close()
