"""``cellar cell ...``, ``cellar start/stop/ps/events/info``: cells and their executables.

Each command builds one request, calls one RPC and renders plain dicts through agent.cli.output,
so ``-o json`` and the table always carry the same fields.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
from google.protobuf.json_format import MessageToDict

from agent.cli.complete import cell_names, executable_names
from agent.cli.connection import Target
from agent.cli.describe import describe_cell, stats_columns
from agent.cli.healthcheck import with_health
from agent.cli.human import ago, rfc3339_ns, rfc3339_or_none
from agent.cli.output import emit_object, emit_rows, printable, stream_record, structured, to_data
from agent.cli.rows import created_text, enum_word, executable_row, exit_text, short_seconds, status_text
from agent.cli.units import SIZE_HELP, Count, CpuMax, Duration, Size
from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, types_pb2


def _cells(target: Target) -> tuple[Any, cells_pb2_grpc.CellsStub, runtime_pb2_grpc.CellServiceStub]:
    channel = target.channel()
    return channel, cells_pb2_grpc.CellsStub(channel), runtime_pb2_grpc.CellServiceStub(channel)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


GRANT_ROLES = ("observer", "operator", "admin")


def parse_mount(text: str) -> types_pb2.Mount:
    """``SRC:DST[:ro|:rw]`` (docker's ``-v``/``--mount`` short form) -> a Mount."""
    parts = text.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        return types_pb2.Mount(source=parts[0], target=parts[1], read_only=parts[2] == "ro")
    if len(parts) == 2 and parts[0] and parts[1]:
        return types_pb2.Mount(source=parts[0], target=parts[1])
    raise click.BadParameter(f"{text!r} is not SRC:DST or SRC:DST:ro")


def _mount(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[types_pb2.Mount]:
    return [parse_mount(v) for v in values]


def with_privilege(f: Any) -> Any:
    """``--privileged``, ``--cap-add``, ``--cap-drop``: docker's names, for cells and executables alike."""
    f = click.option("--cap-drop", multiple=True, metavar="CAP",
                     help="drop a capability from the default set (repeatable; ALL drops every one)")(f)
    f = click.option("--cap-add", multiple=True, metavar="CAP",
                     help="add a capability, e.g. NET_ADMIN (repeatable; beyond the default set: admin only)")(f)
    return click.option("--privileged", is_flag=True,
                        help="no containment: every capability, no seccomp filter, the host's view (admin only)")(f)


def _privilege_fields(msg: Any, privileged: bool, cap_add: tuple[str, ...], cap_drop: tuple[str, ...]) -> None:
    msg.privileged = privileged
    msg.cap_add.extend(cap_add)
    msg.cap_drop.extend(cap_drop)


def _with_privileged_column(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """A PRIVILEGED column after STATE, only when a row is privileged (the usual table stays as it was)."""
    if any(r.get("privileged") for r in rows):
        columns = list(columns)
        columns.insert(columns.index("state") + 1, "privileged")
    return columns


RESTART_MODES = {"never": types_pb2.RESTART_MODE_NEVER, "on-failure": types_pb2.RESTART_MODE_ON_FAILURE,
                 "always": types_pb2.RESTART_MODE_ALWAYS}


def parse_start_limit(text: str) -> tuple[int, float]:
    """``BURST/SECONDS`` (systemd's StartLimitBurst/StartLimitIntervalSec), or ``off`` -> (1, 0)."""
    if text.strip().lower() == "off":
        return 1, 0.0
    burst, sep, seconds = text.partition("/")
    try:
        if sep:
            return int(burst), float(seconds.removesuffix("s"))
    except ValueError:
        pass
    raise click.BadParameter(f"{text!r} is not BURST/SECONDS (e.g. 5/10) or off")


@click.group()
def cell() -> None:
    """Allocate, list, inspect, freeze, thaw and free cells."""


@cell.command("allocate")
@click.argument("name")
@click.option("--cpu-weight", type=click.IntRange(1, 10000))
@click.option("--cpu-shares", type=click.IntRange(2, 262144), help="v1-style shares (converted to a weight)")
@click.option("--cpu-max", type=CpuMax(), help="QUOTA[/PERIOD] in microseconds, e.g. 50000/100000; max = none")
@click.option("--cpus", "cpuset_cpus", help="cpuset, e.g. 0-1")
@click.option("--mems", "cpuset_mems", help="cpuset memory nodes")
@click.option("--memory-max", type=Size(allow_max=True), help=f"hard limit: {SIZE_HELP}; max = none")
@click.option("--memory-high", type=Size(allow_max=True), help="throttle above: SIZE as --memory-max; max = none")
@click.option("--memory-low", type=Size(), help="best-effort protection: SIZE as --memory-max")
@click.option("--memory-min", type=Size(), help="hard protection: SIZE as --memory-max")
@click.option("--swap-max", type=Size(allow_max=True), help="swap limit: SIZE as --memory-max; max = none")
@click.option("--pids-max", type=Count(1, 4_194_304, allow_max=True), help="most processes at once; max = none")
@click.option("--isolate-process", is_flag=True, help="own pid, mount, uts, ipc namespaces")
@click.option("--isolate-network", is_flag=True, help="own network namespace (lo up)")
@click.option("--veth", help="HOST_IF[:CELL_IF], a veth pair into the cell's netns (needs --isolate-network)")
@click.option("--host-address", default="", help="CIDR address of the host end")
@click.option("--cell-address", default="", help="CIDR address of the cell end")
@with_privilege
@click.option("--grant-role", type=click.Choice(GRANT_ROLES),
              help="the role the cell's workloads get on the main socket (admin only; default: refused)")
@click.option("-v", "--volume", "--mount", "mounts", multiple=True, callback=_mount, metavar="SRC:DST[:ro]",
              help="bind-mount host path SRC at DST, docker's -v syntax (repeatable; needs --isolate-process; outside "
                   "<state_dir>/volumes: admin only)")
@click.option("--rootfs", default="", metavar="DIR",
              help="a directory tree as the cell's root (needs --isolate-process; outside <state_dir>/volumes: admin only)")
@click.option("--keep-data", is_flag=True, help="keep the cell's data directory (/data inside) when it is freed")
@click.option("--persist", is_flag=True,
              help="recreate the cell after a reboot, with its executables that have a restart policy")
@click.pass_obj
def allocate(target: Target, name: str, cpu_max: tuple[int, int | None] | None, veth: str | None, host_address: str,
             cell_address: str, privileged: bool, cap_add: tuple[str, ...], cap_drop: tuple[str, ...],
             grant_role: str | None, mounts: list[types_pb2.Mount], rootfs: str, keep_data: bool,
             persist: bool, **limits: Any) -> None:
    """Create cell NAME (a/b for nested cells)."""
    msg = runtime_pb2.Cell(name=name, isolate_process=limits.pop("isolate_process"),
                           isolate_network=limits.pop("isolate_network"), grant_role=grant_role or "",
                           mounts=mounts, rootfs=rootfs, keep_data=keep_data, persist=persist)
    _privilege_fields(msg, privileged, cap_add, cap_drop)
    for key, value in limits.items():
        if value is not None:
            setattr(msg, key, value)
    if cpu_max:
        quota, period = cpu_max
        msg.cpu_max_quota_us = quota
        if period:
            msg.cpu_max_period_us = period
    if veth:
        host_if, _, cell_if = veth.partition(":")
        msg.veth.CopyFrom(types_pb2.Veth(host_ifname=host_if, cell_ifname=cell_if or "eth0",
                                         host_address=host_address, cell_address=cell_address))
    channel, _, runtime = _cells(target)
    with channel:
        reply = runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=msg), timeout=target.timeout)
    emit_object(target.output, {"cell": reply.cell_name, "cgroup_v2": reply.cgroup_v2})


@cell.command("ls")
@click.argument("prefix", default="", shell_complete=cell_names)
@click.option("--stats", is_flag=True, help="include memory, cpu and pids")
@click.pass_obj
def ls(target: Target, prefix: str, stats: bool) -> None:
    """List cells (the tree, parents first)."""
    channel, cells, _ = _cells(target)
    with channel:
        reply = cells.List(cells_pb2.ListCellsRequest(prefix=prefix, include_stats=stats), timeout=target.timeout)
    if structured(target.output):
        click.echo(to_data(target.output, [MessageToDict(c, preserving_proto_field_name=True) for c in reply.cells]))
        return
    rows = []
    for c in reply.cells:
        running = sum(e.state == types_pb2.EXECUTABLE_STATE_RUNNING for e in c.executables)
        row: dict[str, Any] = {
            "name": c.name,
            "state": enum_word(c.state, cells_pb2.CellState, "CELL_STATE_"),
            "isolation": "+".join(k for k, v in (("process", c.isolate_process), ("network", c.isolate_network)) if v) or "-",
            "privileged": c.privileged,
            "running": running,
            "executables": len(c.executables),
        }
        if stats:
            row.update(stats_columns(c))
        rows.append(row)
    emit_rows("table", rows, _with_privileged_column(rows, [k for k in rows[0] if k != "privileged"] if rows else []))


@cell.command("inspect")
@click.argument("name", shell_complete=cell_names)
@click.pass_obj
def inspect(target: Target, name: str) -> None:
    """Everything about one cell: spec, cgroup, namespaces, capabilities, executables, stats
    (a page for people; -o json: the raw CellInfo)."""
    channel, cells, _ = _cells(target)
    with channel:
        info = cells.Inspect(cells_pb2.InspectCellRequest(cell_name=name), timeout=target.timeout)
    if not structured(target.output):
        click.echo(describe_cell(info, time.time_ns()))
        return
    shown = MessageToDict(info, preserving_proto_field_name=True)
    shown.setdefault("privileged", False)  # said either way: proto3 leaves a false bool out
    for exe in shown.get("executables", []):
        exe.setdefault("privileged", False)
    click.echo(to_data(target.output, shown))


@cell.command("free")
@click.argument("name", shell_complete=cell_names)
@click.option("--grace", type=Duration(), help="time between SIGTERM and SIGKILL: 2, 2s, 500ms, 1m (default: the daemon's)")
@click.pass_obj
def free(target: Target, name: str, grace: float | None) -> None:
    """Stop everything in cell NAME and remove it."""
    request = runtime_pb2.FreeCellRequest(cell_name=name)
    if grace is not None:
        request.grace_period_ms = _ms(grace) or 0
    channel, _, runtime = _cells(target)
    with channel:
        runtime.Free(request, timeout=target.timeout + (grace or 10.0))
    emit_object(target.output, {"freed": name})


@cell.command("freeze")
@click.argument("name", shell_complete=cell_names)
@click.pass_obj
def freeze(target: Target, name: str) -> None:
    """Freeze every process of cell NAME."""
    channel, cells, _ = _cells(target)
    with channel:
        cells.Freeze(cells_pb2.FreezeCellRequest(cell_name=name), timeout=target.timeout)
    emit_object(target.output, {"frozen": name})


@cell.command("thaw")
@click.argument("name", shell_complete=cell_names)
@click.pass_obj
def thaw(target: Target, name: str) -> None:
    """Thaw cell NAME."""
    channel, cells, _ = _cells(target)
    with channel:
        cells.Thaw(cells_pb2.ThawCellRequest(cell_name=name), timeout=target.timeout)
    emit_object(target.output, {"thawed": name})


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("cell_name", metavar="CELL", shell_complete=cell_names)
@click.argument("name")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.option("--sh", "command", help="run COMMAND through sh -c instead of ARGV")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--cwd", default="")
@click.option("--uid", type=click.IntRange(0, 2**32 - 2))
@click.option("--gid", type=click.IntRange(0, 2**32 - 2))
@click.option("--description", default="")
@click.option("-i", "--interactive", "stdin", is_flag=True, help="keep stdin open for `cellar attach` (else /dev/null)")
@click.option("-t", "--tty", "tty", is_flag=True,
              help="with -i: run it on a pseudo-terminal (a shell's prompt, job control; output stored as stdout)")
@with_privilege
@click.option("--restart", "restart_mode", type=click.Choice(list(RESTART_MODES)),
              help="start it again when it ends: on a failure (nonzero exit, signal, OOM kill) or always "
                   "(any end but a stop); default never")
@click.option("--restart-delay", type=float, metavar="SECONDS",
              help="first delay before a restart, doubling after each one (default 10)")
@click.option("--restart-max-delay", type=float, metavar="SECONDS", help="cap of the doubling delay (default 300)")
@click.option("--start-limit", type=parse_start_limit, metavar="BURST/SECONDS",
              help="more than BURST starts within SECONDS -> failed (default 5/10; off: no limit)")
@with_health
@click.pass_obj
def start(target: Target, cell_name: str, name: str, argv: tuple[str, ...], command: str | None,
          env: tuple[str, ...], cwd: str, uid: int | None, gid: int | None, description: str,
          privileged: bool, cap_add: tuple[str, ...], cap_drop: tuple[str, ...], restart_mode: str | None,
          restart_delay: float | None, restart_max_delay: float | None,
          start_limit: tuple[int, float] | None, health: types_pb2.HealthCheck | None, stdin: bool = False,
          tty: bool = False) -> None:
    """Start executable NAME in CELL: `cellar start CELL NAME -- ARGV...` or `--sh "COMMAND"`."""
    if bool(argv) == bool(command):
        raise click.UsageError("give either ARGV after -- or --sh COMMAND")
    if tty and not stdin:
        raise click.UsageError("-t needs -i (a terminal is its stdin)")
    if restart_mode is None and (restart_delay, restart_max_delay, start_limit) != (None, None, None):
        raise click.UsageError("--restart-delay, --restart-max-delay and --start-limit need --restart")
    exe = runtime_pb2.Executable(name=name, cell_name=cell_name, command=command or "", argv=list(argv),
                                 cwd=cwd, description=description, stdin=stdin, tty=tty)
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--env {item!r}: expected KEY=VALUE")
        exe.env[key] = value
    if uid is not None:
        exe.uid = uid
    if gid is not None:
        exe.gid = gid
    _privilege_fields(exe, privileged, cap_add, cap_drop)
    if restart_mode is not None:
        exe.restart.mode = RESTART_MODES[restart_mode]
        if restart_delay is not None:
            exe.restart.delay_s = restart_delay
        if restart_max_delay is not None:
            exe.restart.max_delay_s = restart_max_delay
        if start_limit is not None:
            exe.restart.limit_burst, exe.restart.limit_interval_s = start_limit
    if health is not None:
        exe.health.CopyFrom(health)
    channel, _, runtime = _cells(target)
    with channel:
        reply = runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=target.timeout)
    emit_object(target.output, {"cell": cell_name, "executable": name, "pid": reply.host_pid,
                                "cell_pid": reply.cell_pid, "run": reply.run, "restart": restart_mode or "never"})


