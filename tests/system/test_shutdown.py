"""Graceful stop: SIGTERM -> NOT_SERVING to watchers, streams drain, exit 0 within the deadline."""

from __future__ import annotations

import os
import signal
import threading
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc


def test_sigterm_drains_an_open_watch_stream_and_exits_zero(cellard):
    seen: list[str] = []
    ended = threading.Event()
    errors: list[BaseException] = []

    with cellard.channel() as ch:
        stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)

        def read() -> None:
            try:
                for reply in stream:
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == ["SERVING"]

        started = time.monotonic()
        cellard.proc.send_signal(signal.SIGTERM)
        assert ended.wait(10), "watch stream still open after SIGTERM"
        rc = cellard.proc.wait(10)
        elapsed = time.monotonic() - started

    assert not errors, f"stream ended with an error: {errors[0]!r}"
    assert seen == ["SERVING", "NOT_SERVING"]
    assert rc == 0, cellard.log_text()
    assert elapsed < cellard.config["server"]["drain_timeout_s"]
    assert not os.path.exists(cellard.socket)
    assert cellard.events("server.stopped")


def test_sigint_also_stops_gracefully(cellard):
    assert cellard.stop(signal.SIGINT) == 0
