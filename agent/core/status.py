"""Domain errors -> gRPC status codes, in one place.

Servicers are thin adapters: they call the domain and let its exceptions escape into
:func:`status_for` (context manager) or :func:`maps_errors` (decorator), which abort the call with the
code of its kind (:mod:`observe.kinds`): every feature's errors subclass one kind, so this module
imports no feature. Lookup walks the exception's MRO, so the most specific kind wins. Anything
unmapped is a bug: INTERNAL, with the traceback logged and not sent to the client.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import structlog

from observe import kinds

log = structlog.get_logger("agent.core.status")

#: Error kinds (observe.kinds) -> status. Every feature's errors subclass a kind; nothing else is mapped.
STATUS_FOR: dict[type[BaseException], grpc.StatusCode] = {
    kinds.Invalid: grpc.StatusCode.INVALID_ARGUMENT,
    kinds.NotFound: grpc.StatusCode.NOT_FOUND,
    kinds.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    kinds.Precondition: grpc.StatusCode.FAILED_PRECONDITION,
    kinds.Denied: grpc.StatusCode.PERMISSION_DENIED,
    kinds.Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    kinds.Unavailable: grpc.StatusCode.UNAVAILABLE,
    kinds.Failure: grpc.StatusCode.INTERNAL,
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