@click.command()
@click.argument("cell_name", metavar="CELL", shell_complete=cell_names)
@click.argument("name", shell_complete=executable_names)
@click.option("--grace", type=Duration(), help="time between SIGTERM and SIGKILL: 2, 2s, 500ms, 1m (default: the daemon's)")
@click.pass_obj
def stop(target: Target, cell_name: str, name: str, grace: float | None) -> None:
    """Stop executable NAME in CELL: SIGTERM, grace period, SIGKILL of its whole cgroup."""
    request = runtime_pb2.StopCellRequest(cell_name=cell_name, executable_name=name)
    if grace is not None:
        request.grace_period_ms = _ms(grace) or 0
    channel, _, runtime = _cells(target)
    with channel:
        reply = runtime.Stop(request, timeout=target.timeout + (grace or 10.0))
    emit_object(target.output, {"cell": cell_name, "executable": name,
                                "exit": exit_text(reply.exit if reply.HasField("exit") else None)})


@click.command()
@click.argument("prefix", default="", shell_complete=cell_names)
@click.option("-a", "--all", "show_all", is_flag=True, help="include exited executables")
@click.pass_obj
def ps(target: Target, prefix: str, show_all: bool) -> None:
    """Executables of every cell (all but the exited ones unless --all; backoff and failed are shown)."""
    channel, cells, _ = _cells(target)
    with channel:
        reply = cells.List(cells_pb2.ListCellsRequest(prefix=prefix), timeout=target.timeout)
    now = time.time_ns()
    shown = [e for c in reply.cells for e in c.executables
             if show_all or e.state != types_pb2.EXECUTABLE_STATE_EXITED]
    if structured(target.output):
        emit_rows(target.output, [executable_row(e, now) for e in shown])
        return
    rows = [{"cell": e.cell_name, "name": e.name, "status": status_text(e, now), "privileged": e.privileged,
             "pid": e.host_pid or None, "run": e.run, "restarts": e.restarts, "created": created_text(e, now),
             "command": executable_row(e, now)["command"]} for e in shown]
    columns = ["cell", "name", "status", "pid", "run", "restarts", "created", "command"]
    if any(r["privileged"] for r in rows):
        columns.insert(columns.index("status") + 1, "privileged")
    emit_rows("table", rows, columns)


