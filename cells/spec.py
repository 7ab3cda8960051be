"""What a caller asks for: cells, their limits and isolation, and executables.

Every name that reaches the filesystem (cgroup directories, netns names, log directories) is
validated here first, so the rest of the runtime can treat names as safe path segments.
Values are plain ints in kernel units (bytes, microseconds); ``None`` means "not set, inherit".
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field

from cells import capabilities
from cells.errors import InvalidArgument
from observe.names import EXE_PREFIX, MAX_CELL_DEPTH, MAX_CELL_NAME, is_dns_label, is_segment_name

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

MAX_ARGV = 4096
MAX_ARG_BYTES = 128 * 1024
MAX_ENV = 1024
MAX_DESCRIPTION = 1024
U64_MAX = 2**64 - 1

#: Leaf cgroup of an executable inside its cell (the rule: :mod:`observe.names`).
EXECUTABLE_CGROUP_PREFIX = EXE_PREFIX
#: Leaf cgroup of the namespace holder (pid 1) of a process-isolated cell; '_' is not DNS either.
HOLDER_CGROUP = "_init"


def validate_cell_name(name: str, field_name: str = "cell.name") -> str:
    """A '/'-separated path of DNS labels, at most MAX_CELL_DEPTH deep."""
    if not name:
        raise InvalidArgument(field_name, "must not be empty")
    if len(name) > MAX_CELL_NAME:
        raise InvalidArgument(field_name, f"must be at most {MAX_CELL_NAME} characters")
    segments = name.split("/")
    if len(segments) > MAX_CELL_DEPTH:
        raise InvalidArgument(field_name, f"must be at most {MAX_CELL_DEPTH} segments deep")
    for segment in segments:
        if not is_dns_label(segment):
            raise InvalidArgument(
                field_name,
                f"segment {segment!r} must be a DNS label: 1-63 of [a-z0-9-], starting and ending alphanumeric",
            )
    return name


def validate_executable_name(name: str, field_name: str = "executable.name") -> str:
    if not name:
        raise InvalidArgument(field_name, "must not be empty")
    if not is_segment_name(name):
        raise InvalidArgument(field_name, "must be 1-63 of [A-Za-z0-9_.-], starting alphanumeric")
    return name


def cpu_shares_to_weight(shares: int) -> int:
    """The seed's v1 ``cpu_shares`` as a v2 ``cpu.weight``.

    runc's classic linear map, ``1 + ((shares - 2) * 9999) / 262142``, which sends the v1 range
    [2, 262144] onto the v2 range [1, 10000]. (The v1 default 1024 becomes 39, not 100: that is the
    price of a linear, invertible map, and it is what runc did for years.) 0 means unset.
    """
    if shares < 2 or shares > 262144:
        raise InvalidArgument("cell.cpu_shares", "must be 0 (unset) or in [2, 262144]")
    return 1 + ((shares - 2) * 9999) // 262142


def weight_to_cpu_shares(weight: int) -> int:
    """Inverse of :func:`cpu_shares_to_weight`, used to write v1 ``cpu.shares`` on hybrid hosts."""
    return 2 + ((weight - 1) * 262142) // 9999


@dataclass(frozen=True)
class CellLimits:
    cpu_weight: int | None = None  # 1..10000 (v2 cpu.weight)
    cpu_max_quota_us: int | None = None  # with cpu_max_period_us -> cpu.max "quota period"
    cpu_max_period_us: int | None = None  # 1000..1000000, default 100000
    cpuset_cpus: str | None = None  # "0-1,3"
    cpuset_mems: str | None = None
    memory_min: int | None = None  # bytes
    memory_low: int | None = None
    memory_high: int | None = None
    memory_max: int | None = None
    swap_max: int | None = None
    pids_max: int | None = None

    def validate(self) -> CellLimits:
        if self.cpu_weight is not None and not 1 <= self.cpu_weight <= 10000:
            raise InvalidArgument("cell.cpu_weight", "must be in [1, 10000]")
        if self.cpu_max_period_us is not None and not 1000 <= self.cpu_max_period_us <= 1_000_000:
            raise InvalidArgument("cell.cpu_max_period_us", "must be in [1000, 1000000]")
        if self.cpu_max_quota_us is not None and not 1000 <= self.cpu_max_quota_us <= 2**53:
            raise InvalidArgument("cell.cpu_max_quota_us", "must be >= 1000")
        if self.cpu_max_period_us is not None and self.cpu_max_quota_us is None:
            raise InvalidArgument("cell.cpu_max_period_us", "needs cpu_max_quota_us")
        for name in ("cpuset_cpus", "cpuset_mems"):
            value = getattr(self, name)
            if value is not None and (len(value) > 256 or not _CPU_LIST.match(value)):
                raise InvalidArgument(f"cell.{name}", "must be a list like '0-3,5'")
        for name in ("memory_min", "memory_low", "memory_high", "memory_max", "swap_max"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 2**62:
                raise InvalidArgument(f"cell.{name}", "must be in [0, 2^62] bytes")
        if self.pids_max is not None and not 1 <= self.pids_max <= 4_194_304:
            raise InvalidArgument("cell.pids_max", "must be in [1, 4194304]")
        return self


@dataclass(frozen=True)
class Veth:
    """A veth pair from the host into the cell's netns; addresses in CIDR form, either may be empty."""

    host_ifname: str
    cell_ifname: str = "eth0"
    host_address: str = ""
    cell_address: str = ""

    def validate(self) -> Veth:
        for name in ("host_ifname", "cell_ifname"):
            if not _IFNAME.match(getattr(self, name)):
                raise InvalidArgument(f"cell.veth.{name}", "must be 1-15 of [A-Za-z0-9_.-]")
        for name in ("host_address", "cell_address"):
            value = getattr(self, name)
            if value:
                try:
                    ipaddress.ip_interface(value)
                except ValueError:
                    raise InvalidArgument(f"cell.veth.{name}", "must be an address in CIDR form") from None
        return self


