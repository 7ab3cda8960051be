"""Fixtures for the node-local endpoint tests: a REAL cellard per module, its local listeners, helpers.

- ``local_daemon`` (module): a cellard (tests.agent.conftest.running_cellard: own temp dir, unique cgroup
  root, full cleanup) with queue visibility timeout 0 and the local TCP listener on a kernel-chosen port.
- ``local_ch`` / ``main_ch``: channels to its local Unix socket / its main (admin) socket.
- :func:`parigot_error`: (status, number, name) of a failed call, read from the trailing metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.agent.conftest import running_cellard


def local_socket(daemon: Any) -> str:
    return str(Path(daemon.config["paths"]["run_dir"]) / "local.sock")


def local_tcp(daemon: Any) -> str:
    """The bound address of the local TCP listener (from the last ``local.listening`` event)."""
    events = daemon.events("local.listening")
    assert events and events[-1].get("tcp"), daemon.log_text()
    return str(events[-1]["tcp"])


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


@pytest.fixture(scope="module")
def local_daemon() -> Iterator[Any]:
    with running_cellard({"queue": {"visibility_timeout_s": 0.0}}) as daemon:
        yield daemon


@pytest.fixture
def local_ch(local_daemon: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel("unix:" + local_socket(local_daemon)) as ch:
        yield ch


@pytest.fixture
def main_ch(local_daemon: Any) -> Iterator[grpc.Channel]:
    with local_daemon.channel() as ch:
        yield ch
