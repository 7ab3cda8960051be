"""cellard's configuration: TOML file (``/etc/cellar/cellard.toml``) overridden by flags.

Every setting has a default that works on a fresh host, so a missing file means "all defaults".
The schema is a set of dataclasses; the loader checks each key against its field's annotation, so
adding a setting is adding a field (with a default) to a section below. Unknown keys are errors: a
misspelt key silently falling back to its default is how a host ends up insecure.
Every failure is a :class:`ConfigError` whose message names the key (``server.tcp_listen: ...``).
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import pwd
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cells.config import RuntimeConfig

DEFAULT_CONFIG_PATH = "/etc/cellar/cellard.toml"
ROLES = ("admin", "operator", "observer")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad setting; ``str()`` is the one line shown to the operator (``key: rule, got value``)."""


def default_socket_group() -> str:
    """``cellar`` if that group exists, else root's group: the socket stays root-only by default."""
    try:
        grp.getgrnam("cellar")
        return "cellar"
    except KeyError:
        return grp.getgrgid(0).gr_name


def parse_host_port(value: str, key: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; the port must be 0-65535 (0 = pick a free one)."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host, int(port)


@dataclass
class ServerConfig:
    socket: str = "/run/cellar/cellar.sock"
    socket_mode: int = 0o660
    socket_group: str = field(default_factory=default_socket_group)
    # Identify local callers by SO_PEERCRED through agent.auth.unixpeer; false = file-mode gate only.
    unix_peer_proxy: bool = True
    tcp_listen: str = ""
    insecure_tcp_dev: bool = False
    drain_timeout_s: float = 10.0
    # Bounds under hostile load (agent.auth.tlsfront, agent.auth.unixpeer): a TCP connection must finish its TLS
    # handshake within this many seconds; at most max_tcp_connections on the TCP listener and
    # max_tcp_connections_per_address from one client address (IPv6: one /64), a newcomer displacing
    # the oldest connection that has not finished its handshake; on each Unix socket at most
    # max_connections_per_peer per uid (per cell for workloads) and max_unix_connections in all, root
    # outside cells exempt on the main socket.
    tls_handshake_timeout_s: float = 5.0
    max_tcp_connections: int = 2048
    max_tcp_connections_per_address: int = 256
    max_connections_per_peer: int = 128
    max_unix_connections: int = 1024
    # Concurrent follows/watches (log follows, daemon-log watches) per identity (agent.core.streamcaps).
    max_streams_per_identity: int = 256


@dataclass
class TLSConfig:
    ca: str = ""
    cert: str = ""
    key: str = ""


#: Cellar's tree for host paths given to cells (``--mount SRC:DST``, ``--rootfs DIR``), below state_dir:
#: a source or rootfs strictly below it is an operator's to use; any other host path needs admin.
VOLUMES_SUBDIR = "volumes"


@dataclass
class PathsConfig:
    state_dir: str = "/var/lib/cellar"
    run_dir: str = "/run/cellar"
    log_dir: str = "/var/lib/cellar/logs"

    @property
    def volumes_dir(self) -> str:
        """``<state_dir>/volumes`` (:data:`VOLUMES_SUBDIR`; agent.auth.privilege)."""
        return os.path.join(self.state_dir, VOLUMES_SUBDIR)


@dataclass
class CellsConfig:
    # Name of cellar's own cgroup sub-tree (in every hierarchy) and prefix of its named netns.
    cgroup_root: str = "cellar"
    netns_prefix: str = "cellar-"
    # Seconds between SIGTERM and SIGKILL when Stop/Free give no grace period of their own.
    stop_grace_s: float = 10.0
    max_cells: int = 10000
    # Log rotation per executable run: segments of this size, this many kept (kubelet's 10 MiB x 5).
    log_segment_bytes: int = 10 * 2**20
    log_max_segments: int = 5
    # Seconds cellard waits at start for the supervisor it spawned to answer (raise on slow hosts).
    supervisor_start_timeout_s: float = 10.0
    # Seconds Start waits for a new process to exec; past it the process is killed and Start fails
    # (RESOURCE_EXHAUSTED when the cell's CPU or memory limit starved it). The supervisor waits meanwhile.
    exec_timeout_s: float = 10.0
    # Who an executable runs as when its Start names no uid: "" = root (contained: see the README's
    # security model), a user name ("nobody"), "UID" or "UID:GID".
    default_user: str = ""


@dataclass
class LogConfig:
    level: str = "info"
    # auto = JSON when stderr is not a TTY, console otherwise.
    format: str = "auto"


@dataclass
class AuthConfig:
    # Role of local callers admitted by the socket (root or a member of server.socket_group).
    unix_role: str = "admin"
    # Also accept the role a cert carries as URI SAN cellar://role/<role>/<name> when its identity is
    # not in [auth.identities]. Off by default: the explicit table is the allow-list (revocable).
    trust_cert_role: bool = False
    identities: dict[str, str] = field(default_factory=dict)


@dataclass
class FrontConfig:
    """``[front."<service full name>"]``: serve that fronted service from an upstream instead of the
    embedded backend (agent.forward). ``upstream`` is ``host:port`` or ``unix:/path``; TCP upstreams
    use TLS (``ca``, optional client ``cert``/``key``, ``server_name``) unless ``plaintext``."""

    upstream: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    plaintext: bool = False


@dataclass
class LocalConfig:
    """The node-local endpoint for workloads (agent.local.endpoint)."""

    # Unix socket (mode 0666) visible inside cells; "" = <paths.run_dir>/local.sock.
    socket: str = ""
    # Loopback TCP listener for clients that cannot use Unix sockets; "" disables it.
    tcp_listen: str = "127.0.0.1:7070"


@dataclass
class QueueConfig:
    """The durable queue.v1.Queue backend (agent.local.queue)."""

    # A received message not marked done is delivered again after this many seconds;
    # 0 = parigot's behaviour: redelivered on the very next Receive.
    visibility_timeout_s: float = 30.0
    # SQLite synchronous mode: "full" survives power loss, "normal" survives a cellard crash.
    synchronous: str = "full"


@dataclass
class JobsConfig:
    """The sky job agent (agent.local.jobs): bounds on what a caller may leave staged, since any local user
    may stage (StageInFiles makes a job record and a work directory before anything runs)."""

    # Jobs staged but not yet submitted, per scope (cell, user, host); more -> RESOURCE_EXHAUSTED.
    max_pending_per_scope: int = 64
    # Files and total bytes staged into one job's work directory.
    max_staged_files: int = 1024
    max_staged_bytes: int = 2**30
    # A job staged but never submitted is removed this long after it was created (checked whenever
    # its scope stages): abandoned jobs free the cap above.
    pending_ttl_s: float = 86400.0


@dataclass
class ModelsConfig:
    """The Scaleout model store (agent.scaleout.models) under ``<paths.state_dir>/models``."""

    # Size cap of the stored models; storing one more evicts the least recently used.
    max_bytes: int = 4 * 2**30


@dataclass
class MetricsConfig:
    # "host:port" of the Prometheus endpoint (GET /metrics, plain HTTP), e.g. "127.0.0.1:9469"; "" = off.
    listen: str = ""


@dataclass
class ReporterConfig:
    """``[reporter]``: send this node's pb.Machine to worker savers (agent.pb.reporter)."""

    # Worker savers ("host:port"); empty = the inventory is only served locally (cellar.v1.Inventory).
    savers: list[str] = field(default_factory=list)
    # Mutual TLS towards the savers; plain TCP only with insecure = true (development).
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    insecure: bool = False
    interval_s: float = 60.0  # a full report at least this often
    poll_s: float = 2.0  # listener/address change check
    backoff_max_s: float = 30.0  # retry delay cap while a saver is down (exponential, jittered)
    timeout_s: float = 10.0
    # The API address (HOST:PORT) reported for `cellar --node`; "" = server.tcp_listen, with this
    # host's name in place of a wildcard IP.
    advertise: str = ""
    # The hostname reported (fleet listings, `cellar --node`); "" = the kernel's (uname -n).
    hostname: str = ""
    # The machine uuid reported; "" = /etc/machine-id (set it when several cellards share a host).
    machine_id: str = ""


@dataclass
class SaverConfig:
    """``[saver]``: serve pb.WorkerSaver + cellar.v1.Machines in this cellard (alone: ``cellar-saver``)."""

    enabled: bool = False
    # "" = SQLite at <state_dir>/saver.sqlite; a path = SQLite there; postgresql://... = PostgreSQL.
    database: str = ""
    history: int = 100  # reports kept per machine
    max_machines: int = 100000


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    cells: CellsConfig = field(default_factory=CellsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    reporter: ReporterConfig = field(default_factory=ReporterConfig)
    saver: SaverConfig = field(default_factory=SaverConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    front: dict[str, FrontConfig] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)

    @property
    def tcp_enabled(self) -> bool:
        return bool(self.server.tcp_listen)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls.cert)


def _type_name(tp: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _, vtp = typing.get_args(tp)
        return {str(k): _coerce(v, vtp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(tp, value, f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (etp,) = typing.get_args(tp)
        return [_coerce(v, etp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"unsupported annotation for {key}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(data[f.name], dict):
                raise ConfigError(f"{prefix}{f.name}: expected a table, got {data[f.name]!r}")
            kwargs[f.name] = _build(tp, data[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], tp, f"{prefix}{f.name}")
    return cls(**kwargs)


def _validate_jobs(j: JobsConfig) -> None:
    for key, low, high in (("max_pending_per_scope", 1, 1_000_000), ("max_staged_files", 1, 1_000_000),
                           ("max_staged_bytes", 1, 2**50)):
        if not low <= getattr(j, key) <= high:
            raise ConfigError(f"jobs.{key}: expected {low}..{high}, got {getattr(j, key)!r}")
    if not 0 <= j.pending_ttl_s <= 86400 * 365:
        raise ConfigError(f"jobs.pending_ttl_s: expected 0-31536000 seconds, got {j.pending_ttl_s!r}")


def validate(cfg: Config) -> Config:
    """Rules beyond types; raises ConfigError naming the key."""
    s = cfg.server
    if not os.path.isabs(s.socket):
        raise ConfigError(f"server.socket: expected an absolute path, got {s.socket!r}")
    if len(s.socket.encode()) > 100:
        raise ConfigError(f"server.socket: path longer than 100 bytes, got {s.socket!r}")
    if not 0 <= s.socket_mode <= 0o777:
        raise ConfigError(f"server.socket_mode: expected a mode like 0o660, got {oct(s.socket_mode)}")
    try:
        grp.getgrnam(s.socket_group)
    except KeyError:
        raise ConfigError(f"server.socket_group: no such group, got {s.socket_group!r}") from None
    if s.tcp_listen:
        host, _ = parse_host_port(s.tcp_listen, "server.tcp_listen")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost" and not host.replace("-", "").replace(".", "").isalnum():
                raise ConfigError(f"server.tcp_listen: bad host, got {s.tcp_listen!r}") from None
    if s.drain_timeout_s < 0:
        raise ConfigError(f"server.drain_timeout_s: expected >= 0, got {s.drain_timeout_s!r}")
    if not 0 < s.tls_handshake_timeout_s <= 120:
        raise ConfigError(f"server.tls_handshake_timeout_s: expected > 0 and <= 120, got {s.tls_handshake_timeout_s!r}")
    for key in ("max_tcp_connections", "max_tcp_connections_per_address", "max_connections_per_peer",
                "max_unix_connections", "max_streams_per_identity"):
        if not 1 <= getattr(s, key) <= 1_000_000:
            raise ConfigError(f"server.{key}: expected 1..1000000, got {getattr(s, key)!r}")
    t = cfg.tls
    given = [n for n in ("ca", "cert", "key") if getattr(t, n)]
    if given and len(given) != 3:
        missing = next(n for n in ("ca", "cert", "key") if not getattr(t, n))
        raise ConfigError(f"tls.{missing}: mutual TLS needs ca, cert and key together, got only {', '.join(given)}")
    for name in ("state_dir", "run_dir", "log_dir"):
        value = getattr(cfg.paths, name)
        if not os.path.isabs(value):
            raise ConfigError(f"paths.{name}: expected an absolute path, got {value!r}")
    for name in ("cgroup_root", "netns_prefix"):
        value = getattr(cfg.cells, name)
        if not value or "/" in value or value in (".", "..") or "\0" in value or len(value) > 48:
            raise ConfigError(f"cells.{name}: expected 1-48 characters without '/', got {value!r}")
    c = cfg.cells
    if not 0 <= c.stop_grace_s <= 3600:
        raise ConfigError(f"cells.stop_grace_s: expected 0-3600 seconds, got {c.stop_grace_s!r}")
    if not 1 <= c.max_cells <= 1_000_000:
        raise ConfigError(f"cells.max_cells: expected 1-1000000, got {c.max_cells!r}")
    if not 4096 <= c.log_segment_bytes <= 2**34:
        raise ConfigError(f"cells.log_segment_bytes: expected 4096 bytes to 16 GiB, got {c.log_segment_bytes!r}")
    if not 1 <= c.log_max_segments <= 1000:
        raise ConfigError(f"cells.log_max_segments: expected 1-1000, got {c.log_max_segments!r}")
    if not 1 <= c.supervisor_start_timeout_s <= 3600:
        raise ConfigError(
            f"cells.supervisor_start_timeout_s: expected 1-3600 seconds, got {c.supervisor_start_timeout_s!r}")
    if not 0.1 <= c.exec_timeout_s <= 600:
        raise ConfigError(f"cells.exec_timeout_s: expected 0.1-600 seconds, got {c.exec_timeout_s!r}")
    default_user(c.default_user)
    if cfg.log.level not in LOG_LEVELS:
        raise ConfigError(f"log.level: expected one of {', '.join(LOG_LEVELS)}, got {cfg.log.level!r}")
    if cfg.log.format not in ("auto", "json", "console"):
        raise ConfigError(f"log.format: expected auto, json or console, got {cfg.log.format!r}")
    if cfg.auth.unix_role not in ROLES:
        raise ConfigError(f"auth.unix_role: expected one of {', '.join(ROLES)}, got {cfg.auth.unix_role!r}")
    for ident, role in cfg.auth.identities.items():
        if role not in ROLES:
            raise ConfigError(f"auth.identities.{ident}: expected one of {', '.join(ROLES)}, got {role!r}")
    validate_local(cfg)
    validate_reporter(cfg.reporter)
    validate_saver(cfg.saver)
    if cfg.metrics.listen:
        parse_host_port(cfg.metrics.listen, "metrics.listen")
    if not 2**20 <= cfg.models.max_bytes <= 2**50:
        raise ConfigError(f"models.max_bytes: expected 1 MiB to 1 PiB, got {cfg.models.max_bytes!r}")
    for service, front in cfg.front.items():
        validate_front(service, front)
        if service in ("pb.WorkerSaver", "cellar.v1.Machines") and not cfg.saver.enabled:  # else silently unused
            raise ConfigError(f'front."{service}": cellard does not serve {service} unless [saver] enabled = true')
    return cfg


def validate_reporter(r: ReporterConfig) -> None:
    if r.advertise:
        parse_host_port(r.advertise, "reporter.advertise")
    if len(r.hostname) > 253 or any(c <= " " or c == "\x7f" for c in r.hostname):
        raise ConfigError(f"reporter.hostname: at most 253 characters, no spaces or control characters, got {r.hostname!r}")
    if len(r.machine_id) > 128 or any(c <= " " or c == "\x7f" for c in r.machine_id):
        raise ConfigError(f"reporter.machine_id: at most 128 characters, no spaces or control characters, got {r.machine_id!r}")
    for i, saver in enumerate(r.savers):
        parse_host_port(saver, f"reporter.savers[{i}]")
    given = [n for n in ("ca", "cert", "key") if getattr(r, n)]
    if given and len(given) != 3:
        raise ConfigError(f"reporter.{given[0]}: mutual TLS needs ca, cert and key together")
    if r.savers and not given and not r.insecure:
        raise ConfigError("reporter.savers: needs reporter.ca, cert and key (or insecure = true for development)")
    for name, low, high in (("interval_s", 1, 86400), ("poll_s", 0.1, 3600), ("backoff_max_s", 0.1, 3600),
                            ("timeout_s", 0.1, 600)):
        value = getattr(r, name)
        if not low <= value <= high:
            raise ConfigError(f"reporter.{name}: expected {low}-{high} seconds, got {value!r}")


def validate_saver(s: SaverConfig) -> None:
    if not 1 <= s.history <= 100000:
        raise ConfigError(f"saver.history: expected 1-100000, got {s.history!r}")
    if not 1 <= s.max_machines <= 10_000_000:
        raise ConfigError(f"saver.max_machines: expected 1-10000000, got {s.max_machines!r}")


def validate_local(cfg: Config) -> None:
    """Rules of ``[local]`` and ``[queue]`` (the node-local endpoint and its queue backend)."""
    sock = cfg.local.socket
    if sock and (not os.path.isabs(sock) or "\0" in sock or len(sock.encode()) > 100):
        raise ConfigError(f"local.socket: expected an absolute path of at most 100 bytes, got {sock!r}")
    if cfg.local.tcp_listen:
        host, _ = parse_host_port(cfg.local.tcp_listen, "local.tcp_listen")
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ConfigError(f"local.tcp_listen: must be a loopback address, got {cfg.local.tcp_listen!r}")
        except ValueError:
            raise ConfigError(f"local.tcp_listen: expected a loopback IP:port, got {cfg.local.tcp_listen!r}") from None
    if not 0 <= cfg.queue.visibility_timeout_s <= 86400 * 7:
        raise ConfigError(f"queue.visibility_timeout_s: expected 0-604800 seconds, got {cfg.queue.visibility_timeout_s!r}")
    _validate_jobs(cfg.jobs)
    if cfg.queue.synchronous not in ("full", "normal"):
        raise ConfigError(f"queue.synchronous: expected full or normal, got {cfg.queue.synchronous!r}")


def validate_front(service: str, front: FrontConfig) -> None:
    """Rules of one ``[front."<service>"]`` table; which names may be fronted is agent.forward's call."""
    key = f'front."{service}"'
    up = front.upstream
    if not up:
        raise ConfigError(f"{key}.upstream: must be set (host:port or unix:/path)")
    if up.startswith("unix:"):
        path = up[len("unix:"):].removeprefix("//")
        if not os.path.isabs(path) or "\0" in path or len(path.encode()) > 107:
            raise ConfigError(f"{key}.upstream: expected unix:/absolute/path (at most 107 bytes), got {up!r}")
    else:
        parse_host_port(up, f"{key}.upstream")
        if not front.plaintext and not front.ca:
            raise ConfigError(f"{key}.ca: a TCP upstream needs TLS (ca, optional cert/key) or plaintext = true")
    if bool(front.cert) != bool(front.key):
        raise ConfigError(f"{key}.cert: a client certificate needs cert and key together")
    if front.plaintext and (front.ca or front.cert):
        raise ConfigError(f"{key}.plaintext: contradicts the TLS options ca/cert/key")


def parse(data: dict[str, Any]) -> Config:
    """Build and validate a Config from an already-parsed TOML document."""
    cfg: Config = _build(Config, data, "")
    return validate(cfg)


def load(path: str | None) -> Config:
    """Read ``path`` (default location when None; a missing default file means all defaults)."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: file not found") from None
        return validate(Config())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: bad TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse(data)


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{"section.key": value}`` (from flags) and re-validate; None values are skipped."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        setattr(getattr(cfg, section), key, value)
    return validate(cfg)


def local_endpoint_env(cfg: Config, tcp_address: str | None = None) -> dict[str, str]:
    """What announces the node-local endpoint to every executable: ``CELLAR_LOCAL_ENDPOINT=unix:<path>``
    and, when TCP is on, ``CELLAR_LOCAL_TCP=<host:port>`` (``tcp_address``: the bound one, for port 0)."""
    env = {"CELLAR_LOCAL_ENDPOINT": "unix:" + (cfg.local.socket or os.path.join(cfg.paths.run_dir, "local.sock"))}
    tcp = cfg.local.tcp_listen if tcp_address is None else tcp_address
    if tcp:
        env["CELLAR_LOCAL_TCP"] = tcp
    return env


def default_user(value: str) -> tuple[int | None, int | None]:
    """``[cells] default_user`` as (uid, gid): "" -> (None, None); a name -> its passwd entry."""
    if not value:
        return None, None
    uid_s, sep, gid_s = value.partition(":")
    try:
        if uid_s.isdigit() and (not sep or gid_s.isdigit()):
            uid, gid = int(uid_s), int(gid_s) if sep else int(uid_s)
        elif not sep:
            entry = pwd.getpwnam(value)
            uid, gid = entry.pw_uid, entry.pw_gid
        else:
            raise KeyError(value)
    except KeyError:
        raise ConfigError(f"cells.default_user: expected a user name, UID or UID:GID, got {value!r}") from None
    if not (0 <= uid < 2**32 - 1 and 0 <= gid < 2**32 - 1):
        raise ConfigError(f"cells.default_user: ids must be in [0, 2^32-2], got {value!r}")
    return uid, gid


def hidden_paths(cfg: Config) -> list[str]:
    """Beyond the run, state and log dirs and /etc/cellar, which the supervisor always hides from
    workloads: every private key file cellard is configured with (its own, its upstreams')."""
    sections: list[Any] = [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]
    sections += list(cfg.front.values())
    return sorted({s.key for s in sections if isinstance(getattr(s, "key", None), str) and s.key})


def runtime_config(cfg: Config, local_tcp: str | None = None) -> RuntimeConfig:
    """The supervisor's settings, taken from cellard's config (the supervisor has no file of its own)."""
    return RuntimeConfig(
        local_endpoint_env=local_endpoint_env(cfg, local_tcp),
        state_dir=cfg.paths.state_dir,
        log_dir=cfg.paths.log_dir,
        run_dir=cfg.paths.run_dir,
        cgroup_root_name=cfg.cells.cgroup_root,
        netns_prefix=cfg.cells.netns_prefix,
        default_grace_s=cfg.cells.stop_grace_s,
        max_cells=cfg.cells.max_cells,
        log_segment_bytes=cfg.cells.log_segment_bytes,
        log_max_segments=cfg.cells.log_max_segments,
        supervisor_start_timeout_s=cfg.cells.supervisor_start_timeout_s,
        exec_timeout_s=cfg.cells.exec_timeout_s,
        default_uid=default_user(cfg.cells.default_user)[0],
        default_gid=default_user(cfg.cells.default_user)[1],
        extra_hidden_paths=hidden_paths(cfg),
        main_socket=cfg.server.socket,
    )
