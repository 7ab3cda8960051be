"""Rendering for every ``cellar`` command: ``-o table`` for people, ``-o json`` for scripts.

Commands build plain data (lists of dicts, dicts) and hand it here, so both formats always carry
the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

FORMATS = ("table", "json")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    return str(value)


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


def emit_rows(fmt: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print a list: a table, or a JSON array of objects."""
    click.echo(to_json(list(rows)) if fmt == "json" else table(rows, columns))


def emit_object(fmt: str, obj: Mapping[str, Any]) -> None:
    """Print one record: ``KEY: value`` lines, or a JSON object."""
    click.echo(to_json(dict(obj)) if fmt == "json" else key_values(obj))
