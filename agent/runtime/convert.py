"""Proto messages <-> cells domain objects, in both directions, in one place.

Servicers stay thin: they convert the request here, call the runtime, convert the answer back.
Validation of values is the domain's job (cells.spec); this module only moves fields.
"""

from __future__ import annotations

from typing import Any

from cells import capabilities
from cells.errors import InvalidArgument
from cells.spec import (
    CellLimits,
    CellSpec,
    ExecutableSpec,
    HealthCheck,
    Mount,
    RestartPolicy,
    Veth,
    cpu_shares_to_weight,
)
from cells.state import (
    CellInfo,
    CellState,
    CellStats,
    ExecutableInfo,
    ExecutableState,
    ExitStatus,
)
from proto.aurae import runtime_pb2
from proto.cellar.v1 import cells_pb2, types_pb2

_OPTIONAL_LIMITS = (
    "cpu_max_quota_us",
    "cpu_max_period_us",
    "memory_min",
    "memory_low",
    "memory_high",
    "memory_max",
    "swap_max",
    "pids_max",
)


def cell_spec(cell: runtime_pb2.Cell) -> CellSpec:
    """The seed's Cell plus cellar's fields. ``cpu_shares`` (seed) and ``cpu_weight`` are exclusive."""
    limits: dict[str, int | str | None] = {name: _opt(cell, name) for name in _OPTIONAL_LIMITS}
    weight = _opt(cell, "cpu_weight")
    if cell.cpu_shares:
        if weight is not None:
            raise InvalidArgument("cell.cpu_shares", "set either cpu_shares or cpu_weight, not both")
        weight = cpu_shares_to_weight(cell.cpu_shares)
    limits["cpu_weight"] = weight
    limits["cpuset_cpus"] = cell.cpuset_cpus or None
    limits["cpuset_mems"] = cell.cpuset_mems or None
    veth = None
    if cell.HasField("veth"):
        veth = Veth(
            host_ifname=cell.veth.host_ifname,
            cell_ifname=cell.veth.cell_ifname or "eth0",
            host_address=cell.veth.host_address,
            cell_address=cell.veth.cell_address,
        )
    return CellSpec(
        name=cell.name,
        limits=CellLimits(**limits),  # type: ignore[arg-type]
        isolate_process=cell.isolate_process,
        isolate_network=cell.isolate_network,
        veth=veth,
        privileged=cell.privileged,
        cap_add=tuple(cell.cap_add),
        cap_drop=tuple(cell.cap_drop),
        grant_role=cell.grant_role,
        mounts=tuple(Mount(source=m.source, target=m.target, read_only=m.read_only) for m in cell.mounts),
        rootfs=cell.rootfs,
        keep_data=cell.keep_data,
    )


def cell_message(spec: dict[str, Any]) -> runtime_pb2.Cell:
    """The allocated spec (CellInfo.spec, the to_dict form of CellSpec) as a runtime.Cell."""
    limits = spec.get("limits") or {}
    cell = runtime_pb2.Cell(name=spec.get("name", ""))
    for name in (*_OPTIONAL_LIMITS, "cpu_weight"):
        if limits.get(name) is not None:
            setattr(cell, name, limits[name])
    cell.cpuset_cpus = limits.get("cpuset_cpus") or ""
    cell.cpuset_mems = limits.get("cpuset_mems") or ""
    cell.isolate_process = bool(spec.get("isolate_process"))
    cell.isolate_network = bool(spec.get("isolate_network"))
    if spec.get("veth"):
        cell.veth.CopyFrom(types_pb2.Veth(**spec["veth"]))
    cell.privileged = bool(spec.get("privileged"))
    cell.cap_add.extend(spec.get("cap_add") or ())
    cell.cap_drop.extend(spec.get("cap_drop") or ())
    cell.grant_role = spec.get("grant_role") or ""
    for mount in spec.get("mounts") or ():
        cell.mounts.add(source=mount["source"], target=mount["target"], read_only=bool(mount.get("read_only")))
    cell.rootfs = spec.get("rootfs") or ""
    cell.keep_data = bool(spec.get("keep_data"))
    return cell


def cell_capabilities(spec: dict[str, Any]) -> list[str]:
    """The capability names a cell's executables get (before their own cap_add/cap_drop), sorted."""
    if spec.get("privileged"):
        return sorted(capabilities.ALL_CAPS)
    caps = capabilities.effective_set((spec.get("cap_add") or (), spec.get("cap_drop") or ()))
    return sorted(caps)


def executable_spec(exe: runtime_pb2.Executable) -> ExecutableSpec:
    return ExecutableSpec(
        cell_name=exe.cell_name,
        name=exe.name,
        argv=tuple(exe.argv),
        command=exe.command,
        description=exe.description,
        env=tuple(sorted(exe.env.items())),
        cwd=exe.cwd,
        uid=_opt(exe, "uid"),
        gid=_opt(exe, "gid"),
        privileged=exe.privileged,
        cap_add=tuple(exe.cap_add),
        cap_drop=tuple(exe.cap_drop),
        restart=restart_policy(exe.restart) if exe.HasField("restart") else RestartPolicy(),
        health=health_check(exe.health) if exe.HasField("health") else HealthCheck(),
        stdin=exe.stdin,
        tty=exe.tty,
    )


