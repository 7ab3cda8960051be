"""The node-local endpoint of a REAL cellard: where its listeners are, and how a parigot error reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.timeouts import scaled


def local_socket(daemon: Any) -> str:
    return str(Path(daemon.config["paths"]["run_dir"]) / "local.sock")


def local_tcp(daemon: Any, timeout: float = 20) -> str:
    """``host:port`` of the node-local endpoint's loopback TCP listener (the last ``local.listening``
    event), waiting up to ``timeout`` for the endpoint to come up."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        events = [ev for ev in daemon.events("local.listening") if ev.get("tcp")]
        if events:
            return str(events[-1]["tcp"])
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no node-local TCP listener:\n{daemon.log_text()[-4000:]}")
        time.sleep(0.05)


def state_dir(daemon: Any) -> Path:
    return Path(daemon.config["paths"]["state_dir"])


def parigot_error(call: Callable[[], object]) -> tuple[grpc.StatusCode, int, str]:
    """Run ``call`` expecting a parigot error: (gRPC status, parigot-error, parigot-error-name)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    exc = info.value
    assert isinstance(exc, grpc.Call)
    md = dict(exc.trailing_metadata() or ())
    assert "parigot-error" in md, f"no parigot trailers: {exc.code()} {exc.details()} {md}"
    return exc.code(), int(md["parigot-error"]), str(md["parigot-error-name"])


def rpc_code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert isinstance(info.value, grpc.Call)
    return info.value.code()
