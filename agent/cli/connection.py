"""How ``cellar`` reaches cellard, and the one way it reports failures.

``--addr`` is a Unix socket path (``/run/cellar/cellar.sock``, ``unix:PATH``) or ``host:port``; TCP
always uses mutual TLS (``--ca/--cert/--key``) unless the development flag ``--insecure-tcp-dev``.
Settings come from flags, then ``CELLAR_*`` environment variables, then
``~/.config/cellar/config.toml`` (``$CELLAR_CONFIG``), then defaults.

Named contexts, as kubectl's: ``[contexts.NAME]`` tables in the config file hold ``addr``, the
certificates and ``saver`` (the worker saver of a fleet); ``current-context`` (set by
``cellar config use-context``) or ``--context`` picks one, its keys over the top-level ones.
``--node HOSTNAME`` asks the saver for that node's advertised API address and connects there.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any

import grpc

from agent.config import ConfigError

DEFAULT_ADDR = "/run/cellar/cellar.sock"
CONFIG_KEYS = ("addr", "ca", "cert", "key", "server_name", "output", "timeout", "saver")
CURRENT_CONTEXT = "current-context"
SAVER_REPLY_MAX = 256 << 20
CONTEXTS = "contexts"


def config_path() -> str:
    return os.environ.get("CELLAR_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "cellar", "config.toml")


def _check_keys(data: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(data)
    for key, value in data.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{where}{key}: unknown key (known: {', '.join(CONFIG_KEYS)})")
        if key == "timeout" and not isinstance(value, int | float):
            raise ConfigError(f"{where}timeout: expected a number, got {value!r}")
        if key != "timeout" and not isinstance(value, str):
            raise ConfigError(f"{where}{key}: expected a string, got {value!r}")
        if key in ("ca", "cert", "key"):
            out[key] = os.path.expanduser(value)
    return out


def read_config_file(path: str | None = None) -> dict[str, Any]:
    """The config file as parsed TOML (missing file = {})."""
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def contexts_of(data: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    contexts = data.get(CONTEXTS, {})
    if not isinstance(contexts, dict) or not all(isinstance(v, dict) for v in contexts.values()):
        raise ConfigError(f"{path}: {CONTEXTS}: expected [{CONTEXTS}.NAME] tables")
    return contexts


def load_client_config(path: str | None = None, context: str | None = None) -> dict[str, Any]:
    """The config file as click's default_map (missing file = {}); paths are ``~``-expanded.
    ``context`` (else ``current-context``) names a ``[contexts.NAME]`` table laid over the top level."""
    path = path or config_path()
    data = read_config_file(path)
    current = data.pop(CURRENT_CONTEXT, None)
    contexts = contexts_of(data, path)
    data.pop(CONTEXTS, None)
    out = _check_keys(data, f"{path}: ")
    name = context or current
    if name:
        if not isinstance(name, str) or name not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            raise ConfigError(f"context {name!r} is not in {path} (contexts: {known})")
        out.update(_check_keys(contexts[name], f"{path}: {CONTEXTS}.{name}."))
    return out


def use_context(ctx: Any, _param: Any, value: str | None) -> str | None:
    """``--context``: lay that context over the config defaults before the other options read them."""
    if value:
        ctx.default_map = load_client_config(context=value)
    return value


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
    context: str | None = None
    node: str | None = None  # a hostname known to the saver: connect to its advertised API address
    saver: str | None = None  # the fleet's worker saver (host:port); fleet commands read it

    def __post_init__(self) -> None:
        self._node_resolved = False

    @property
    def is_unix(self) -> bool:
        return self.addr.startswith("unix:") or "/" in self.addr or ":" not in self.addr

    @property
    def grpc_target(self) -> str:
        if self.addr.startswith("unix:"):
            return self.addr
        return ("unix:" + os.path.abspath(self.addr)) if self.is_unix else self.addr

    def _tcp_channel(self, addr: str, server_name: str | None,
                     options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        options = list(options or [])
        if self.insecure_tcp_dev:
            return grpc.insecure_channel(addr, options=options)
        missing = [n for n in ("ca", "cert", "key") if not getattr(self, n)]
        if missing:
            raise ConfigError(f"--{missing[0]}: TCP address {addr} needs --ca, --cert and --key (mutual TLS)")
        assert self.ca and self.cert and self.key
        from agent.auth import tls  # cryptography: loaded only for TCP

        creds = tls.client_credentials(self.ca, self.cert, self.key, prefix="--")
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        return grpc.secure_channel(addr, creds, options=options)

    def saver_channel(self) -> grpc.Channel:
        """The fleet's saver (``--saver``); without one, ``--addr`` (a cellard with [saver] enabled)."""
        if not self.saver:
            return self.channel()
        big = [("grpc.max_receive_message_length", SAVER_REPLY_MAX)]  # a fleet's cells: more than 4 MiB
        if self.saver.startswith("unix:") or "/" in self.saver:
            return grpc.insecure_channel("unix:" + os.path.abspath(self.saver.removeprefix("unix:")), options=big)
        return self._tcp_channel(self.saver, None, big)

    def resolve_node(self) -> None:
        """``--node HOSTNAME`` -> ``addr``: the node's API address from the saver's latest reports."""
        if not self.node or self._node_resolved:
            return
        from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc

        if not self.saver:
            raise ConfigError("--node: needs --saver (or saver in the config context) to look the node up")
        with self.saver_channel() as channel:
            listed = inventory_pb2_grpc.MachinesStub(channel).List(inventory_pb2.ListMachinesRequest(),
                                                                    timeout=self.timeout).machines
        found = [m for m in listed if self.node in (m.hostname, m.uuid)]
        if not found:
            raise ConfigError(f"--node: no machine named {self.node!r} reports to the saver {self.saver}")
        if len({m.api_address for m in found}) > 1:
            uuids = ", ".join(m.uuid for m in found)
            raise ConfigError(f"--node: {len(found)} machines are named {self.node!r} ({uuids}): give a uuid instead")
        if not found[0].api_address:
            raise ConfigError(f"--node: {self.node!r} advertises no API address (its server.tcp_listen or "
                              "reporter.advertise)")
        self.addr, self._node_resolved = found[0].api_address, True

    def channel(self) -> grpc.Channel:
        self.resolve_node()
        if self.is_unix:
            return grpc.insecure_channel(self.grpc_target)
        return self._tcp_channel(self.addr, self.server_name)


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
