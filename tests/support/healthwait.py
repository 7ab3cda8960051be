"""Helpers for tests that watch grpc.health.v1 statuses change (no timed assertions: waits scale)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.timeouts import scaled

SERVING, NOT_SERVING = "SERVING", "NOT_SERVING"


def status(channel: grpc.Channel, service: str) -> str:
    """The grpc.health.v1 status name of ``service`` ("" = the whole server)."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_status(channel: grpc.Channel, services: Iterable[str], want: str, timeout: float = 20.0) -> None:
    """Until every one of ``services`` reports ``want`` (AssertionError with the last answers after
    ``scaled(timeout)`` seconds)."""
    services = list(services)
    deadline = time.monotonic() + scaled(timeout)
    while True:
        got = {s: status(channel, s) for s in services}
        if set(got.values()) == {want}:
            return
        assert time.monotonic() < deadline, f"not all {want}: {got}"
        time.sleep(0.1)
