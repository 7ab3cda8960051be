"""Fixtures for the node-local endpoint tests: a REAL cellard per module and its local listeners.

- ``local_daemon`` (module): a cellard (tests.support.api.running_cellard: own temp dir, unique cgroup
  root, full cleanup) with queue visibility timeout 0 and the local TCP listener on a kernel-chosen port.
- ``local_ch`` / ``main_ch``: channels to its local Unix socket / its main (admin) socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.support.api import running_cellard
from tests.support.local import local_socket


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
