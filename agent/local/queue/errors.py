"""queue.v1's error codes (``QueueErr``) and the gRPC status each one travels with."""

from __future__ import annotations

import grpc

from agent.local.parigot import error_class
from proto.parigot.queue.v1 import queue_pb2

S = grpc.StatusCode

QUEUE_STATUS: dict[str, grpc.StatusCode] = {
    "DispatchError": S.UNIMPLEMENTED,
    "UnmarshalError": S.INVALID_ARGUMENT,
    "MarshalError": S.INTERNAL,
    "InvalidName": S.INVALID_ARGUMENT,
    "InternalError": S.INTERNAL,
    "NoPayload": S.INVALID_ARGUMENT,
    "NotFound": S.NOT_FOUND,
    "AlreadyExists": S.ALREADY_EXISTS,
    "UnmarshalFailed": S.INVALID_ARGUMENT,
}

QueueError = error_class("QueueError", queue_pb2.QueueErr, QUEUE_STATUS)
