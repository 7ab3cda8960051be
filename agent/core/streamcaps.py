"""Caps on concurrent long-lived streams (log follows, watches) per identity (issue 13, "Bounded").

A follow holds a task, a file reader and a queue in cellard for as long as the caller likes, so one
identity may hold at most ``server.max_streams_per_identity`` (256) at once; the next one is
RESOURCE_EXHAUSTED naming the setting, and a stream that ends (or is cancelled) gives its slot back.

The identity is the caller as authorization saw it: the certificate identity of an mTLS caller; the
uid of a main-socket caller; the storage scope of a node-local caller. Root on the main socket is
exempt, as it is from the connection caps: the operator is never the one degraded (2,000 concurrent
followers of one executable from root are served, tests/security/test_bounds.py).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from agent.auth.authz import current_cert_identity, current_peer_cred
from cells.errors import ResourceExhausted


class TooManyStreams(ResourceExhausted):
    """The caller already holds its share of concurrent streams (RESOURCE_EXHAUSTED)."""


def stream_identity() -> str | None:
    """The budget of the current call, or None when exempt (root on the main socket)."""
    cert = current_cert_identity()
    if cert:
        return f"cert:{cert}"
    cred = current_peer_cred()
    if cred is not None:
        return None if cred.uid == 0 else f"uid:{cred.uid}"
    from agent.auth.identity import caller_identity

    ident = caller_identity()
    if ident.transport != "main":
        return f"scope:{ident.scope}"
    return None  # cellard's own listeners without a known caller (insecure development TCP)


class StreamLimiter:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, what: str, context: Any = None) -> Iterator[None]:
        """Count one stream of the current caller until the block ends or the call does.

        ``context``: the call's ServicerContext; the slot is also freed as soon as gRPC reports the
        call done, whatever the handler is doing then (belt and braces: a cancelled handler's
        ``finally`` frees it too).
        """
        key = stream_identity()
        if key is None:
            yield
            return
        held = self.open.get(key, 0)
        if held >= self.cap:
            raise TooManyStreams(
                f"{what}: {held} concurrent streams of {key} already open (server.max_streams_per_identity = {self.cap})"
            )
        self.open[key] = held + 1
        released = False

        def release(*_args: Any) -> None:
            nonlocal released
            if released:
                return
            released = True
            if self.open.get(key, 0) <= 1:
                self.open.pop(key, None)
            else:
                self.open[key] -= 1

        if context is not None:
            context.add_done_callback(release)
        try:
            yield
        finally:
            release()


_limiters: dict[int, StreamLimiter] = {}


def limiter_for(app: Any) -> StreamLimiter:
    """The one limiter of ``app`` (its servicers share it), created on first use."""
    limiter = _limiters.get(id(app))
    if limiter is None:
        limiter = _limiters[id(app)] = StreamLimiter(app.config.server.max_streams_per_identity)
        weakref.finalize(app, _limiters.pop, id(app), None)
    return limiter