#: Roles a cell may be granted on the main socket (``CellSpec.grant_role``); same names as agent's.
GRANTABLE_ROLES = ("observer", "operator", "admin")
MAX_MOUNTS = 32
_MOUNT_PATH_MAX = 1024


@dataclass(frozen=True)
class Mount:
    """A host directory or file bind-mounted into a process-isolated cell (``--mount SRC:DST[:ro]``).

    Both paths are absolute and normalized (no ``..`` segments, no NUL); whether SRC may be mounted
    (exists, lies outside cellar's own trees, and the caller's role) is decided by the agent and
    the runtime, not here.
    """

    source: str
    target: str
    read_only: bool = False

    def validate(self, index: int) -> Mount:
        for name in ("source", "target"):
            value = getattr(self, name)
            where = f"cell.mounts[{index}].{name}"
            if not value.startswith("/") or "\0" in value or len(value) > _MOUNT_PATH_MAX:
                raise InvalidArgument(where, f"must be an absolute path of at most {_MOUNT_PATH_MAX} bytes")
            if any(seg in (".", "..") for seg in value.split("/")):
                raise InvalidArgument(where, "must not contain '.' or '..' segments")
        if self.target == "/":
            raise InvalidArgument(f"cell.mounts[{index}].target", "must not be /")
        return self


