"""How ``cellar`` reaches cellard, and the one way it reports failures.

``--addr`` is a Unix socket path (``/run/cellar/cellar.sock``, ``unix:PATH``) or ``host:port``; TCP
always uses mutual TLS (``--ca/--cert/--key``) unless the development flag ``--insecure-tcp-dev``.
Settings come from flags, then ``CELLAR_*`` environment variables, then
``~/.config/cellar/config.toml`` (``$CELLAR_CONFIG``), then defaults.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

import grpc

from agent.config import ConfigError

DEFAULT_ADDR = "/run/cellar/cellar.sock"
CONFIG_KEYS = ("addr", "ca", "cert", "key", "server_name", "output", "timeout")


def config_path() -> str:
    return os.environ.get("CELLAR_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "cellar", "config.toml")


def load_client_config(path: str | None = None) -> dict[str, Any]:
    """The config file as click's default_map (missing file = {}); paths are ``~``-expanded."""
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(CONFIG_KEYS)})")
        if key == "timeout" and not isinstance(value, int | float):
            raise ConfigError(f"{path}: timeout: expected a number, got {value!r}")
        if key != "timeout" and not isinstance(value, str):
            raise ConfigError(f"{path}: {key}: expected a string, got {value!r}")
        if key in ("ca", "cert", "key"):
            data[key] = os.path.expanduser(value)
    return data


@dataclass
class Target:
    """Where and how to connect; built once per invocation from the global options."""

    addr: str = DEFAULT_ADDR
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    timeout: float = 10.0
    output: str = "table"
    insecure_tcp_dev: bool = False

    @property
    def is_unix(self) -> bool:
        return self.addr.startswith("unix:") or "/" in self.addr or ":" not in self.addr

    @property
    def grpc_target(self) -> str:
        if self.addr.startswith("unix:"):
            return self.addr
        return ("unix:" + os.path.abspath(self.addr)) if self.is_unix else self.addr

    def channel(self) -> grpc.Channel:
        if self.is_unix:
            return grpc.insecure_channel(self.grpc_target)
        if self.insecure_tcp_dev:
            return grpc.insecure_channel(self.addr)
        missing = [n for n in ("ca", "cert", "key") if not getattr(self, n)]
        if missing:
            raise ConfigError(f"--{missing[0]}: TCP address {self.addr} needs --ca, --cert and --key (mutual TLS)")
        assert self.ca and self.cert and self.key
        from agent.auth import tls  # cryptography: loaded only for TCP

        creds = tls.client_credentials(self.ca, self.cert, self.key, prefix="--")
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(self.addr, creds, options=options)


def format_rpc_error(exc: grpc.RpcError, target: Target | None = None) -> str:
    """``cellar: <STATUS_CODE>: <message>`` on one line. When cellard cannot be reached at all
    (``target`` given), the message says what to do instead of gRPC's "failed to connect to all
    addresses; last error: ..."."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if target is not None and code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (details or ""):
        return f"cellar: {name}: {unreachable(target, details or '')}"
    return f"cellar: {name}: {' '.join((details or '').split())}"


_REASONS = (
    ("No such file or directory", "no such socket"),
    ("Connection refused", "connection refused"),
    ("Permission denied", "permission denied: run as root or as a member of the socket's group"),
    ("Deadline Exceeded", "timed out"),
    ("handshake", "TLS handshake failed"),
)


def unreachable(target: Target, details: str) -> str:
    """What to do when cellard does not answer at ``target``: start it, or point --addr elsewhere;
    over TCP also check the TLS flags."""
    reason = next((said for raw, said in _REASONS if raw.lower() in details.lower()), "")
    where = target.grpc_target.removeprefix("unix:") if target.is_unix else target.addr
    where += f" ({reason})" if reason else ""
    if target.is_unix:
        return f"cannot reach cellard at {where}: is it running? start it with `cellard`, or set --addr / CELLAR_ADDR"
    return (f"cannot reach cellard at {where}: is it running and listening there? set --addr / CELLAR_ADDR; "
            "TCP is mutual TLS: check --ca, --cert, --key and --server-name (CELLAR_CA, CELLAR_CERT, CELLAR_KEY, "
            "CELLAR_SERVER_NAME)")
