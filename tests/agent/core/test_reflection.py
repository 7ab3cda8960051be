"""Server reflection under grpc.reflection.v1 (what current grpcurl asks first) and v1alpha, on a REAL cellard.

The v1 client is a plain gRPC stream on ``/grpc.reflection.v1.ServerReflection/ServerReflectionInfo``
with messages built from the v1 descriptor a REAL client would use (grpc-proto's reflection/v1 is the
same messages as v1alpha under another package: the wire bytes are the same).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

pytestmark = pytest.mark.root

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def ask(channel: grpc.Channel, method: str, *requests: Any) -> list[Any]:
    call = channel.stream_stream(method, request_serializer=v1alpha.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=v1alpha.ServerReflectionResponse.FromString)
    return list(call(iter(requests), timeout=10))


@pytest.mark.parametrize("method", [V1_METHOD, V1ALPHA_METHOD])
def test_reflection_v1_and_v1alpha(cellard: Any, method: str) -> None:
    with cellard.channel() as ch:
        (listing, described, missing) = ask(
            ch, method,
            v1alpha.ServerReflectionRequest(list_services=""),
            v1alpha.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
            v1alpha.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
        )
    names = {s.name for s in listing.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            "runtime.CellService", "grpc.health.v1.Health"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    v1 = next(f for f in files if f.name == "grpc/reflection/v1/reflection.proto")
    assert v1.package == "grpc.reflection.v1"
    assert [m.name for m in v1.service[0].method] == ["ServerReflectionInfo"]
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_v1_is_an_observer_method() -> None:
    """The role table already lists both paths: v1 is not admin-only by omission."""
    from agent.auth.authz import required_role

    assert required_role(V1_METHOD) == required_role(V1ALPHA_METHOD) == "observer"
