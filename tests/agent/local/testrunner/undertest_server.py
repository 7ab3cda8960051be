"""A real test.v1.UnderTest + MethodCallSuite server for the test runner's tests (run as a process).

``python undertest_server.py SOCKET LOG``: serves on ``unix:SOCKET``; every Exec and SuiteReport it
receives is appended to LOG as one JSON line. Exec's verdict comes from the function name: ``ok*``
passes, ``skip*`` is skipped, ``bad*`` fails with a detail, anything else passes.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict

from proto.parigot.test.v1 import test_pb2, test_pb2_grpc

_lock = threading.Lock()


def record(path: str, kind: str, message: object) -> None:
    with _lock, open(path, "a") as fh:
        fh.write(json.dumps({kind: MessageToDict(message, preserving_proto_field_name=True)}) + "\n")  # type: ignore[arg-type]


class UnderTest(test_pb2_grpc.UnderTestServicer):
    def __init__(self, log: str) -> None:
        self.log = log

    def Exec(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        record(self.log, "exec", request)
        out = test_pb2.ExecResponse(package=request.package, service=request.service, name=request.name)
        if request.name.startswith("skip"):
            out.skipped = True
        elif request.name.startswith("bad"):
            out.detail.add(name=request.name, error_message="expected 1, got 2", success=False)
        else:
            out.success = True
        return out


class Suite(test_pb2_grpc.MethodCallSuiteServicer):
    def __init__(self, log: str) -> None:
        self.log = log

    def SuiteReport(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        record(self.log, "report", request)
        return test_pb2.SuiteReportResponse()


def main() -> None:
    socket, log = sys.argv[1], sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(4))
    test_pb2_grpc.add_UnderTestServicer_to_server(UnderTest(log), server)
    test_pb2_grpc.add_MethodCallSuiteServicer_to_server(Suite(log), server)
    server.add_insecure_port("unix:" + socket)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
