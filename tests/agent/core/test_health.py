"""grpc.health.v1 and reflection on a real cellard: every registered service has a status."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent.metadata import VERSION_METADATA_KEY
from agent.version import VERSION

SERVICES = sorted([
    "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
    "runtime.CellService", "cellar.v1.Cells", "observe.Observe", "cellar.v1.Logs",
])


def list_services(channel: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    return sorted(s.name for r in replies for s in r.list_services_response.service)


def test_every_registered_service_and_the_server_are_serving(cellard):
    with cellard.channel() as ch:
        served = list_services(ch)
        assert set(SERVICES) <= set(served), sorted(set(SERVICES) - set(served))
        for service in ["", *served]:
            assert cellard.health(service, ch) == "SERVING"


def test_unknown_service_is_not_found(cellard):
    with cellard.channel() as ch, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_check_reply_carries_the_server_version(cellard):
    with cellard.channel() as ch:
        _, call = health_pb2_grpc.HealthStub(ch).Check.with_call(health_pb2.HealthCheckRequest(), timeout=5)
    assert (VERSION_METADATA_KEY, VERSION) in tuple(call.initial_metadata())


def test_unknown_method_is_unimplemented_for_an_allowed_caller(cellard):
    with cellard.channel() as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/runtime.CellService/NoSuchMethod")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_socket_mode_and_directories(cellard):
    import os
    import stat

    st = os.stat(cellard.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    internal = cellard.run_dir / "internal"
    assert stat.S_IMODE(os.stat(internal).st_mode) == 0o700