def event_line(kind: str, timestamp_ns: int, row: dict[str, Any]) -> str:
    """One event for a person: local time, what happened, to which executable, and why."""
    stamp = datetime.fromtimestamp(timestamp_ns / 1e9).astimezone().isoformat(timespec="seconds")
    line = f"{stamp}  {kind:<10} {row['cell']}/{row['executable']}  pid={row['pid'] or '-'}  exit={row['exit'] or '-'}"
    if kind == "backoff" and row["restart_in_s"] is not None:
        line += f"  restart in {short_seconds(row['restart_in_s'])}"
    if kind == "failed" and row["reason"]:
        line += f"  reason={row['reason']}"
    if kind in ("healthy", "unhealthy"):
        line += f"  probe={row['health_result']}"
    return printable(line + ("  privileged" if row["privileged"] else ""))


@click.command()
@click.argument("prefix", default="", shell_complete=cell_names)
@click.pass_obj
def events(target: Target, prefix: str) -> None:
    """Follow executable state changes (started, stopping, exited, lost, backoff, restarting, failed, healthy,
    unhealthy). Ctrl-C ends. -o json: NDJSON, one object a line (the ps object with "time" and "event")."""
    channel, cells, _ = _cells(target)
    with channel:
        try:
            for event in cells.WatchEvents(cells_pb2.WatchEventsRequest(cell_prefix=prefix)):
                row = executable_row(event.executable)
                if structured(target.output):
                    click.echo(stream_record(target.output, {"time": rfc3339_ns(event.timestamp_ns),
                                                             "event": event.kind, **row}))
                else:
                    click.echo(event_line(event.kind, event.timestamp_ns, row))
        except KeyboardInterrupt:
            pass


@click.command()
@click.pass_obj
def info(target: Target) -> None:
    """The node: version, hostname, cgroup mode (v2 or hybrid) and cellar's cgroup root."""
    channel, cells, _ = _cells(target)
    with channel:
        reply = cells.Info(cells_pb2.InfoRequest(), timeout=target.timeout)
    shown = MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    shown["started"] = rfc3339_or_none(reply.started_at_ns)
    if not structured(target.output):
        shown.pop("started_at_ns", None)
        if reply.started_at_ns:
            shown["started"] = f"{shown['started']} ({ago(reply.started_at_ns, time.time_ns())})"
    emit_object(target.output, shown)



