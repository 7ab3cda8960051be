"""Domain errors -> gRPC status codes, in one place.

Servicers are thin adapters: they call the domain and let its exceptions escape into
:func:`status_for` (context manager) or :func:`maps_errors` (decorator), which abort the call with the
code from :data:`STATUS_FOR`. Other packages add their error classes to that dict; lookup walks the
exception's MRO, so a subclass inherits its base's code. Anything unmapped is a bug: INTERNAL, with
the traceback logged and not sent to the client.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import structlog

from agent import dispatch
from agent.jobs.runner import NotYourJob
from agent.privilege import PrivilegeDenied
from agent.saver import store as saver_store
from agent.saver.validation import InvalidReport
from agent.scaleout import errors as fl_errors
from cells import errors as cell_errors
from observe import errors as log_errors
from observe.query import NoLogs

log = structlog.get_logger("agent.status")

STATUS_FOR: dict[type[BaseException], grpc.StatusCode] = {
    NotYourJob: grpc.StatusCode.PERMISSION_DENIED,
    PrivilegeDenied: grpc.StatusCode.PERMISSION_DENIED,
    cell_errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    cell_errors.NotFound: grpc.StatusCode.NOT_FOUND,
    cell_errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    cell_errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    cell_errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    cell_errors.RuntimeFailure: grpc.StatusCode.INTERNAL,
    cell_errors.SupervisorUnavailable: grpc.StatusCode.UNAVAILABLE,
    log_errors.InvalidCursor: grpc.StatusCode.INVALID_ARGUMENT,
    log_errors.InvalidName: grpc.StatusCode.INVALID_ARGUMENT,
    NoLogs: grpc.StatusCode.NOT_FOUND,
    saver_store.StoreError: grpc.StatusCode.UNAVAILABLE,
    saver_store.TooManyMachines: grpc.StatusCode.RESOURCE_EXHAUSTED,
    saver_store.UnknownMachine: grpc.StatusCode.NOT_FOUND,
    InvalidReport: grpc.StatusCode.INVALID_ARGUMENT,
    dispatch.NoServer: grpc.StatusCode.NOT_FOUND,
    dispatch.InvalidFunction: grpc.StatusCode.INVALID_ARGUMENT,
    dispatch.BadCertificate: grpc.StatusCode.INVALID_ARGUMENT,
    fl_errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    fl_errors.NotFound: grpc.StatusCode.NOT_FOUND,
    fl_errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    fl_errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    fl_errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    fl_errors.ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    fl_errors.MissingModelId: grpc.StatusCode.FAILED_PRECONDITION,
}


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The mapped code of ``exc``'s most specific class in STATUS_FOR, else None."""
    for cls in type(exc).__mro__:
        code = STATUS_FOR.get(cls)
        if code is not None:
            return code
    return None


async def abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """Abort ``context`` with the status for ``exc`` (always raises)."""
    code = code_for(exc)
    if code is None:
        log.error("rpc.internal_error", exc_info=exc, error=repr(exc))
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (details in the cellard log)")
    if code == grpc.StatusCode.INTERNAL:
        log.error("rpc.runtime_failure", exc_info=exc, error=str(exc))
    await context.abort(code, str(exc))  # type: ignore[arg-type]


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises grpc.aio.AbortError; it must pass through untouched.
    return isinstance(exc, grpc.aio.AbortError)


@asynccontextmanager
async def status_for(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """``async with status_for(context): ...`` turns domain errors into the call's status."""
    try:
        yield
    except Exception as exc:
        if _is_abort(exc):
            raise
        await abort_for(context, exc)


F = TypeVar("F", bound=Callable[..., Any])


def maps_errors(method: F) -> F:
    """Decorator for unary (coroutine) and server-streaming (async generator) servicer methods."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with status_for(context):
                async for item in method(self, request, context):
                    yield item

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with status_for(context):
            return await method(self, request, context)

    return unary  # type: ignore[return-value]
