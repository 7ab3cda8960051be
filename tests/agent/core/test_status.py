"""Domain errors become precise gRPC status codes, through a real in-process grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from agent.core.status import STATUS_FOR, code_for, maps_errors, status_for
from cells import errors


class Boom(Exception):
    pass


ERRORS = [
    (errors.InvalidArgument("cell.name", "must not contain '/'"), grpc.StatusCode.INVALID_ARGUMENT, "cell.name: must not contain '/'"),
    (errors.NotFound("cell 'a' not found"), grpc.StatusCode.NOT_FOUND, "cell 'a' not found"),
    (errors.AlreadyExists("cell 'a' exists"), grpc.StatusCode.ALREADY_EXISTS, "cell 'a' exists"),
    (errors.FailedPrecondition("frozen"), grpc.StatusCode.FAILED_PRECONDITION, "frozen"),
    (errors.ResourceExhausted("max cells"), grpc.StatusCode.RESOURCE_EXHAUSTED, "max cells"),
    (errors.RuntimeFailure("EIO on cgroup.procs"), grpc.StatusCode.INTERNAL, "EIO on cgroup.procs"),
    (Boom("secret detail"), grpc.StatusCode.INTERNAL, "internal error (details in the cellard log)"),
]


class Servicer:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @maps_errors
    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise self.exc

    @maps_errors
    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        raise self.exc

    async def ctx(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async with status_for(context):
            raise self.exc


async def call_all(exc: Exception) -> list[tuple[grpc.StatusCode, str]]:
    servicer = Servicer(exc)
    handlers = {
        "U": grpc.unary_unary_rpc_method_handler(servicer.unary),
        "S": grpc.unary_stream_rpc_method_handler(servicer.stream),
        "C": grpc.unary_unary_rpc_method_handler(servicer.ctx),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for method in ("U", "C"):
                try:
                    await ch.unary_unary(f"/t.T/{method}")(b"")
                except grpc.aio.AioRpcError as err:
                    out.append((err.code(), err.details()))
            call = ch.unary_stream("/t.T/S")(b"")
            try:
                assert await call.read() == b"first"
                await call.read()
            except grpc.aio.AioRpcError as err:
                out.append((err.code(), err.details()))
    finally:
        await server.stop(0)
    return out


@pytest.mark.parametrize(("exc", "code", "details"), ERRORS, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_domain_error_maps_to_status(exc, code, details):
    assert asyncio.run(call_all(exc)) == [(code, details)] * 3


def test_subclasses_inherit_the_code_and_packages_can_extend_the_table():
    class Missing(errors.NotFound):
        pass

    assert code_for(Missing("x")) == grpc.StatusCode.NOT_FOUND
    assert code_for(Boom()) is None
    STATUS_FOR[Boom] = grpc.StatusCode.UNAVAILABLE
    try:
        assert code_for(Boom()) == grpc.StatusCode.UNAVAILABLE
    finally:
        del STATUS_FOR[Boom]


def test_every_feature_error_keeps_its_status_through_its_kind():
    """The table used to name each feature's classes (and imported every feature); now it knows only
    observe.kinds. The codes these errors got before the move, unchanged."""
    from agent.auth.privilege import PrivilegeDenied
    from agent.local.jobs.runner import NotYourJob
    from agent.pb import dispatch
    from agent.pb.saver import store as saver_store
    from agent.pb.saver.validation import InvalidReport
    from agent.scaleout import errors as fl
    from cells import errors as cell
    from observe import errors as logs
    from observe.query import NoLogs

    c = grpc.StatusCode
    expected = {
        NotYourJob: c.PERMISSION_DENIED, PrivilegeDenied: c.PERMISSION_DENIED,
        cell.InvalidArgument: c.INVALID_ARGUMENT, cell.NotFound: c.NOT_FOUND, cell.AlreadyExists: c.ALREADY_EXISTS,
        cell.FailedPrecondition: c.FAILED_PRECONDITION, cell.ResourceExhausted: c.RESOURCE_EXHAUSTED,
        cell.RuntimeFailure: c.INTERNAL, cell.ExecTimeout: c.INTERNAL, cell.SupervisorUnavailable: c.UNAVAILABLE,
        logs.InvalidCursor: c.INVALID_ARGUMENT, logs.InvalidName: c.INVALID_ARGUMENT, NoLogs: c.NOT_FOUND,
        saver_store.StoreError: c.UNAVAILABLE, saver_store.TooManyMachines: c.RESOURCE_EXHAUSTED,
        saver_store.UnknownMachine: c.NOT_FOUND, InvalidReport: c.INVALID_ARGUMENT,
        dispatch.NoServer: c.NOT_FOUND, dispatch.InvalidFunction: c.INVALID_ARGUMENT,
        dispatch.BadCertificate: c.INVALID_ARGUMENT,
        fl.InvalidArgument: c.INVALID_ARGUMENT, fl.NotFound: c.NOT_FOUND, fl.PermissionDenied: c.PERMISSION_DENIED,
        fl.FailedPrecondition: c.FAILED_PRECONDITION, fl.ResourceExhausted: c.RESOURCE_EXHAUSTED,
        fl.ModelUnavailable: c.UNAVAILABLE, fl.MissingModelId: c.FAILED_PRECONDITION,
    }
    got = {cls: code_for(cls.__new__(cls)) for cls in expected}
    assert got == expected
    assert code_for(fl.UploadRejected("x")) is None, "unmapped before, handled by its servicer"
