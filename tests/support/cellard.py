"""A REAL cellard for tests: its config, its PKI, and the handle a test drives it by.

- :class:`Cellard`: a running ``python -m agent.daemon`` subprocess, its paths, log events, channels
  (Unix socket, mTLS) and health; :func:`start_cellard` starts one in its own short temp directory
  with a unique ``cellar-test-<8 hex>`` cgroup root and netns prefix, so daemons never share state.
- :func:`base_config`, :func:`merge`, :func:`toml_dumps`: the test configs.
- :class:`PKI` and :data:`TLS_IDENTITIES`: the certificates the ``pki`` fixture issues.

The fixtures that use these live in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cells.config import RuntimeConfig
from tests.support import REPO
from tests.support.cleanup import destroy_runtime
from tests.support.timeouts import scaled

TLS_IDENTITIES = {"admin-user": "admin", "op-user": "operator", "obs-user": "observer"}
START_TIMEOUT_S = scaled(20.0)
STOP_TIMEOUT_S = scaled(15.0)



def toml_dumps(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for test configs: nested tables of str/int/float/bool (ints written octal-safe)."""
    scalars, tables = [], []
    for key, value in data.items():
        qkey = key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)
        if isinstance(value, dict):
            tables.append((qkey, value))
        else:
            scalars.append(f"{qkey} = {json.dumps(value)}")
    out = ""
    if scalars:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(scalars) + "\n"
    for qkey, value in tables:
        out += toml_dumps(value, f"{prefix}.{qkey}" if prefix else qkey)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class PKI:
    dir: Path
    other_dir: Path

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"


@dataclass
class Cellard:
    """A running cellard subprocess and the paths it uses."""

    proc: subprocess.Popen[bytes]
    base: Path
    config_path: Path
    log_path: Path
    token: str
    config: dict[str, Any]
    pki: PKI | None = None
    tcp: str | None = None
    returncode: int | None = field(default=None)

    @property
    def socket(self) -> str:
        return str(self.config["server"]["socket"])

    @property
    def run_dir(self) -> Path:
        return Path(self.config["paths"]["run_dir"])

    def runtime_config(self) -> RuntimeConfig:
        """The supervisor's settings of this daemon (to find and destroy what it made)."""
        cells, paths = self.config["cells"], self.config["paths"]
        return RuntimeConfig(state_dir=paths["state_dir"], run_dir=paths["run_dir"], log_dir=paths["log_dir"],
                             cgroup_root_name=cells["cgroup_root"], netns_prefix=cells["netns_prefix"])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Parsed JSON log events (optionally only ``event == name``)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel("unix:" + self.socket)

    def tls_channel(self, client: str | None, ca_dir: Path | None = None) -> grpc.Channel:
        """mTLS channel to the TCP listener as ``client`` (None = no client certificate)."""
        assert self.pki is not None and self.tcp is not None
        key = cert = None
        if client is not None:
            cdir = ca_dir or self.pki.dir
            cert = (cdir / f"{client}.pem").read_bytes()
            key = (cdir / f"{client}-key.pem").read_bytes()
        creds = grpc.ssl_channel_credentials(self.pki.ca.read_bytes(), key, cert)
        return grpc.secure_channel(self.tcp, creds)

    def health(self, service: str = "", channel: grpc.Channel | None = None) -> str:
        ch = channel or self.channel()
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        finally:
            if channel is None:
                ch.close()

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cellard exited {self.proc.returncode} during start:\n{self.log_text()}")
            listening = self.events("server.listening")
            if listening:
                if listening[0].get("tcp"):
                    self.tcp = listening[0]["tcp"]
                try:
                    if self.health() == "SERVING":
                        return
                except grpc.RpcError as exc:
                    last = str(exc.code())
            time.sleep(0.05)
        raise AssertionError(f"cellard not SERVING after {timeout}s ({last}):\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Signal the daemon and wait; SIGKILL if it outlives ``timeout``. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        return self.proc.returncode


def new_base(mode: int) -> Path:
    # Short paths: Unix socket names are limited to 108 bytes, pytest's tmp_path is too deep.
    base = Path(tempfile.mkdtemp(prefix="cellar-t-", dir="/tmp"))
    os.chmod(base, mode)
    return base


def daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.pop("CELLAR_CONFIG", None)
    return env


def base_config(base: Path, token: str) -> dict[str, Any]:
    return {
        "server": {"socket": str(base / "cellar.sock"), "drain_timeout_s": 5.0},
        "paths": {"run_dir": str(base / "run"), "state_dir": str(base / "state"), "log_dir": str(base / "log")},
        "cells": {"cgroup_root": token, "netns_prefix": f"ct{token[-8:]}-", "supervisor_start_timeout_s": scaled(10.0)},
        "log": {"level": "debug", "format": "json"},
        # Parallel daemons: the node-local endpoint's loopback TCP port is picked by the kernel.
        "local": {"tcp_listen": "127.0.0.1:0"},
    }


StartCellard = Callable[..., Cellard]


def _popen(config_path: Path, log_path: Path, args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(config_path), *args],
            cwd=REPO, env=daemon_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )


def start_cellard(
    config: dict[str, Any] | None = None,
    *,
    pki: PKI | None = None,
    tcp: bool = False,
    tls: bool = True,
    args: tuple[str, ...] = (),
    wait: bool = True,
    base_mode: int = 0o700,
) -> Cellard:
    """Start a cellard in a fresh short base directory with its own cgroup root and netns prefix.

    ``tcp`` adds a loopback listener on a port the kernel picks, with mTLS from ``pki`` unless ``tls``
    is False. The caller owns the daemon: :func:`teardown` it, also when the test fails."""
    base = new_base(base_mode)
    token = f"cellar-test-{secrets.token_hex(4)}"
    cfg = base_config(base, token)
    if tcp:
        cfg = merge(cfg, {"server": {"tcp_listen": "127.0.0.1:0"}})
        if tls:
            assert pki is not None, "mTLS needs the pki fixture"
            cert, key = pki.cert("cellard-test")
            cfg = merge(cfg, {"tls": {"ca": str(pki.ca), "cert": str(cert), "key": str(key)},
                              "auth": {"identities": TLS_IDENTITIES}})
    cfg = merge(cfg, config or {})
    config_path = base / "cellard.toml"
    config_path.write_text(toml_dumps(cfg))
    log_path = base / "cellard.log"
    daemon = Cellard(_popen(config_path, log_path, args), base, config_path, log_path, token, cfg, pki=pki)
    if wait:
        try:
            daemon.wait_serving()
        except BaseException:
            teardown(daemon)
            raise
    return daemon


def restart(daemon: Cellard) -> Cellard:
    """Start a new cellard on ``daemon``'s own config file (same socket, dirs and cgroup root) after
    the old process died; the handle is updated in place, so its teardown covers the new process."""
    if daemon.proc.poll() is None:
        raise AssertionError("restart: the old cellard is still running")
    daemon.proc = _popen(daemon.config_path, daemon.log_path)
    daemon.returncode = None
    daemon.wait_serving()
    return daemon


def teardown(daemon: Cellard) -> None:
    """Stop the daemon, kill and remove what its runtime made, remove its directory."""
    try:
        daemon.stop()
    finally:
        try:
            destroy_runtime(daemon.runtime_config())
        finally:
            shutil.rmtree(daemon.base, ignore_errors=True)
