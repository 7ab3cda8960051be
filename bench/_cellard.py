"""A throwaway cellard for benches: the real daemon, as clients see it, leaving nothing behind.

Benches measure what a client observes, so they start ``python -m agent.daemon`` (and through it
the supervisor) in a temp directory with a unique cgroup root and netns prefix, then talk to its
sockets. :meth:`Cellard.close` stops the daemon and removes everything it made (supervisor, cells,
cgroups, netns, files) even after a failure or Ctrl-C, so a bench can never leak kernel objects:

    daemon = Cellard()
    try:
        daemon.start({"local": {"tcp_listen": "127.0.0.1:0"}})
        addr = daemon.event("local.listening", "tcp")["tcp"]
        ...
    finally:
        daemon.close()
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from cells.config import RuntimeConfig  # noqa: E402

START_TIMEOUT_S = 30.0
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for a cellard config: nested tables of str/int/float/bool/list scalars."""
    scalars, tables = [], []
    for key, value in data.items():
        qkey = key if _BARE_KEY.match(key) else json.dumps(key)
        if isinstance(value, dict):
            tables.append((f"{prefix}.{qkey}" if prefix else qkey, value))
        else:
            scalars.append(f"{qkey} = {json.dumps(value)}")
    out = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(f"{s}\n" for s in scalars)
    return out + "".join(toml(value, name) for name, value in tables)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top, table by table."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def interrupt_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so the bench's ``finally`` still cleans up."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


class Cellard:
    """One cellard subprocess in its own temp dir (``base``), with cgroup root and netns prefix ``token``."""

    def __init__(self, profile: str | None = None) -> None:
        """``profile``: a directory; cellard runs under cProfile and writes ``cellard.prof`` there on exit."""
        self.base = Path(tempfile.mkdtemp(prefix="cellar-bench-", dir="/tmp"))  # short: socket paths <= 108 B
        self.token = f"cellar-bench-{secrets.token_hex(4)}"
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "cellard.log"
        self.config: dict[str, Any] = {
            "server": {"socket": str(self.base / "cellar.sock")},
            "paths": {"run_dir": str(self.base / "run"), "state_dir": str(self.base / "state"),
                      "log_dir": str(self.base / "log")},
            "cells": {"cgroup_root": self.token, "netns_prefix": self.token + "-"},
            "log": {"level": "info", "format": "json"},  # JSON: start() and event() read it back
            # Off unless asked for: a cellard of the host may hold the default port.
            "local": {"tcp_listen": ""},
        }

    @property
    def socket(self) -> str:
        """cellard's Unix socket (root callers are admins there)."""
        return str(self.config["server"]["socket"])

    @property
    def pid(self) -> int:
        assert self.proc is not None, "cellard not started"
        return self.proc.pid

    def runtime_config(self) -> RuntimeConfig:
        """The supervisor's settings of this daemon: its socket (to call it directly) and what to destroy."""
        cells, paths = self.config["cells"], self.config["paths"]
        return RuntimeConfig(state_dir=paths["state_dir"], run_dir=paths["run_dir"], log_dir=paths["log_dir"],
                             cgroup_root_name=cells["cgroup_root"], netns_prefix=cells["netns_prefix"])

    def start(self, config: dict[str, Any] | None = None) -> None:
        """Write the config (defaults + ``config``), start cellard and wait until its Unix socket is SERVING."""
        self.config = merge(self.config, config or {})
        config_path = self.base / "cellard.toml"
        config_path.write_text(toml(self.config))
        argv = [sys.executable]
        if self.profile:
            os.makedirs(self.profile, exist_ok=True)
            argv += ["-m", "cProfile", "-o", os.path.join(self.profile, "cellard.prof")]
        argv += ["-m", "agent.daemon", "--config", str(config_path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CELLAR_CONFIG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.event("server.listening")
        deadline = time.monotonic() + START_TIMEOUT_S
        with grpc.insecure_channel("unix:" + self.socket) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive()
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"cellard not SERVING within {START_TIMEOUT_S:g} s:\n{self.log_text()}")
                time.sleep(0.05)

    def event(self, name: str, key: str | None = None, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """The first JSON log event ``name`` (with a true ``key``, if given), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict) and ev.get("event") == name and (key is None or ev.get(key)):
                    return ev
            self._check_alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"cellard logged no {name} event within {timeout:g} s:\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        assert self.proc is not None, "cellard not started"
        if self.proc.poll() is not None:
            raise SystemExit(f"cellard exited {self.proc.returncode}:\n{self.log_text()}")

    def close(self) -> None:
        """SIGTERM cellard (SIGKILL after 20 s), then kill and remove whatever its supervisor made."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            from tests.support.cleanup import destroy_runtime

            destroy_runtime(self.runtime_config())
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
