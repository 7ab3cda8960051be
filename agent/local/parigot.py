"""parigot's out-of-band errors on gRPC, shared by file.v1, queue.v1 and test.v1.

parigot's host functions returned an int32 error code and no response body. cellar keeps that
information on the wire: code 0 -> OK with the response; any other code -> a gRPC status (chosen per
code below), no body, and trailing metadata ``parigot-error: <number>`` and
``parigot-error-name: <enum name>``. A servicer raises :class:`ParigotError` (or a subclass per
service, see :func:`error_class`) and wraps its body in :func:`parigot_errors`.

IdRaw: 128 bits as (``high``, ``low``); parigot keeps a type letter in the top byte of ``high``
(``f`` file, ``q`` queue, ``m`` message, ``t`` test...). :func:`new_id` makes such ids, random in the
remaining bits; :func:`id_letter` reads the letter back.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from agent.core.status import abort_for

ERROR_KEY = "parigot-error"
ERROR_NAME_KEY = "parigot-error-name"
MASK_56 = (1 << 56) - 1
MASK_63 = (1 << 63) - 1


class ParigotError(Exception):
    """A parigot error code; ``status`` is the gRPC code it travels with."""

    enum: EnumTypeWrapper | None = None
    status_for: dict[str, grpc.StatusCode] = {}

    def __init__(self, name: str, message: str = "") -> None:
        assert self.enum is not None, "use a subclass made by error_class()"
        self.code = int(self.enum.Value(name))
        self.name = name
        super().__init__(message or name)

    @property
    def status(self) -> grpc.StatusCode:
        return self.status_for.get(self.name, grpc.StatusCode.UNKNOWN)

    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((ERROR_KEY, str(self.code)), (ERROR_NAME_KEY, self.name))


def error_class(name: str, enum: EnumTypeWrapper, status_for: dict[str, grpc.StatusCode]) -> type[ParigotError]:
    """A ParigotError subclass for one service's error enum (e.g. ``FileErr``)."""
    missing = [n for n in list(enum.keys()) if n != "NoError" and n not in status_for]
    if missing:
        raise ValueError(f"{name}: no gRPC status for {missing}")
    return type(name, (ParigotError,), {"enum": enum, "status_for": dict(status_for)})


async def abort_parigot(context: grpc.aio.ServicerContext, exc: ParigotError) -> None:
    """End the call with ``exc``'s status and parigot trailers (always raises)."""
    context.set_trailing_metadata(exc.trailers())
    await context.abort(exc.status, str(exc))


@asynccontextmanager
async def parigot_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """ParigotError -> status + trailers; other domain errors -> agent.core.status's mapping."""
    try:
        yield
    except ParigotError as exc:
        await abort_parigot(context, exc)
    except PermissionError as exc:  # e.g. a non-admin naming another scope
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    except Exception as exc:
        if isinstance(exc, grpc.aio.AbortError):
            raise
        await abort_for(context, exc)


F = TypeVar("F", bound=Callable[..., Any])


def parigot_method(method: F) -> F:
    """Decorator for unary servicer methods: ``async def M(self, request, context)``."""

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with parigot_errors(context):
            return await method(self, request, context)

    return unary  # type: ignore[return-value]


def new_id(letter: str) -> tuple[int, int]:
    """A fresh (high, low) with ``letter`` in the top byte of high; both fit SQLite's signed INTEGER."""
    return (ord(letter) << 56) | secrets.randbits(56), secrets.randbits(63)


def id_letter(high: int) -> str:
    return chr((high >> 56) & 0xFF)


def storable(high: int, low: int) -> bool:
    """Whether (high, low) can be a key in SQLite (ids we issue always are)."""
    return 0 <= high <= MASK_63 and 0 <= low <= MASK_63
