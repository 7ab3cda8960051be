"""test.v1's error codes (``TestErr``) and the gRPC status each one travels with (agent.local.parigot)."""

from __future__ import annotations

import grpc

from agent.local.parigot import error_class
from proto.parigot.test.v1 import test_pb2

S = grpc.StatusCode

RUNNER_STATUS: dict[str, grpc.StatusCode] = {
    "DispatchError": S.UNIMPLEMENTED,
    "UnmarshalError": S.INVALID_ARGUMENT,
    "ServiceNotFound": S.NOT_FOUND,
    "Exec": S.UNAVAILABLE,
    "SendFailed": S.UNAVAILABLE,
    "Internal": S.INTERNAL,
    "RegexpFailed": S.INVALID_ARGUMENT,
    "Marshal": S.INTERNAL,
    "Queue": S.UNAVAILABLE,
    "DynamicLocate": S.NOT_FOUND,
}

#: Raised as ``RunnerError("<TestErr name>", "message")``.
RunnerError = error_class("RunnerError", test_pb2.TestErr, RUNNER_STATUS)