@dataclass(frozen=True)
class CellSpec:
    name: str
    limits: CellLimits = field(default_factory=CellLimits)
    isolate_process: bool = False  # new pid, mount, uts, ipc namespaces; /proc remounted; hostname
    isolate_network: bool = False  # a named netns with lo up
    veth: Veth | None = None  # needs isolate_network
    #: no containment at all: full capabilities, no seccomp filter, the host's mount view (admin only)
    privileged: bool = False
    #: capabilities added to / dropped from the default set for every executable of the cell
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    #: role its workloads get on the main socket ("" = refused, the default; admin only)
    grant_role: str = ""
    #: bind mounts (process-isolated cells only)
    mounts: tuple[Mount, ...] = ()
    #: a directory tree to pivot_root into instead of the host root (process-isolated cells only)
    rootfs: str = ""
    #: keep the cell's data directory (``/data`` inside) when the cell is freed
    keep_data: bool = False

    def validate(self) -> CellSpec:
        validate_cell_name(self.name)
        self.limits.validate()
        if self.veth is not None:
            if not self.isolate_network:
                raise InvalidArgument("cell.veth", "needs isolate_network")
            self.veth.validate()
        object.__setattr__(self, "cap_add", capabilities.validate_names(self.cap_add, "cell.cap_add"))
        object.__setattr__(self, "cap_drop", capabilities.validate_names(self.cap_drop, "cell.cap_drop"))
        if self.grant_role and self.grant_role not in GRANTABLE_ROLES:
            raise InvalidArgument("cell.grant_role", f"must be one of {', '.join(GRANTABLE_ROLES)} or empty")
        if len(self.mounts) > MAX_MOUNTS:
            raise InvalidArgument("cell.mounts", f"at most {MAX_MOUNTS}")
        for i, mount in enumerate(self.mounts):
            mount.validate(i)
        if (self.mounts or self.rootfs) and not self.isolate_process:
            raise InvalidArgument("cell.mounts" if self.mounts else "cell.rootfs", "needs isolate_process")
        if self.rootfs:
            Mount(self.rootfs, "/rootfs").validate(0)
        return self

    @property
    def hostname(self) -> str:
        """The hostname of a process-isolated cell: its last path segment (a DNS label)."""
        return self.name.rsplit("/", 1)[-1]


