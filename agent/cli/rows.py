"""An executable as one plain dict: the JSON object of ``ps``, ``events`` and ``top`` (one schema, see
the README's "JSON output"), and the words a person reads in a table (docker's STATUS and CREATED).

Key names are the same everywhere: ``cell``, ``executable``, ``run``; times are RFC 3339 with a zone
(``started``, ``ended``, ``restart_at``); "none" is ``null``, never ``"-"``.
"""

from __future__ import annotations

import shlex
import signal
import time
from typing import Any

from google.protobuf.json_format import MessageToDict

from agent.cli.healthcheck import health_row
from agent.cli.human import docker_duration, rfc3339_or_none
from proto.cellar.v1 import types_pb2


def enum_word(value: int, enum: Any, prefix: str) -> str:
    """``EXECUTABLE_STATE_RUNNING`` -> ``running``."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


def exit_text(exit: types_pb2.ExitStatus | None) -> str | None:
    """``code 1``, ``signal 9 (OOM)``; None when it has not ended."""
    if exit is None or not (exit.HasField("code") or exit.HasField("signal")):
        return None
    text = f"signal {exit.signal}" if exit.HasField("signal") else f"code {exit.code}"
    return text + (" (OOM)" if exit.oom_killed else "")


def command_text(exe: types_pb2.ExecutableInfo) -> str:
    """The argv quoted as a shell would read it back (``sh -c 'echo hi'``; ``--sh`` is such a one)."""
    return shlex.join(exe.argv) if exe.argv else shlex.join(["sh", "-c", exe.command]) if exe.command else ""


def restart_row(exe: types_pb2.ExecutableInfo, now_ns: int) -> dict[str, Any]:
    """The restart fields: policy, restarts, the pending restart, why it failed."""
    policy = MessageToDict(exe.restart, preserving_proto_field_name=True,
                           always_print_fields_with_no_presence=True) if exe.HasField("restart") else None
    if policy:
        policy["mode"] = enum_word(exe.restart.mode, types_pb2.RestartMode, "RESTART_MODE_").replace("_", "-")
    pending = max(0.0, (exe.restart_at_ns - now_ns) / 1e9) if exe.restart_at_ns else None
    return {"restarts": exe.restarts, "restart_at": rfc3339_or_none(exe.restart_at_ns),
            "restart_at_ns": exe.restart_at_ns or None,
            "restart_in_s": None if pending is None else round(pending, 3), "restart": policy,
            "reason": exe.reason or None}


def executable_row(exe: types_pb2.ExecutableInfo, now_ns: int | None = None) -> dict[str, Any]:
    """The JSON object of one executable (``ps -o json``, every ``events -o json`` line)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    ended = exe.exit if exe.HasField("exit") else None
    return {
        "cell": exe.cell_name,
        "executable": exe.name,
        "state": enum_word(exe.state, types_pb2.ExecutableState, "EXECUTABLE_STATE_"),
        "privileged": exe.privileged,
        "pid": exe.host_pid or None,
        "cell_pid": exe.cell_pid or None,
        "run": exe.run,
        "started": rfc3339_or_none(exe.started_at_ns),
        "ended": rfc3339_or_none(ended.ended_at_ns) if ended is not None else None,
        "exit": exit_text(ended),
        "exit_code": ended.code if ended is not None and ended.HasField("code") else None,
        "signal": ended.signal if ended is not None and ended.HasField("signal") else None,
        "oom_killed": bool(ended is not None and ended.oom_killed),
        "argv": list(exe.argv),
        "command": command_text(exe),
        **restart_row(exe, now_ns),
        **health_row(exe),
    }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def short_seconds(seconds: float) -> str:
    """``3.2s``, ``45s``, ``4m05s``: a time left."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"


def status_text(exe: types_pb2.ExecutableInfo, now_ns: int) -> str:
    """docker's STATUS: ``Up 5 minutes (healthy)``, ``Exited (1) 2 minutes ago``, kubectl's back-off."""
    state = exe.state
    if state == types_pb2.EXECUTABLE_STATE_RUNNING:
        health = health_row(exe)["health"]
        up = f"Up {docker_duration((now_ns - exe.started_at_ns) / 1e9)}" if exe.started_at_ns else "Up"
        return f"{up} ({health})" if health else up
    if state in (types_pb2.EXECUTABLE_STATE_EXITED, types_pb2.EXECUTABLE_STATE_BACKOFF,
                 types_pb2.EXECUTABLE_STATE_FAILED) and exe.HasField("exit"):
        e = exe.exit
        how = (str(e.code) if e.HasField("code") else _signal_name(e.signal) if e.HasField("signal") else "?")
        how += ", OOM killed" if e.oom_killed else ""
        when = f" {docker_duration((now_ns - e.ended_at_ns) / 1e9)} ago" if e.ended_at_ns else ""
        if state == types_pb2.EXECUTABLE_STATE_BACKOFF:
            left = f", restart in {short_seconds(max(0.0, (exe.restart_at_ns - now_ns) / 1e9))}" \
                if exe.restart_at_ns else ""
            return f"Backoff{left} (exited ({how}))"
        if state == types_pb2.EXECUTABLE_STATE_FAILED:
            return f"Failed (exited ({how}){when})"
        return f"Exited ({how}){when}"
    return enum_word(state, types_pb2.ExecutableState, "EXECUTABLE_STATE_").capitalize()


def created_text(exe: types_pb2.ExecutableInfo, now_ns: int) -> str:
    """docker's CREATED: ``5 minutes ago`` (this run's start)."""
    return f"{docker_duration((now_ns - exe.started_at_ns) / 1e9)} ago" if exe.started_at_ns else "-"
