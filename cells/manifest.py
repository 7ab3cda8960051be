"""The declarative file of ``cellar apply``: cells and their executables, in TOML (or JSON).

::

    [cells.web]                         # the table key is the cell's name ("web", or "team/web")
    isolate_process = true              # every CellSpec field but name (cells/spec.py)
    limits = { memory_max = "256M", pids_max = 200 }    # sizes: bytes, 256M = 256Mi, 1.5G; or "max"

    [cells.web.executables.server]      # every ExecutableSpec field but cell_name and name
    argv = ["python3", "-m", "http.server", "8080"]
    env = { PORT = "8080" }
    restart = "on-failure"              # or { mode = "on-failure", delay_s = 1, max_delay_s = 60 }

JSON has the same shape (``{"cells": {"web": {...}}}``). Parsing validates everything the runtime
would (the specs' own ``validate``) and rejects unknown keys, so a typo is an error, not a silently
ignored setting. Every error is one :class:`ManifestError` naming the file, the line and the key:
tomllib reports no positions for values, so :func:`_locate` finds the line of a key path by reading
the file's table headers and ``key =`` lines (inline tables: the line of the nearest enclosing key).

The same module is the CLI's (to fail before sending) and cellard's (the authority): no server import.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cells.errors import CellError, InvalidArgument
from cells.protocol import cell_spec_from_dict, executable_spec_from_dict
from cells.spec import CellLimits, CellSpec, ExecutableSpec, HealthCheck, Mount, RestartPolicy, Veth
from cells.state import to_dict
from observe.units import parse_count, parse_size

#: Bounds of one file: a node's cells, not a fleet's.
MAX_BYTES = 1 << 20
MAX_CELLS = 256
MAX_EXECUTABLES = 64

_CELL_KEYS = frozenset(f.name for f in dataclasses.fields(CellSpec)) - {"name"} | {"executables"}
_EXE_KEYS = frozenset(f.name for f in dataclasses.fields(ExecutableSpec)) - {"cell_name", "name"}
_NESTED_KEYS = {
    "limits": frozenset(f.name for f in dataclasses.fields(CellLimits)),
    "veth": frozenset(f.name for f in dataclasses.fields(Veth)),
    "restart": frozenset(f.name for f in dataclasses.fields(RestartPolicy)),
    "health": frozenset(f.name for f in dataclasses.fields(HealthCheck)),
}
_MOUNT_KEYS = frozenset(f.name for f in dataclasses.fields(Mount))
_SIZE_FIELDS = frozenset({"memory_min", "memory_low", "memory_high", "memory_max", "swap_max"})
#: Limits the kernel can lift ("max"): the string "max" leaves them unset, the cgroup's default.
_MAX_FIELDS = frozenset({"memory_high", "memory_max", "swap_max", "pids_max"})


class ManifestError(InvalidArgument):
    """One error in a manifest: ``file:line: key: rule`` (line 0 when unknown)."""

    def __init__(self, file: str, line: int, key: str, rule: str) -> None:
        super().__init__(key, rule)
        self.file, self.line, self.key = file, line, key
        self.args = (f"{file}:{line}: {key}: {rule}" if line else f"{file}: {key}: {rule}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class CellManifest:
    """One cell as the file describes it, with its executables in file order."""

    spec: CellSpec
    executables: tuple[ExecutableSpec, ...] = ()

    def executable(self, name: str) -> ExecutableSpec | None:
        return next((e for e in self.executables if e.name == name), None)


@dataclass(frozen=True)
class Manifest:
    """The cells of one file, parents before children (the order to create them in)."""

    cells: tuple[CellManifest, ...]

    def names(self) -> list[str]:
        return [c.spec.name for c in self.cells]


def parse(text: str | bytes, file: str = "<manifest>", fmt: str = "") -> Manifest:
    """``text`` (TOML, or JSON when ``fmt`` is "json" or the file name ends in .json) -> a Manifest."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise ManifestError(file, 0, "file", f"is {len(text)} bytes, at most {MAX_BYTES}")
        try:
            text = text.decode()
        except UnicodeDecodeError as exc:
            raise ManifestError(file, 0, "file", f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(text.encode()) > MAX_BYTES:
        raise ManifestError(file, 0, "file", f"is larger than {MAX_BYTES} bytes")
    is_json = fmt == "json" or (not fmt and file.endswith(".json"))
    data = _load_json(text, file) if is_json else _load_toml(text, file)
    try:
        return _manifest(data)
    except _KeyError as exc:
        raise ManifestError(file, _locate(text, exc.path, is_json), dotted(exc.path), exc.rule) from None


def dotted(path: tuple[str, ...]) -> str:
    """A key path as TOML writes it: ``cells."team/web".limits``."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in path)


def _load_toml(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else max(1, text.count("\n") + 1)  # "(at end of document)"
        rule = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc)) or "is not valid TOML"
        raise ManifestError(file, line, "file", rule) from None


def _load_json(text: str, file: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(file, exc.lineno, "file", exc.msg) from None
    except RecursionError:
        raise ManifestError(file, 0, "file", "is nested too deeply") from None
    if not isinstance(data, dict):
        raise ManifestError(file, 1, "file", "must be a JSON object")
    return data


class _KeyError(Exception):
    def __init__(self, path: tuple[str, ...], rule: str) -> None:
        super().__init__(rule)
        self.path, self.rule = path, rule


def _manifest(data: dict[str, Any]) -> Manifest:
    unknown = sorted(set(data) - {"cells"})
    if unknown:
        raise _KeyError((unknown[0],), "is not a known key (the file has one table: cells)")
    cells = data.get("cells", {})
    if not isinstance(cells, dict):
        raise _KeyError(("cells",), "must be a table of cells by name")
    if len(cells) > MAX_CELLS:
        raise _KeyError(("cells",), f"has {len(cells)} cells, at most {MAX_CELLS}")
    out = [_cell(name, body) for name, body in cells.items()]
    out.sort(key=lambda c: tuple(c.spec.name.split("/")))  # parents first
    return Manifest(tuple(out))


def _cell(name: str, body: Any) -> CellManifest:
    where = ("cells", name)
    if not isinstance(body, dict):
        raise _KeyError(where, "must be a table")
    _known(body, _CELL_KEYS, where)
    data = {k: v for k, v in body.items() if k != "executables"}
    for key in ("limits", "veth"):
        if key in data:
            _known(_table(data[key], (*where, key)), _NESTED_KEYS[key], (*where, key))
    if isinstance(data.get("limits"), dict):
        data["limits"] = {k: _size(v, (*where, "limits", k)) if k in _SIZE_FIELDS | _MAX_FIELDS else v
                          for k, v in data["limits"].items()}
    for i, mount in enumerate(data.get("mounts") or []):
        if isinstance(mount, dict):
            _known(mount, _MOUNT_KEYS, (*where, "mounts", str(i)))
    spec = _validated(lambda: cell_spec_from_dict({**data, "name": name}).validate(), where)
    exes = _table(body.get("executables", {}), (*where, "executables"))
    if len(exes) > MAX_EXECUTABLES:
        raise _KeyError((*where, "executables"), f"has {len(exes)} executables, at most {MAX_EXECUTABLES}")
    return CellManifest(spec, tuple(_executable(name, exe, exe_body) for exe, exe_body in exes.items()))


def _executable(cell: str, name: str, body: Any) -> ExecutableSpec:
    where = ("cells", cell, "executables", name)
    _known(_table(body, where), _EXE_KEYS, where)
    data = dict(body)
    env = data.get("env")
    if env is not None:
        env = _table(env, (*where, "env"))
        for key, value in env.items():
            if not isinstance(value, str):
                raise _KeyError((*where, "env", key), "must be a string")
        data["env"] = [[k, v] for k, v in env.items()]
    restart = data.get("restart")
    if isinstance(restart, str):
        data["restart"] = {"mode": restart}
    elif restart is not None:
        _known(_table(restart, (*where, "restart")), _NESTED_KEYS["restart"], (*where, "restart"))
    if data.get("health") is not None:
        _known(_table(data["health"], (*where, "health")), _NESTED_KEYS["health"], (*where, "health"))
    return _validated(lambda: executable_spec_from_dict({**data, "cell_name": cell, "name": name}).validate(),
                      where)


def _validated(build: Any, where: tuple[str, ...]) -> Any:
    """Run a spec's own parsing and validation; its error's field (``cell.limits.memory_max``,
    ``executable.argv``) becomes a key path under ``where``."""
    try:
        return build()
    except InvalidArgument as exc:
        parts = [p for p in re.split(r"[.\[\]]+", exc.field) if p][1:]  # drop "cell"/"executable"
        if parts[:1] == ["name"]:
            parts = []  # the name is the table key itself
        elif parts[:1] and parts[0] in _NESTED_KEYS["limits"]:
            parts = ["limits", *parts]  # CellLimits names its fields without "limits"
        raise _KeyError((*where, *parts), exc.rule) from None
    except CellError as exc:
        raise _KeyError(where, str(exc)) from None


def _known(body: dict[str, Any], keys: frozenset[str], where: tuple[str, ...]) -> None:
    for key in body:
        if key not in keys:
            raise _KeyError((*where, key), f"is not a known key (known: {', '.join(sorted(keys))})")


def _table(value: Any, where: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _KeyError(where, "must be a table")
    return value


def _size(value: Any, where: tuple[str, ...]) -> Any:
    """A size as the CLI reads it (observe.units: 512M = 512 MiB, 1.5G, 4096), or "max" where the
    kernel has it (None: left unset). Numbers pass on to the spec's validation."""
    if not isinstance(value, str):
        return value
    try:
        if where[-1] == "pids_max":
            return parse_count(value, allow_max=True)
        return parse_size(value, allow_max=where[-1] in _MAX_FIELDS)
    except ValueError as exc:
        raise _KeyError(where, str(exc)) from None


# -- where a key is: the line of a key path --------------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*")
_HEADER = re.compile(rf"^\s*\[\[?({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(json.loads(p) if p.startswith('"') else p.strip("'") for p in parts)


def _locate(text: str, path: tuple[str, ...], is_json: bool) -> int:
    """The 1-based line that best matches ``path``: the deepest match, first occurrence (0: none)."""
    best, best_depth = 0, 0
    for line_no, candidate in (_json_keys(text) if is_json else _toml_keys(text)):
        depth = 0
        while depth < min(len(candidate), len(path)) and candidate[depth] == path[depth]:
            depth += 1
        # the key itself or an enclosing one; or, for a table only implied by its children
        # ([cells.web] implies cells), its first child
        if (depth == len(candidate) or depth == len(path)) and depth > best_depth:
            best, best_depth = line_no, depth
    return best


def _toml_keys(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            yield number, table
            continue
        assign = _ASSIGN.match(line)
        if assign:
            yield number, (*table, *_split_key(assign.group(1)))


def _json_keys(text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Key paths of a JSON document by line: a small scanner over strings, braces and colons."""
    stack: list[str | None] = []  # the key of each open object/array (None for array items)
    pending: str | None = None
    line = 1
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"\s*:?|[{}\[\]\n]', text):
        t = token.group(0)
        if t == "\n":
            line += 1
        elif t in "{[":
            stack.append(pending)
            pending = None
        elif t in "}]":
            if stack:
                stack.pop()
        elif t.endswith(":"):
            key = json.loads(t[:-1].rstrip())
            pending = key
            yield line, (*(k for k in stack if k is not None), key)


# -- the other way: specs -> the file's form (``cellar get CELL -o toml``) --------------------------


def cell_table(spec: CellSpec, executables: list[ExecutableSpec]) -> dict[str, Any]:
    """The ``cells.<name>`` table of ``spec`` and its executables, defaults left out."""
    out = _non_default(to_dict(spec), to_dict(CellSpec(spec.name)))
    out.pop("name", None)
    exes = {}
    for exe in executables:
        table = _non_default(to_dict(exe), to_dict(ExecutableSpec(exe.cell_name, exe.name)))
        table.pop("cell_name", None)
        table.pop("name", None)
        if "env" in table:
            table["env"] = dict(table["env"])
        exes[exe.name] = table
    if exes:
        out["executables"] = exes
    return out


def _non_default(data: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict):
            nested = _non_default(value, default[key])
            if nested:
                out[key] = nested
        elif value != default.get(key) and value is not None:
            out[key] = value
    return out
