"""Serve a unary-only servicer with request decoding in our hands, so bad bytes get a precise status.

grpcio answers UNKNOWN ("Unexpected DecodeError") when a request does not parse, before any servicer
code runs. :func:`strict_handler` registers the same servicer methods with raw-bytes handlers and
decodes itself: an undecodable request -> ``on_decode_error`` (default INVALID_ARGUMENT naming the
message type). Used by the job agent and the test runner; any unary servicer can use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError

OnDecodeError = Callable[[grpc.aio.ServicerContext, str], Awaitable[None]]


async def invalid_argument(context: grpc.aio.ServicerContext, message: str) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def strict_handler(service: str, servicer: Any, on_decode_error: OnDecodeError = invalid_argument) -> grpc.GenericRpcHandler:
    desc = descriptor_pool.Default().FindServiceByName(service)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in desc.methods:
        assert not (method.client_streaming or method.server_streaming), f"{service}/{method.name} streams"
        request_cls = message_factory.GetMessageClass(method.input_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, method.name), request_cls, on_decode_error),
            response_serializer=_serialize,
        )
    return grpc.method_handlers_generic_handler(service, handlers)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()  # type: ignore[no-any-return]


def _decoding(behavior: Callable[..., Awaitable[Any]], request_cls: Any, on_error: OnDecodeError) -> Callable[..., Any]:
    name = request_cls.DESCRIPTOR.full_name

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = request_cls.FromString(raw)
        except DecodeError as exc:
            await on_error(context, f"request: not a valid {name} ({exc})")
            raise AssertionError("on_decode_error must abort") from None
        return await behavior(request, context)

    return call