RESTART_MODES = ("never", "on-failure", "always")
#: Bounds of a restart policy's values: a day of delay or window, a week of healthy run, 10000 starts.
MAX_RESTART_DELAY_S = 86_400.0
MAX_RESET_AFTER_S = 7 * 86_400.0
MAX_LIMIT_BURST = 10_000


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor starts an ended executable again (a new run of the same name and spec).

    ``mode``: ``never`` (the default, the seed's behaviour), ``on-failure`` (a nonzero exit code, a
    signal, an OOM kill, or an end whose status is unknown), ``always`` (any end but a Stop). The
    delays are the kubelet's CrashLoopBackOff: ``delay_s``, doubling after each restart up to
    ``max_delay_s``; a run that lasted ``reset_after_s`` starts the doubling over. The start limit is
    systemd's StartLimitBurst/StartLimitIntervalSec: more than ``limit_burst`` starts within
    ``limit_interval_s`` and the executable is ``failed`` (``limit_interval_s`` 0: no limit).
    Arithmetic and scheduling: :mod:`cells.restart`.
    """

    mode: str = "never"
    delay_s: float = 10.0
    max_delay_s: float = 300.0
    reset_after_s: float = 600.0
    limit_burst: int = 5
    limit_interval_s: float = 10.0

    def validate(self, where: str = "executable.restart") -> RestartPolicy:
        if not isinstance(self.mode, str) or self.mode not in RESTART_MODES:
            raise InvalidArgument(f"{where}.mode", "must be one of never, on-failure or always")
        for name, top in (("delay_s", MAX_RESTART_DELAY_S), ("max_delay_s", MAX_RESTART_DELAY_S),
                          ("reset_after_s", MAX_RESET_AFTER_S), ("limit_interval_s", MAX_RESTART_DELAY_S)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"{where}.{name}", "must be a number of seconds")
            if not (math.isfinite(value) and 0 <= value <= top):
                raise InvalidArgument(f"{where}.{name}", f"must be a number of seconds in [0, {top:g}]")
            object.__setattr__(self, name, float(value))
        if self.max_delay_s < self.delay_s:
            raise InvalidArgument(f"{where}.max_delay_s", "must be >= delay_s")
        if isinstance(self.limit_burst, bool) or not isinstance(self.limit_burst, int):
            raise InvalidArgument(f"{where}.limit_burst", "must be an integer")
        if not 1 <= self.limit_burst <= MAX_LIMIT_BURST:
            raise InvalidArgument(f"{where}.limit_burst", f"must be in [1, {MAX_LIMIT_BURST}]")
        return self


HEALTH_KINDS = ("", "exec", "tcp", "http", "grpc")
#: Bounds of a health check (:mod:`cells.health`). The minimum interval bounds what a probe flood
#: costs the supervisor: one probe per executable per second at most (and MAX_CONCURRENT_PROBES at once).
MIN_HEALTH_INTERVAL_S = 1.0
MAX_HEALTH_INTERVAL_S = 86_400.0
MIN_HEALTH_TIMEOUT_S = 0.1
MAX_HEALTH_TIMEOUT_S = 3600.0
MAX_HEALTH_RETRIES = 100
MAX_HEALTH_PATH = 1024
MAX_HEALTH_SERVICE = 256


@dataclass(frozen=True)
class HealthCheck:
    """How the supervisor probes whether a running executable is healthy (Docker's HEALTHCHECK).

    ``kind``: ``""`` (none, the default), ``exec`` (``command``, an argv run like an executable of
    the cell: same cgroup, namespaces and containment; exit 0 is healthy), ``tcp`` (a connect to
    127.0.0.1:``port``, in the cell's netns when it has one), ``http`` (GET ``path``, 2xx/3xx is
    healthy) or ``grpc`` (``grpc.health.v1.Health/Check`` of ``service``, SERVING is healthy). Every
    ``interval_s`` a probe runs, cut at ``timeout_s``; ``retries`` consecutive failures make it
    unhealthy; failures within ``start_period_s`` of the start do not count. Docker's defaults.
    """

    kind: str = ""
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = "/"
    service: str = ""
    interval_s: float = 30.0
    timeout_s: float = 30.0
    retries: int = 3
    start_period_s: float = 0.0

    def validate(self, where: str = "executable.health") -> HealthCheck:
        if not isinstance(self.kind, str) or self.kind not in HEALTH_KINDS:
            raise InvalidArgument(f"{where}.kind", "must be one of exec, tcp, http, grpc or empty (none)")
        for name, low, top in (("interval_s", MIN_HEALTH_INTERVAL_S, MAX_HEALTH_INTERVAL_S),
                               ("timeout_s", MIN_HEALTH_TIMEOUT_S, MAX_HEALTH_TIMEOUT_S),
                               ("start_period_s", 0.0, MAX_HEALTH_INTERVAL_S)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"{where}.{name}", "must be a number of seconds")
            if not (math.isfinite(value) and low <= value <= top):
                raise InvalidArgument(f"{where}.{name}", f"must be a number of seconds in [{low:g}, {top:g}]")
            object.__setattr__(self, name, float(value))
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise InvalidArgument(f"{where}.retries", "must be an integer")
        if not 1 <= self.retries <= MAX_HEALTH_RETRIES:
            raise InvalidArgument(f"{where}.retries", f"must be in [1, {MAX_HEALTH_RETRIES}]")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidArgument(f"{where}.port", "must be an integer")
        if not isinstance(self.command, tuple) or not all(isinstance(a, str) for a in self.command):
            raise InvalidArgument(f"{where}.command", "must be a list of strings")
        if not isinstance(self.path, str) or not isinstance(self.service, str):
            raise InvalidArgument(f"{where}.{'path' if not isinstance(self.path, str) else 'service'}",
                                  "must be a string")
        if self.kind == "exec":
            if not self.command or not self.command[0]:
                raise InvalidArgument(f"{where}.command", "an exec check needs a command (argv[0] not empty)")
            if len(self.command) > MAX_ARGV or sum(len(a.encode()) + 1 for a in self.command) > MAX_ARG_BYTES:
                raise InvalidArgument(f"{where}.command", f"at most {MAX_ARGV} arguments, {MAX_ARG_BYTES} bytes")
            if any("\0" in a for a in self.command):
                raise InvalidArgument(f"{where}.command", "must not contain NUL")
        elif self.command:
            raise InvalidArgument(f"{where}.command", "only an exec check has a command")
        if self.kind in ("tcp", "http", "grpc"):
            if not 1 <= self.port <= 65535:
                raise InvalidArgument(f"{where}.port", "must be in [1, 65535]")
        elif self.port:
            raise InvalidArgument(f"{where}.port", "only a tcp, http or grpc check has a port")
        if (not self.path.startswith("/") or len(self.path) > MAX_HEALTH_PATH
                or any(ord(c) < 0x21 or ord(c) == 0x7F for c in self.path)):
            raise InvalidArgument(f"{where}.path", f"must be an absolute URL path of at most {MAX_HEALTH_PATH} "
                                                   "characters, without spaces or control characters")
        if len(self.service) > MAX_HEALTH_SERVICE or any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.service):
            raise InvalidArgument(f"{where}.service", f"at most {MAX_HEALTH_SERVICE} characters, no control characters")
        return self


@dataclass(frozen=True)
class ExecutableSpec:
    """One program to run in a cell: ``argv`` exec'd directly, or ``command`` through ``sh -c``."""

    cell_name: str
    name: str
    argv: tuple[str, ...] = ()
    command: str = ""
    description: str = ""
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    uid: int | None = None
    gid: int | None = None
    #: full capabilities, no seccomp filter, no_new_privs unset (admin only)
    privileged: bool = False
    #: applied after the cell's own cap_add / cap_drop
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    #: what happens when a run ends (:class:`RestartPolicy`; default: nothing)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: whether it is healthy (:class:`HealthCheck`; default: not checked)
    health: HealthCheck = field(default_factory=HealthCheck)
    #: its stdin is a pipe the supervisor holds, written by ``cellar attach`` (cells.exec); else /dev/null
    stdin: bool = False
    #: with ``stdin``: a pseudo-terminal the supervisor holds the master of (cells.launch); output is stdout
    tty: bool = False

    def validate(self) -> ExecutableSpec:
        validate_cell_name(self.cell_name, "executable.cell_name")
        validate_executable_name(self.name)
        if self.tty and not self.stdin:
            raise InvalidArgument("executable.tty", "a terminal needs stdin (cellar start -i -t)")
        if bool(self.argv) == bool(self.command):
            raise InvalidArgument("executable.command", "exactly one of command or argv must be set")
        if len(self.argv) > MAX_ARGV:
            raise InvalidArgument("executable.argv", f"at most {MAX_ARGV} arguments")
        if len(self.env) > MAX_ENV:
            raise InvalidArgument("executable.env", f"at most {MAX_ENV} variables")
        if len(self.description) > MAX_DESCRIPTION:
            raise InvalidArgument("executable.description", f"at most {MAX_DESCRIPTION} characters")
        total = len(self.command.encode()) + sum(len(a.encode()) + 1 for a in self.argv)
        total += sum(len(k.encode()) + len(v.encode()) + 2 for k, v in self.env)
        if total > MAX_ARG_BYTES:
            raise InvalidArgument("executable.argv", f"argv, command and env together at most {MAX_ARG_BYTES} bytes")
        for arg in (*self.argv, self.command, self.cwd):
            if "\0" in arg:
                raise InvalidArgument("executable.argv", "must not contain NUL")
        if self.argv and not self.argv[0]:
            raise InvalidArgument("executable.argv", "argv[0] must not be empty")
        for key, value in self.env:
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise InvalidArgument("executable.env", f"bad variable name {key!r}")
        if self.cwd and not self.cwd.startswith("/"):
            raise InvalidArgument("executable.cwd", "must be an absolute path")
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**32 - 1:
                raise InvalidArgument(f"executable.{name}", "must be in [0, 2^32-2]")
        object.__setattr__(self, "cap_add", capabilities.validate_names(self.cap_add, "executable.cap_add"))
        object.__setattr__(self, "cap_drop", capabilities.validate_names(self.cap_drop, "executable.cap_drop"))
        if not isinstance(self.restart, RestartPolicy):
            raise InvalidArgument("executable.restart", "must be a restart policy")
        self.restart.validate()
        if not isinstance(self.health, HealthCheck):
            raise InvalidArgument("executable.health", "must be a health check")
        self.health.validate()
        return self

    @property
    def program(self) -> tuple[str, ...]:
        """The argv actually exec'd."""
        return self.argv if self.argv else ("/bin/sh", "-c", self.command)