_HEALTH_KINDS = {
    types_pb2.HEALTH_CHECK_KIND_UNSPECIFIED: "",
    types_pb2.HEALTH_CHECK_KIND_EXEC: "exec",
    types_pb2.HEALTH_CHECK_KIND_TCP: "tcp",
    types_pb2.HEALTH_CHECK_KIND_HTTP: "http",
    types_pb2.HEALTH_CHECK_KIND_GRPC: "grpc",
}
_HEALTH_KIND_VALUES = {v: k for k, v in _HEALTH_KINDS.items()}
_HEALTH_STATES = {
    "starting": types_pb2.HEALTH_STATE_STARTING,
    "healthy": types_pb2.HEALTH_STATE_HEALTHY,
    "unhealthy": types_pb2.HEALTH_STATE_UNHEALTHY,
}


def health_check(msg: types_pb2.HealthCheck) -> HealthCheck:
    """Unset values take Docker's defaults (:class:`HealthCheck`); ``path`` "" is "/"."""
    if msg.kind not in _HEALTH_KINDS:
        raise InvalidArgument("executable.health.kind", "must be one of exec, tcp, http, grpc or unset (none)")
    default = HealthCheck()
    return HealthCheck(
        kind=_HEALTH_KINDS[msg.kind],
        command=tuple(msg.command),
        port=msg.port,
        path=msg.path or default.path,
        service=msg.service,
        interval_s=msg.interval_s if msg.HasField("interval_s") else default.interval_s,
        timeout_s=msg.timeout_s if msg.HasField("timeout_s") else default.timeout_s,
        retries=msg.retries if msg.HasField("retries") else default.retries,
        start_period_s=msg.start_period_s if msg.HasField("start_period_s") else default.start_period_s,
    )


def health_check_message(check: dict[str, Any]) -> types_pb2.HealthCheck | None:
    """ExecutableInfo.health_check (the to_dict form of a HealthCheck); None when it has none."""
    if not check or not check.get("kind"):
        return None
    return types_pb2.HealthCheck(
        kind=_HEALTH_KIND_VALUES.get(str(check.get("kind")), types_pb2.HEALTH_CHECK_KIND_UNSPECIFIED),
        command=[str(a) for a in check.get("command") or ()],
        port=int(check.get("port", 0)),
        path=str(check.get("path", "")),
        service=str(check.get("service", "")),
        interval_s=float(check.get("interval_s", 0.0)),
        timeout_s=float(check.get("timeout_s", 0.0)),
        retries=int(check.get("retries", 0)),
        start_period_s=float(check.get("start_period_s", 0.0)),
    )


_RESTART_MODES = {
    types_pb2.RESTART_MODE_UNSPECIFIED: "never",
    types_pb2.RESTART_MODE_NEVER: "never",
    types_pb2.RESTART_MODE_ON_FAILURE: "on-failure",
    types_pb2.RESTART_MODE_ALWAYS: "always",
}
_RESTART_MODE_VALUES = {"never": types_pb2.RESTART_MODE_NEVER, "on-failure": types_pb2.RESTART_MODE_ON_FAILURE,
                        "always": types_pb2.RESTART_MODE_ALWAYS}


def restart_policy(msg: types_pb2.RestartPolicy) -> RestartPolicy:
    """Unset values take the policy's defaults; an unset ``max_delay_s`` is at least ``delay_s``."""
    if msg.mode not in _RESTART_MODES:
        raise InvalidArgument("executable.restart.mode", "must be one of never, on-failure or always")
    default = RestartPolicy()
    delay = msg.delay_s if msg.HasField("delay_s") else default.delay_s
    return RestartPolicy(
        mode=_RESTART_MODES[msg.mode],
        delay_s=delay,
        max_delay_s=msg.max_delay_s if msg.HasField("max_delay_s") else max(default.max_delay_s, delay),
        reset_after_s=msg.reset_after_s if msg.HasField("reset_after_s") else default.reset_after_s,
        limit_burst=msg.limit_burst if msg.HasField("limit_burst") else default.limit_burst,
        limit_interval_s=msg.limit_interval_s if msg.HasField("limit_interval_s") else default.limit_interval_s,
    )


def restart_message(policy: dict[str, Any]) -> types_pb2.RestartPolicy | None:
    """ExecutableInfo.restart (the to_dict form of a RestartPolicy); None for an old record without one."""
    if not policy:
        return None
    return types_pb2.RestartPolicy(
        mode=_RESTART_MODE_VALUES.get(str(policy.get("mode")), types_pb2.RESTART_MODE_NEVER),
        delay_s=float(policy.get("delay_s", 0.0)),
        max_delay_s=float(policy.get("max_delay_s", 0.0)),
        reset_after_s=float(policy.get("reset_after_s", 0.0)),
        limit_burst=int(policy.get("limit_burst", 0)),
        limit_interval_s=float(policy.get("limit_interval_s", 0.0)),
    )


