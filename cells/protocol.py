"""The supervisor's wire protocol: newline-delimited JSON over a Unix stream socket.

One request per connection (``{"op": ..., "args": {...}}``) answered by one reply
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "message", "field"}}``).
An ``events`` request is answered by ``{"ok": true}`` and then one ``{"event", "executable",
"dropped"}`` line per executable state change until either side closes; a ``log_events`` request
likewise by ``{"ok": true}`` and then one ``{"log": {event}}`` line per warning or error the supervisor
logs (``{"event": "daemonlog.dropped", "count": N}`` in place of what a slow reader missed). Errors carry the
:mod:`cells.errors` class name so the client re-raises exactly what the runtime raised.
JSON, not pickle: the socket is root-only, but a parser must never execute what it reads.
"""

from __future__ import annotations

import json
from typing import Any

from cells import errors
from cells.spec import CellLimits, CellSpec, ExecutableSpec, HealthCheck, Mount, RestartPolicy, Veth
from cells.state import to_dict

#: A request or reply line longer than this is a protocol violation (argv+env are bounded to 128 KiB;
#: a List of 10000 cells stays well below).
MAX_LINE = 64 * 1024 * 1024

_ERROR_TYPES: dict[str, type[errors.CellError]] = {
    cls.__name__: cls
    for cls in (
        errors.CellError,
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.ResourceExhausted,
        errors.RuntimeFailure,
    )
}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise errors.InvalidArgument("request", "must be a JSON object")
    return message


def request(op: str, **args: Any) -> bytes:
    return encode({"op": op, "args": to_dict(args)})


def ok(result: Any = None) -> bytes:
    return encode({"ok": True, "result": to_dict(result)})


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.InvalidArgument):
        return {"type": "InvalidArgument", "message": exc.rule, "field": exc.field}
    if isinstance(exc, errors.CellError):  # a subclass travels as its nearest known class
        known = next(cls.__name__ for cls in type(exc).__mro__ if cls.__name__ in _ERROR_TYPES)
        return {"type": known, "message": str(exc), "field": ""}
    return {"type": "RuntimeFailure", "message": f"internal error: {type(exc).__name__}: {exc}", "field": ""}


def failure(exc: BaseException) -> bytes:
    return encode({"ok": False, "error": error_to_dict(exc)})


def error_from_dict(d: dict[str, Any]) -> errors.CellError:
    cls = _ERROR_TYPES.get(str(d.get("type")), errors.RuntimeFailure)
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(str(d.get("field", "")), str(d.get("message", "")))
    return cls(str(d.get("message", "")))


def unwrap(reply: dict[str, Any]) -> Any:
    """The result of a reply, or raise the error it carries."""
    if reply.get("ok"):
        return reply.get("result")
    raise error_from_dict(reply.get("error") or {})


# -- specs: the inverse of cells.state.to_dict for the request types --------------------------------


def _require_dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.InvalidArgument(field, "must be an object")
    return value


def _build(cls: Any, data: dict[str, Any], field: str) -> Any:
    try:
        return cls(**data)
    except TypeError as exc:
        raise errors.InvalidArgument(field, f"malformed: {exc}") from None


def _check_types(obj: Any, field: str, types: dict[str, tuple[type, ...]]) -> None:
    for name, allowed in types.items():
        value = getattr(obj, name)
        if isinstance(value, bool) and bool not in allowed:
            raise errors.InvalidArgument(f"{field}.{name}", "has the wrong type")
        if not isinstance(value, allowed):
            raise errors.InvalidArgument(f"{field}.{name}", "has the wrong type")


_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))


def cell_spec_from_dict(data: Any) -> CellSpec:
    data = dict(_require_dict(data, "cell"))
    limits = _build(
        CellLimits, dict(_require_dict(data.pop("limits", None) or {}, "cell.limits")), "cell.limits"
    )
    _check_types(
        limits,
        "cell",
        {
            f: _OPT_STR if f.startswith("cpuset") else _OPT_INT
            for f in CellLimits.__dataclass_fields__  # noqa: SIM118
        },
    )
    veth_data = data.pop("veth", None)
    veth = None if veth_data is None else _build(Veth, _require_dict(veth_data, "cell.veth"), "cell.veth")
    if veth is not None:
        _check_types(veth, "cell.veth", {f: (str,) for f in Veth.__dataclass_fields__})  # noqa: SIM118
    mounts_data = data.pop("mounts", None) or []
    if not isinstance(mounts_data, list | tuple):
        raise errors.InvalidArgument("cell.mounts", "must be a list")
    mounts = tuple(_build(Mount, _require_dict(m, "cell.mounts"), "cell.mounts") for m in mounts_data)
    for i, mount in enumerate(mounts):
        _check_types(mount, f"cell.mounts[{i}]", {"source": (str,), "target": (str,), "read_only": (bool,)})
    for key in ("cap_add", "cap_drop"):
        data[key] = _str_tuple(data.get(key) or (), f"cell.{key}")
    spec = _build(CellSpec, {**data, "limits": limits, "veth": veth, "mounts": mounts}, "cell")
    _check_types(
        spec,
        "cell",
        {
            "name": (str,),
            "isolate_process": (bool,),
            "isolate_network": (bool,),
            "privileged": (bool,),
            "grant_role": (str,),
            "rootfs": (str,),
            "keep_data": (bool,),
        },
    )
    return spec


def _str_tuple(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidArgument(field, "must be a list of strings")
    return tuple(value)


def executable_spec_from_dict(data: Any) -> ExecutableSpec:
    data = dict(_require_dict(data, "executable"))
    argv = data.get("argv") or []
    env = data.get("env") or []
    if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
        raise errors.InvalidArgument("executable.argv", "must be a list of strings")
    if not isinstance(env, list | tuple) or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in env
    ):
        raise errors.InvalidArgument("executable.env", "must be a list of [name, value] pairs")
    data["argv"] = tuple(argv)
    data["env"] = tuple((k, v) for k, v in env)
    for key in ("cap_add", "cap_drop"):
        data[key] = _str_tuple(data.get(key) or (), f"executable.{key}")
    data["restart"] = restart_policy_from_dict(data.get("restart") or {})
    data["health"] = health_check_from_dict(data.get("health") or {})
    spec = _build(ExecutableSpec, data, "executable")
    _check_types(
        spec,
        "executable",
        {
            "cell_name": (str,),
            "name": (str,),
            "command": (str,),
            "description": (str,),
            "cwd": (str,),
            "uid": _OPT_INT,
            "gid": _OPT_INT,
            "privileged": (bool,),
            "stdin": (bool,),
            "tty": (bool,),
        },
    )
    return spec


def restart_policy_from_dict(data: Any, field: str = "executable.restart") -> RestartPolicy:
    """The to_dict form of a :class:`RestartPolicy` (types checked by its ``validate``)."""
    policy: RestartPolicy = _build(RestartPolicy, _require_dict(data, field), field)
    return policy.validate(field)


def health_check_from_dict(data: Any, field: str = "executable.health") -> HealthCheck:
    """The to_dict form of a :class:`HealthCheck` (types checked by its ``validate``)."""
    data = dict(_require_dict(data, field))
    command = data.get("command")
    if command is not None:
        data["command"] = _str_tuple(command, f"{field}.command")
    check: HealthCheck = _build(HealthCheck, data, field)
    return check.validate(field)
