"""``cellar cell inspect`` for a person: a ``kubectl describe``-like page (states in words, ages as
"5m ago", sizes in MiB/GiB against their limit). ``-o json`` keeps the raw CellInfo instead.

Also the human units of ``cell ls --stats`` (:func:`stats_columns`), so both read the same.
"""

from __future__ import annotations

from typing import Any

from agent.cli.human import ago, rfc3339_or_none, short_duration, size, usage
from agent.cli.output import printable, table
from agent.cli.rows import command_text, created_text, enum_word, status_text
from proto.aurae import runtime_pb2
from proto.cellar.v1 import cells_pb2


def _limit(spec: runtime_pb2.Cell, field: str) -> int | None:
    return int(getattr(spec, field)) if spec.HasField(field) else None  # type: ignore[arg-type]


def cpu_limit(spec: runtime_pb2.Cell) -> float | None:
    """The CPU quota in CPUs (``0.5`` = half a CPU), None without one."""
    quota = _limit(spec, "cpu_max_quota_us")
    if not quota:
        return None
    return quota / (_limit(spec, "cpu_max_period_us") or 100_000)


def _cpu_text(spec: runtime_pb2.Cell) -> str:
    cpus = cpu_limit(spec)
    weight = f"weight {spec.cpu_weight}" if spec.HasField("cpu_weight") else ""
    quota = (f"{cpus:.2f} CPUs ({spec.cpu_max_quota_us}/{_limit(spec, 'cpu_max_period_us') or 100_000} us)"
             if cpus else "no quota")
    return ", ".join(x for x in (quota, weight, f"cpus {spec.cpuset_cpus}" if spec.cpuset_cpus else "") if x)


def stats_columns(info: cells_pb2.CellInfo) -> dict[str, str]:
    """``memory``, ``cpu``, ``pids`` of ``cell ls --stats``: usage against the limit, CPU time."""
    st, spec = info.stats, info.cell
    pids_max = _limit(spec, "pids_max")
    return {"memory": usage(st.memory_current, _limit(spec, "memory_max")),
            "cpu": short_cpu(st.cpu_usage_us),
            "pids": f"{st.pids_current} / {pids_max}" if pids_max else str(st.pids_current)}


def short_cpu(us: int) -> str:
    """CPU time used: ``0.25s``, ``12.5s``, then kubectl's short durations."""
    seconds = us / 1e6
    return f"{seconds:.2f}s" if seconds < 60 else short_duration(seconds)


def _section(title: str, pairs: list[tuple[str, Any]], indent: str = "") -> list[str]:
    shown = [(k, v) for k, v in pairs if v not in (None, "", [])]
    if not shown:
        return []
    width = max(len(k) for k, _ in shown) + 2
    lines = [f"{indent}{title}:"] if title else []
    pad = indent + ("  " if title else "")
    return lines + [printable(f"{pad}{k + ':':<{width}}{v}") for k, v in shown]


def describe_cell(info: cells_pb2.CellInfo, now_ns: int) -> str:
    """The page: identity, isolation, limits, usage, mounts, then the executables as ``ps`` shows them."""
    spec, st = info.cell, info.stats
    isolation = [k for k, v in (("process", info.isolate_process), ("network", info.isolate_network)) if v]
    created = rfc3339_or_none(info.created_at_ns)
    lines = _section("", [
        ("Name", info.name),
        ("State", enum_word(info.state, cells_pb2.CellState, "CELL_STATE_")),
        ("Created", f"{created} ({ago(info.created_at_ns, now_ns)})" if created else None),
        ("Cgroup", f"{info.cgroup_path} ({'v2' if info.cgroup_v2_limits else 'v1'} limits)"),
        ("Isolation", ", ".join(isolation) or "none (the host's namespaces)"),
        ("Network namespace", info.netns),
        ("Holder PID", info.holder_pid or None),
        ("Privileged", "yes" if info.privileged else "no"),
        ("Capabilities", ", ".join(info.capabilities)),
        ("Grant role", spec.grant_role),
        ("Rootfs", spec.rootfs),
        ("Keep data", "yes" if spec.keep_data else None),
        ("Persist", "yes" if spec.persist else None),
    ])
    memory_max = _limit(spec, "memory_max")
    pids_max = _limit(spec, "pids_max")
    lines += _section("Limits", [
        ("CPU", _cpu_text(spec)),
        ("Memory max", size(memory_max) if memory_max else "none"),
        ("Memory high", size(spec.memory_high) if spec.HasField("memory_high") else None),
        ("Memory low", size(spec.memory_low) if spec.HasField("memory_low") else None),
        ("Memory min", size(spec.memory_min) if spec.HasField("memory_min") else None),
        ("Swap max", size(spec.swap_max) if spec.HasField("swap_max") else None),
        ("Pids max", pids_max or "none"),
    ])
    if info.HasField("stats"):
        p = st.pressure
        lines += _section("Usage", [
            ("Memory", usage(st.memory_current, memory_max) + (f", peak {size(st.memory_peak)}" if st.memory_peak else "")),
            ("CPU time", f"{short_cpu(st.cpu_usage_us)} (user {short_cpu(st.cpu_user_us)}, "
                         f"system {short_cpu(st.cpu_system_us)})"),
            ("Pids", f"{st.pids_current} / {pids_max}" if pids_max else str(st.pids_current)),
            ("OOM kills", st.oom_kills),
            ("Pressure (avg10)", f"cpu {p.cpu_some_avg10:.2f}%, memory {p.memory_some_avg10:.2f}% "
                                 f"(full {p.memory_full_avg10:.2f}%), io {p.io_some_avg10:.2f}%"),
        ])
    if spec.mounts:
        lines += ["Mounts:"] + [printable(f"  {m.source} -> {m.target}{' (ro)' if m.read_only else ''}")
                                for m in spec.mounts]
    if spec.HasField("veth"):
        v = spec.veth
        lines += [f"Veth:  {v.host_ifname} {v.host_address or ''} <-> {v.cell_ifname} {v.cell_address or ''}".rstrip()]
    lines.append("Executables:" + ("" if info.executables else "  none"))
    if info.executables:
        rows = [{"name": e.name, "status": status_text(e, now_ns), "pid": e.host_pid or None, "run": e.run,
                 "restarts": e.restarts, "created": created_text(e, now_ns), "command": command_text(e)}
                for e in info.executables]
        lines += ["  " + line for line in table(rows).splitlines()]
    return "\n".join(lines)
