"""The peer proxies forward a client's first bytes, whatever the interpreter's asyncio does.

A proxy accepts, then connects upstream (a few loop iterations later). Bytes the client sent at
once (gRPC's HTTP/2 preface) must wait for the upstream, not vanish: the proxy used to rely on
``pause_reading()`` from ``connection_made()``, which CPython 3.11.2 silently ignores
(python/cpython#103607, fixed later in 3.11.x). Debian 12's python3 is 3.11.2, so in the Debian
package most local calls lost their preface and failed with ``UNAVAILABLE: Stream removed``.

The 3.11.2 behaviour is reproduced two ways: in this interpreter, by putting back the transport
method CPython fixed (the only difference between the two versions here), and for real by running
the round trip under the host's ``/usr/bin/python3`` (Debian's, on the CI machines).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sysconfig
import tempfile
from asyncio import selector_events
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.auth.splice_roundtrip import PAYLOAD, roundtrip
from tests.support import REPO

SYSTEM_PYTHON = "/usr/bin/python3"


def _add_reader_3_11_2(self: Any, fd: int, callback: Any, *args: Any) -> None:
    """``_SelectorTransport._add_reader`` as in CPython 3.11.2: starts reading even when paused."""
    if self._closing:
        return
    self._loop._add_reader(fd, callback, *args)


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short base directory: Unix socket paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="cup-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["this-python", "python-3.11.2"])
def asyncio_behaviour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "python-3.11.2":
        monkeypatch.setattr(selector_events._SelectorTransport, "_add_reader", _add_reader_3_11_2)
    return str(request.param)


@pytest.mark.parametrize("own_thread", [False, True], ids=["grpc-loop", "own-thread"])
@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_bytes_and_eof_sent_before_the_upstream_exists_arrive(
    short_dir: str, asyncio_behaviour: str, kind: str, own_thread: bool
) -> None:
    reply = asyncio.run(roundtrip(short_dir, kind, own_thread))
    assert len(reply) == len(PAYLOAD) and reply == PAYLOAD


def test_under_the_systems_python3(short_dir: str) -> None:
    """The real condition of the Debian package: its venv runs on Debian's /usr/bin/python3."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} on this host")
    # agent.auth.unixpeer needs only the stdlib and structlog (pure Python): borrow this venv's copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])}
    env.pop("PYTHONHOME", None)
    result = subprocess.run(
        [SYSTEM_PYTHON, "-B", str(REPO / "tests/agent/auth/splice_roundtrip.py"), short_dir, "unix"],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )
    version = subprocess.run([SYSTEM_PYTHON, "-V"], capture_output=True, text=True).stdout.strip()
    assert result.returncode == 0 and result.stdout.strip() == "OK", (version, result.stdout, result.stderr)
