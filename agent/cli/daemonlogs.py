"""``cellar daemon-logs``: cellard's own structured events, as ``journalctl -u cellard`` reads them.

On a terminal (or with ``-o table`` asked for): one line an event, local time, level, event, then the
fields as ``key=value``. Otherwise NDJSON: each event as the daemon logged it, one JSON object a line
(keys ``timestamp`` RFC 3339 UTC, ``level``, ``event``, then the event's own). ``--level`` keeps events at
that level or above, ``--since`` those from a time on, ``--tail N`` the last N of the history; ``-f``
goes on with live events. Filtering is the client's: the stream carries every event.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import click

from agent.cli.connection import Target
from agent.cli.output import output_chosen, printable, stream_record
from agent.cli.units import TIME_HELP, Time
from agent.metadata import HISTORY_METADATA_KEY
from proto.aurae import observe_pb2, observe_pb2_grpc

#: structlog's method names, least severe first ("exception" is logged as an error).
LEVELS = ("debug", "info", "warning", "error", "critical")
_RANK = {**{name: i for i, name in enumerate(LEVELS)}, "warn": 2, "exception": 3, "fatal": 4}


def level_rank(event: dict[str, Any]) -> int:
    return _RANK.get(str(event.get("level", "info")).lower(), 1)


def event_ns(event: dict[str, Any]) -> int | None:
    """The event's time (structlog's ISO ``timestamp``, UTC) in ns; None when missing or unreadable."""
    stamp = event.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1e9)
    except ValueError:
        return None


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n\t')) else text


def human_line(event: dict[str, Any]) -> str:
    """``2026-12-07 22:47:00.146 INFO     cell.allocated cell=web pid=42`` (local time)."""
    ns = event_ns(event)
    when = (datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ns is not None
            else str(event.get("timestamp", "-")))
    fields = " ".join(f"{k}={_value(v)}" for k, v in sorted(event.items())
                      if k not in ("timestamp", "level", "event"))
    line = f"{when} {str(event.get('level', '-')).upper():<8} {event.get('event', '')}"
    return printable(f"{line} {fields}" if fields else line)


def _parse(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {"event": line}
    return event if isinstance(event, dict) else {"event": line}


def select(events: Iterable[dict[str, Any]], min_level: int, since_ns: int | None) -> Iterator[dict[str, Any]]:
    """The events at ``min_level`` or above and (when given) from ``since_ns`` on."""
    for event in events:
        if level_rank(event) < min_level:
            continue
        if since_ns is not None:
            ns = event_ns(event)
            if ns is not None and ns < since_ns:
                continue
        yield event


@click.command("daemon-logs")
@click.option("-f", "--follow", is_flag=True, help="keep streaming new events")
@click.option("--level", "-p", "level", type=click.Choice(LEVELS, case_sensitive=False), default="debug",
              show_default=True, help="only events at this level or above (journalctl -p)")
@click.option("--since", type=Time(), help=f"only events from TIME on: {TIME_HELP}")
@click.option("--tail", "-n", type=click.IntRange(0, 2**32), help="only the last N events of the history")
@click.pass_context
def daemon_logs(ctx: click.Context, follow: bool, level: str, since: int | None, tail: int | None) -> None:
    """cellard's own structured events: recent history, then live with -f (human on a terminal, else NDJSON)."""
    target: Target = ctx.obj
    human = target.output == "table" and (sys.stdout.isatty() or output_chosen(ctx))
    show = human_line if human else functools.partial(stream_record, "yaml" if target.output == "yaml" else "json")
    min_level = _RANK[level.lower()]
    with target.channel() as channel:
        stub = observe_pb2_grpc.ObserveStub(channel)
        stream = stub.GetAuraeDaemonLogStream(observe_pb2.GetAuraeDaemonLogStreamRequest())
        # The server announces how many history events come first (initial metadata), so a
        # non-following read knows where history ends.
        history = int(dict(stream.initial_metadata()).get(HISTORY_METADATA_KEY, "0"))
        try:
            past: deque[dict[str, Any]] = deque(maxlen=tail) if tail is not None else deque()
            items = iter(stream)
            for _ in range(history):
                item = next(items, None)
                if item is None:
                    break
                past.extend(select([_parse(item.line)], min_level, since))
            for event in past:
                click.echo(show(event))
            if follow:
                for item in items:
                    for event in select([_parse(item.line)], min_level, since):
                        click.echo(show(event))
        except KeyboardInterrupt:
            pass
        finally:
            stream.cancel()
