"""sd_notify: cellard tells systemd READY/STATUS/WATCHDOG/STOPPING over NOTIFY_SOCKET, itself.

The receiving end is what systemd binds: an AF_UNIX datagram socket, by path or abstract ``@name``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.sdnotify import Notifier, socket_address, watchdog_interval
from tests.support.cleanup import destroy_runtime


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"cellar-test-notify-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(20)
    yield "@" + name, sock
    sock.close()


def messages(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    """Datagrams received until one contains the line ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got.append(sock.recv(4096).decode())
        if until in got[-1].splitlines():
            return got
    raise AssertionError(f"no {until!r} in {got}")


def test_addresses() -> None:
    assert socket_address("@sd/notify") == b"\0sd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("") is None and socket_address("@") is None and socket_address("vsock:2:1") is None


def test_watchdog_interval_is_half_the_period_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None and watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None


def test_without_notify_socket_nothing_is_sent() -> None:
    assert Notifier({}).enabled is False
    assert Notifier({}).ready("x") is False


def test_path_socket_and_a_vanished_one(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        assert n.status("warming up") is True
        assert sock.recv(100) == b"STATUS=warming up"
    path.unlink()
    assert n.status("gone") is False  # logged, never raised


@pytest.mark.root
def test_cellard_notifies_ready_watchdog_and_stopping(abstract_socket: tuple[str, socket.socket]) -> None:
    from tests.support.cellard import REPO, base_config, daemon_env, new_base, toml_dumps

    address, sock = abstract_socket
    base = new_base(0o700)
    token = f"cellar-test-{secrets.token_hex(4)}"
    cfg = base_config(base, token)
    (base / "cellard.toml").write_text(toml_dumps(cfg))
    from cells.config import RuntimeConfig

    env = {**daemon_env(), "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", str(base / "cellard.toml")],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        got = messages(sock, "READY=1")
        ready = got[-1].splitlines()
        assert f"MAINPID={proc.pid}" in ready and any(line.startswith("STATUS=serving") for line in ready)
        assert os.path.exists(cfg["server"]["socket"])  # READY only once the socket is served
        messages(sock, "WATCHDOG=1", timeout=5)
        messages(sock, "WATCHDOG=1", timeout=5)  # repeated, every 0.1 s here
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in messages(sock, "STOPPING=1")[-1]
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        paths = cfg["paths"]
        destroy_runtime(RuntimeConfig(state_dir=paths["state_dir"], run_dir=paths["run_dir"], log_dir=paths["log_dir"],
                                      cgroup_root_name=token, netns_prefix=token + "-"))
        import shutil

        shutil.rmtree(base, ignore_errors=True)
