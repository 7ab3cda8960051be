"""Rendering for every ``cellar`` command: ``-o table`` for people, ``-o json`` / ``-o yaml`` for scripts.

Commands build plain data (lists of dicts, dicts) and hand it here, so both formats always carry
the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

FORMATS = ("table", "json", "yaml")

#: ``ctx.meta`` key set when ``-o`` was given after the command (see agent.cli.with_habits).
OUTPUT_CHOSEN = "cellar.output_chosen"


def output_chosen(ctx: click.Context) -> bool:
    """Whether the user chose ``-o`` (flag, environment or config file) rather than taking the default:
    a stream meant for a terminal (``daemon-logs``) prints JSON into a pipe unless asked otherwise."""
    root = ctx.find_root()
    source = root.get_parameter_source("output")
    return bool(root.meta.get(OUTPUT_CHOSEN)) or source not in (None, ParameterSource.DEFAULT)


#: Control characters as escapes in a table: a workload's argv or reason with a newline or a terminal
#: escape must not draw a row or move the cursor of the operator's terminal.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): safe in one table cell."""
    return text.translate(_ESCAPES)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return printable(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Aligned columns with an upper-case header; ``columns`` picks and orders the keys."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    cells = [[c.upper() for c in cols]] + [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def key_values(obj: Mapping[str, Any]) -> str:
    width = max((len(k) for k in obj), default=0)
    return "\n".join(f"{k.upper() + ':':<{width + 2}}{_cell(v)}" for k, v in obj.items())


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def to_yaml(data: Any) -> str:
    """The same data as ``-o json``, in YAML (kubectl's ``-o yaml``); keys in their order."""
    import yaml  # only for -o yaml: a command's start-up does not pay for it

    return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False, allow_unicode=True,
                          width=1 << 16).rstrip("\n")


def structured(fmt: str) -> bool:
    """``-o json`` or ``-o yaml``: data for a program, not a table."""
    return fmt in ("json", "yaml")


def to_data(fmt: str, data: Any) -> str:
    """``data`` as ``-o json`` or ``-o yaml`` prints it."""
    return to_yaml(data) if fmt == "yaml" else to_json(data)


def stream_record(fmt: str, data: Any) -> str:
    """One record of a stream: an NDJSON line, or (``-o yaml``) a YAML document starting with ``---``."""
    return "---\n" + to_yaml(data) if fmt == "yaml" else ndjson(data)


def ndjson(data: Any) -> str:
    """One JSON object on one line: a stream's record (``events``, ``logs -f``, ``daemon-logs -f``)."""
    return json.dumps(data, separators=(",", ":"), default=str)


def emit_rows(fmt: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print a list: a table, or a JSON array of objects."""
    click.echo(to_data(fmt, list(rows)) if structured(fmt) else table(rows, columns))


def emit_object(fmt: str, obj: Mapping[str, Any]) -> None:
    """Print one record: ``KEY: value`` lines, or a JSON object."""
    click.echo(to_data(fmt, dict(obj)) if structured(fmt) else key_values(obj))