def exit_message(status: ExitStatus | None) -> types_pb2.ExitStatus | None:
    if status is None:
        return None
    msg = types_pb2.ExitStatus(
        oom_killed=status.oom_killed,
        started_at_ns=status.started_at_ns,
        ended_at_ns=status.ended_at_ns,
    )
    if status.code is not None:
        msg.code = status.code
    if status.signal is not None:
        msg.signal = status.signal
    return msg


_EXE_STATES = {
    ExecutableState.STARTING: types_pb2.EXECUTABLE_STATE_STARTING,
    ExecutableState.RUNNING: types_pb2.EXECUTABLE_STATE_RUNNING,
    ExecutableState.STOPPING: types_pb2.EXECUTABLE_STATE_STOPPING,
    ExecutableState.EXITED: types_pb2.EXECUTABLE_STATE_EXITED,
    ExecutableState.LOST: types_pb2.EXECUTABLE_STATE_LOST,
    ExecutableState.BACKOFF: types_pb2.EXECUTABLE_STATE_BACKOFF,
    ExecutableState.FAILED: types_pb2.EXECUTABLE_STATE_FAILED,
}

_CELL_STATES = {
    CellState.ACTIVE: cells_pb2.CELL_STATE_ACTIVE,
    CellState.FROZEN: cells_pb2.CELL_STATE_FROZEN,
    CellState.FREEING: cells_pb2.CELL_STATE_FREEING,
}


def executable_message(info: ExecutableInfo, in_privileged_cell: bool = False) -> types_pb2.ExecutableInfo:
    """``in_privileged_cell``: every executable of a privileged cell runs privileged."""
    return types_pb2.ExecutableInfo(
        cell_name=info.cell_name,
        name=info.name,
        state=_EXE_STATES[info.state],
        argv=info.argv,
        command=info.command,
        description=info.description,
        host_pid=info.host_pid,
        cell_pid=info.cell_pid,
        run=info.run,
        started_at_ns=info.started_at_ns,
        exit=exit_message(info.exit),
        privileged=info.privileged or in_privileged_cell,
        restarts=info.restarts,
        restart_at_ns=info.restart_at_ns,
        restart=restart_message(info.restart),
        reason=info.reason,
        health_check=health_check_message(info.health_check),
        health=_HEALTH_STATES.get(info.health, types_pb2.HEALTH_STATE_UNSPECIFIED),
        health_failures=info.health_failures,
        health_failed_probes=info.health_failed_probes,
        health_result=info.health_result,
    )


def stats_message(stats: CellStats | None) -> types_pb2.CellStats | None:
    if stats is None:
        return None
    msg = types_pb2.CellStats(
        memory_current=stats.memory_current,
        memory_peak=stats.memory_peak,
        cpu_usage_us=stats.cpu_usage_us,
        cpu_user_us=stats.cpu_user_us,
        cpu_system_us=stats.cpu_system_us,
        pids_current=stats.pids_current,
        oom_kills=stats.oom_kills,
    )
    if stats.pressure is not None:
        p = stats.pressure
        msg.pressure.CopyFrom(
            types_pb2.PressureStats(
                cpu_some_avg10=p.cpu_some_avg10,
                memory_some_avg10=p.memory_some_avg10,
                memory_full_avg10=p.memory_full_avg10,
                io_some_avg10=p.io_some_avg10,
                cpu_some_total_us=p.cpu_some_total_us,
                memory_some_total_us=p.memory_some_total_us,
                io_some_total_us=p.io_some_total_us,
            )
        )
    return msg


def cell_info_message(info: CellInfo) -> cells_pb2.CellInfo:
    privileged = bool(info.spec.get("privileged"))
    return cells_pb2.CellInfo(
        name=info.name,
        state=_CELL_STATES[info.state],
        cgroup_path=info.cgroup_path,
        cgroup_v2_limits=info.cgroup_v2_limits,
        isolate_process=info.isolate_process,
        isolate_network=info.isolate_network,
        netns=info.netns,
        holder_pid=info.holder_pid,
        created_at_ns=info.created_at_ns,
        cell=cell_message(info.spec),
        executables=[executable_message(e, privileged) for e in info.executables],
        stats=stats_message(info.stats),
        privileged=privileged,
        capabilities=cell_capabilities(info.spec),
    )


def grace_seconds(msg: runtime_pb2.StopCellRequest | runtime_pb2.FreeCellRequest) -> float | None:
    """The per-request grace period, or None for the configured default."""
    return msg.grace_period_ms / 1000.0 if msg.HasField("grace_period_ms") else None


def _opt(msg, name: str):  # type: ignore[no-untyped-def]
    """An optional proto3 scalar as ``None`` when unset."""
    return getattr(msg, name) if msg.HasField(name) else None
