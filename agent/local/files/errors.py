"""file.v1's error codes (``FileErr``) and the gRPC status each one travels with."""

from __future__ import annotations

import grpc

from agent.local.parigot import error_class
from proto.parigot.file.v1 import file_pb2

S = grpc.StatusCode

FILE_STATUS: dict[str, grpc.StatusCode] = {
    "DispatchError": S.UNIMPLEMENTED,
    "UnmarshalError": S.INVALID_ARGUMENT,
    "MarshalError": S.INTERNAL,
    "InvalidPathError": S.INVALID_ARGUMENT,
    "AlreadyInUseError": S.FAILED_PRECONDITION,
    "NotExistError": S.NOT_FOUND,
    "FileClosedError": S.FAILED_PRECONDITION,
    "EOFError": S.OUT_OF_RANGE,
    "ReadError": S.FAILED_PRECONDITION,
    "WriteError": S.FAILED_PRECONDITION,
    "OpenError": S.FAILED_PRECONDITION,
    "DeleteError": S.FAILED_PRECONDITION,
    "CreateError": S.FAILED_PRECONDITION,
    "NoDataFoundError": S.NOT_FOUND,
    "LargeBufError": S.INVALID_ARGUMENT,
    "InternalError": S.INTERNAL,
}

FileError = error_class("FileError", file_pb2.FileErr, FILE_STATUS)
