"""gRPC server reflection under both names: ``grpc.reflection.v1`` and ``grpc.reflection.v1alpha``.

grpcio-reflection (1.85) ships only v1alpha, while current clients (grpcurl >= 1.8.8, grpcui,
Postman) ask ``grpc.reflection.v1.ServerReflection`` first. The two protos are the same messages
under another package (grpc/grpc-proto reflection/v1/reflection.proto was copied from v1alpha), so
their wire forms are identical: the v1 method is served by the same servicer, its messages parsed and
written with the v1alpha classes. The v1 file descriptor is added to the default pool (v1alpha's
with its package renamed) so a client can describe the v1 service itself, and the RPC metrics label
it like any other method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA = reflection.SERVICE_NAME  # "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    for message in proto.message_type:
        for fld in message.field:
            if fld.type_name.startswith(".grpc.reflection.v1alpha."):
                fld.type_name = ".grpc.reflection.v1." + fld.type_name.rsplit(".", 1)[1]
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.AddSerializedFile(proto.SerializeToString())


def enable(service_names: Sequence[str], server: Any) -> None:
    """Serve reflection on ``server`` (grpc.aio) under both names, listing ``service_names``."""
    _register_v1_descriptor()
    servicer = ReflectionServicer(list(service_names))
    reflection.enable_server_reflection(list(service_names), server)  # v1alpha (its own servicer)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1, {"ServerReflectionInfo": handler}),))
