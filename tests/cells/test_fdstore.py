"""The fd store (cells/fdstore.py): a real store process on a temporary socket, and its use by a
real supervisor when the store itself dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.fdstore import FdStore, StoreUnavailable
from cells.spec import CellSpec, ExecutableSpec
from tests.support.cleanup import fdstore_pids, pids_with_cmdline
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FdStore]:
    s = FdStore(str(tmp_path / "fdstore.sock"), start_timeout_s=scaled(10), stderr_path=str(tmp_path / "err"))
    s.open()
    try:
        yield s
    finally:
        s.exit()


def store_pid(path: str) -> int:
    [pid] = pids_with_cmdline(b"cells.fdstore", path.encode())
    return pid


def test_put_get_drop_keys_and_exit(store: FdStore) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    store.put("c/e/1", {"STDOUT": r})
    os.close(r)
    os.write(w, b"still read\n")  # the store's copy keeps a reader: no EPIPE
    assert store.held_keys() == ["c/e/1"]
    copy = store.get("c/e/1")["STDOUT"]
    assert os.read(copy, 100) == b"still read\n"
    os.close(copy)
    assert store.get("missing") == {}
    store.drop("c/e/1")
    assert store.held_keys() == []
    with pytest.raises(BrokenPipeError):
        os.write(w, b"nobody reads\n")  # SIGPIPE is ignored in Python: EPIPE instead
    os.close(w)
    pid = store_pid(store.path)
    store.exit()
    assert not os.path.exists(f"/proc/{pid}")  # gone and reaped (our child here)


def test_only_root_can_connect(store: FdStore) -> None:
    """The socket is root's, no access for group or others (and the store checks SO_PEERCRED besides). Not tested by
    connecting as another user: that needs a fork of this multi-threaded xdist worker, or a Python
    that user may run (the venv lives under /root)."""
    st_ = os.stat(store.path)
    assert st_.st_uid == 0 and st_.st_mode & 0o077 == 0  # nobody but root may connect


@given(junk=st.one_of(st.binary(min_size=1, max_size=300), st.dictionaries(st.text(max_size=5), st.one_of(
    st.text(max_size=5), st.integers(), st.none(), st.lists(st.integers(), max_size=2)), max_size=3).map(
    lambda d: json.dumps(d).encode())))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_junk_requests_get_an_error_and_the_store_serves_on(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    global _JUNK_STORE
    if _JUNK_STORE is None:
        path = tmp_path_factory.mktemp("junk")
        _JUNK_STORE = FdStore(str(path / "s.sock"), start_timeout_s=scaled(10), stderr_path=str(path / "err"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    _JUNK_STORE.open()
    sock.connect(_JUNK_STORE.path)
    sock.settimeout(scaled(5))
    try:
        r, w = os.pipe()
        socket.send_fds(sock, [junk], [r])  # an fd along with junk must be closed by the store, not kept
        os.close(r)
        try:
            request = json.loads(junk)
        except ValueError:
            request = None
        keyed = isinstance(request, dict) and isinstance(request.get("key"), str)
        streams = request.get("streams") if keyed else None
        kept = keyed and request["op"] == "put" and isinstance(streams, list) and len(streams) == 1 and all(
            isinstance(name, str) for name in streams)
        one_way = kept or (keyed and request["op"] == "drop")
        if not one_way:
            reply = json.loads(sock.recv(65536))
            assert isinstance(reply, dict) and "ok" in reply
        assert _JUNK_STORE.held_keys() is not None  # answered after it: the store serves on
        if not kept:
            with pytest.raises(BrokenPipeError):
                os.write(w, b"x")  # the store closed the fd that came with a request it did not keep
        os.close(w)
    finally:
        sock.close()
    for key in _JUNK_STORE.held_keys():
        _JUNK_STORE.drop(key)
    assert _JUNK_STORE.held_keys() == []


_JUNK_STORE: FdStore | None = None


@pytest.fixture(autouse=True, scope="module")
def _stop_junk_store() -> Iterator[None]:
    yield
    if _JUNK_STORE is not None:
        _JUNK_STORE.exit()


def test_a_dead_store_is_restarted_and_given_every_live_run_again(runtime_config: RuntimeConfig) -> None:
    cfg = runtime_config

    async def body() -> None:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec("w"))
        await c.start(ExecutableSpec("w", "a", argv=("sleep", "3600")))
        [old] = fdstore_pids(cfg)
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + scaled(5)
        while old in fdstore_pids(cfg) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await c.start(ExecutableSpec("w", "b", argv=("sleep", "3600")))  # its put restarts the store
        store = FdStore(os.path.join(cfg.run_dir, "fdstore.sock"), start_timeout_s=1, stderr_path=os.devnull)
        try:
            assert store.held_keys() == ["w/a/1", "w/b/1"]
        finally:
            store.close()
        assert fdstore_pids(cfg) != [old]
        await c.free("w", grace_s=0)

    asyncio.run(body())


def test_thousands_of_keys_are_listed_page_by_page(store: FdStore) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        keys = sorted(f"cell-{i:05d}/with-a-longer-name/executable/{i}" for i in range(3000))  # ~170 KB of keys
        for key in keys:
            store.put(key, {"STDOUT": r})
        assert store.held_keys() == keys
        for key in keys:
            store.drop(key)
        assert store.held_keys() == []
    finally:
        os.close(r)
        os.close(w)


def test_a_hung_store_makes_calls_fail_instead_of_blocking_the_caller(store: FdStore) -> None:
    """SIGSTOP: one-way requests fill the socket and then fail at once (MSG_DONTWAIT); from then on
    every call fails at once until RETRY_AFTER_S has passed, instead of waiting on the store."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = store_pid(store.path)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable, match="does not read its requests"):
            for i in range(100_000):
                store.put(f"k{i}", {"STDOUT": r})
        for call in (lambda: store.put("later", {"STDOUT": r}), store.held_keys, lambda: store.get("k0")):
            with pytest.raises(StoreUnavailable, match="unavailable"):
                call()
        assert store_pid(store.path) == pid  # no second store was started beside the hung one
    finally:
        os.kill(pid, signal.SIGCONT)
        os.close(r)
        os.close(w)
