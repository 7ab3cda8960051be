"""The parts of a machine report beyond interfaces and ports: host facts, cells, usage.

Facts and cells are compared by the reporter to decide whether to send (a cell started, an
executable restarted); usage changes every second, so it is sampled only when a report goes out
(:func:`usage`) and never makes a report "changed" by itself.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import socket
from collections.abc import Iterable

from agent.config import Config
from agent.config import parse_host_port as _split
from agent.version import VERSION
from cells.state import CellInfo, ExecutableInfo
from proto.cellar.v1 import report_pb2
from proto.pb import workerServer_pb2 as pb

_OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def os_name() -> str:
    """os-release's PRETTY_NAME (as hostnamectl shows it), else the kernel's name."""
    for path in _OS_RELEASE:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key == "PRETTY_NAME":
                        return value.strip().strip('"')[:256]
        except OSError:
            continue
    return platform.system()


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def advertised_address(cfg: Config) -> str:
    """``[reporter] advertise``, else ``server.tcp_listen`` with a wildcard IP replaced by the hostname."""
    if cfg.reporter.advertise:
        return cfg.reporter.advertise
    if not cfg.server.tcp_listen:
        return ""
    host, port = _split(cfg.server.tcp_listen, "server.tcp_listen")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = socket.gethostname()
    except ValueError:
        pass
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def set_facts(machine: pb.Machine, *, cgroup_mode: str, api_address: str, hostname: str = "") -> None:
    """Fill the host facts of ``machine`` (cheap: a few small files)."""
    machine.hostname = (hostname or socket.gethostname())[:253]
    machine.os = os_name()
    machine.kernel = platform.release()[:256]
    machine.cellar_version = VERSION
    machine.cgroup_mode = cgroup_mode[:16]
    machine.api_address = api_address
    machine.cpus = os.cpu_count() or 0
    machine.memory_bytes = _meminfo().get("MemTotal", 0)


def _exit_text(exe: ExecutableInfo) -> str:
    return exe.exit.describe() if exe.exit is not None else ""


def cell_to_pb(cell: CellInfo) -> report_pb2.ReportCell:
    limits = cell.spec.get("limits") or {}
    quota, period = limits.get("cpu_max_quota_us"), limits.get("cpu_max_period_us") or 100_000
    return report_pb2.ReportCell(
        name=cell.name, state=str(cell.state),
        cpu_max_millicores=int(quota) * 1000 // int(period) if quota else 0,
        memory_max_bytes=int(limits.get("memory_max") or 0), pids_max=int(limits.get("pids_max") or 0),
        executables=[
            report_pb2.ReportExecutable(
                name=e.name, state=str(e.state), pid=e.host_pid if e.state == "running" else 0,
                restarts=e.restarts, health=e.health, exit=_exit_text(e), started_at_ns=e.started_at_ns,
            )
            for e in cell.executables
        ],
    )


def _host_cpu_us() -> int:
    """Busy CPU time since boot: /proc/stat's first line minus idle and iowait, in microseconds."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # guest is inside user
    return busy * 1_000_000 // (os.sysconf("SC_CLK_TCK") or 100)


def usage(cells: Iterable[CellInfo], at_ns: int) -> report_pb2.ReportUsage:
    """Host and per-cell usage now; ``cells`` listed with stats."""
    mem = _meminfo()
    return report_pb2.ReportUsage(
        at_ns=at_ns, cpu_usage_us=_host_cpu_us(),
        memory_used_bytes=max(0, mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)),
        cells=[
            report_pb2.ReportCellUsage(cell=c.name, cpu_usage_us=c.stats.cpu_usage_us,
                                       memory_bytes=c.stats.memory_current)
            for c in cells if c.stats is not None
        ],
    )
