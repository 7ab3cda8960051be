"""Option types of every ``cellar`` command: sizes, counts, times. One reading, :mod:`observe.units`
(the manifests of ``cellar apply`` read sizes there too), wrapped as click types whose errors name
the flag (``Invalid value for '--memory-max': '1x' is not a size like 512M, 1.5G or 4096``).

Times (``--since``/``--until``) as journalctl and kubectl accept them: a duration ago (``10m``,
``1h30m``, ``2d``, ``-1h``, ``1h ago``), ``now``, ``today``, ``yesterday``, ``tomorrow``, a date
(``2026-12-07``, midnight), a date and time (``2026-12-07 10:00``, ``2026-12-07T10:00:00.5``) or a time
today (``10:00``), each with or without a zone (``Z``, ``+02:00``; none = local time), or ``@EPOCH``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import click

from observe.units import DURATION_HELP, SIZE_HELP, parse_count, parse_duration_ns, parse_size

__all__ = ["DURATION_HELP", "SIZE_HELP", "Count", "CpuMax", "Duration", "Size", "Time", "parse_time"]

TIME_HELP = ("a duration ago (10m, 1h30m, 2d), a date (2026-12-07), a date and time (2026-12-07 10:00[:00]) "
             "or RFC 3339 time, with or without a zone (none = local time), today, yesterday, now or @EPOCH")


class Size(click.ParamType):
    """Bytes: ``512M`` (= MiB), ``1.5G``, ``4096``; with ``allow_max`` also ``max`` -> None (no limit)."""

    name = "size"

    def __init__(self, allow_max: bool = False) -> None:
        self.allow_max = allow_max

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_size(str(value), allow_max=self.allow_max)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Count(click.ParamType):
    """A whole number in [minimum, maximum]; with ``allow_max`` also ``max`` -> None (no limit)."""

    name = "count"

    def __init__(self, minimum: int = 0, maximum: int | None = None, allow_max: bool = False) -> None:
        self.minimum, self.maximum, self.allow_max = minimum, maximum, allow_max

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "N|max" if self.allow_max else "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        try:
            return parse_count(str(value), minimum=self.minimum, maximum=self.maximum, allow_max=self.allow_max)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(click.ParamType):
    """Seconds (a float) from ``2``, ``2.5``, ``500ms``, ``1m30s``, in [0, maximum] (``positive``: > 0)."""

    name = "duration"

    def __init__(self, maximum: float = 86400.0, positive: bool = False) -> None:
        self.maximum, self.positive = maximum, positive

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration_ns(str(value)) / 1e9
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if seconds > self.maximum or (self.positive and seconds <= 0) or seconds < 0:
            self.fail(f"{value!r}: must be {'more than 0' if self.positive else 'at least 0'} and at most "
                      f"{self.maximum:g} seconds", param, ctx)
        return seconds


class CpuMax(click.ParamType):
    """``QUOTA[/PERIOD]`` in microseconds (cgroup v2 cpu.max) -> (quota, period or None); ``max`` -> None."""

    name = "cpu_max"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "QUOTA[/PERIOD]|max"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, int | None] | None:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if text.lower() == "max":
            return None
        quota, sep, period = text.partition("/")
        try:
            q = parse_count(quota, minimum=1, maximum=2**53)
            p = parse_count(period, minimum=1, maximum=1_000_000) if sep else None
        except ValueError:
            self.fail(f"{text!r} is not QUOTA[/PERIOD] in microseconds (e.g. 50000/100000) or max", param, ctx)
        assert q is not None
        return q, p


class Time(click.ParamType):
    """A point in time as nanoseconds since the epoch (see :func:`parse_time`)."""

    name = "time"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AGO = re.compile(r"^(.*?)\s+ago$", re.IGNORECASE)
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE | re.ASCII)


def _ns(stamp: datetime) -> int:
    """An aware or naive (= local time) datetime -> ns since the epoch, exact to the microsecond."""
    aware = stamp if stamp.tzinfo is not None else stamp.astimezone()
    return ((aware - _EPOCH) // timedelta(microseconds=1)) * 1000


def _local_midnight(day: date) -> int:
    return _ns(datetime(day.year, day.month, day.day))


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A time as journalctl's ``--since`` reads it (and kubectl's durations) -> ns since the epoch."""
    stamp = _parse_time(text, now_ns)
    if not 0 <= stamp < 2**63:
        raise ValueError(f"{text!r} is outside 1970..2262")
    return stamp


def _parse_time(text: str, now_ns: int | None) -> int:
    value = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    word = value.lower()
    if word == "now":
        return now
    if word in ("today", "yesterday", "tomorrow"):
        today = datetime.fromtimestamp(now / 1e9).date()
        return _local_midnight(today + timedelta(days={"today": 0, "yesterday": -1, "tomorrow": 1}[word]))
    if value.startswith("@"):
        if not re.fullmatch(r"\d{1,12}(\.\d{0,9})?", value[1:], re.ASCII):
            raise ValueError(f"{text!r}: @ takes seconds since the epoch (@1765000000)")
        return int(Decimal(value[1:]) * 10**9)
    ago = _AGO.match(value)
    if ago or value[:1] in "+-" and value[1:2].isdigit():
        body = ago.group(1) if ago else value[1:]
        sign = 1 if value.startswith("+") and not ago else -1
        try:
            return now + sign * parse_duration_ns(body)
        except ValueError:
            raise ValueError(f"{text!r} is not a time: {DURATION_HELP}") from None
    if value[:1].isdigit() and re.search(r"[a-zµ]$", value, re.IGNORECASE) and not re.search(r"\d[Tt]\d", value):
        try:
            return now - parse_duration_ns(value)
        except ValueError:
            pass
    try:
        if _TIME_OF_DAY.match(value):
            day = datetime.fromtimestamp(now / 1e9).date().isoformat()
            return _ns(datetime.fromisoformat(f"{day}T{value.upper().replace('Z', '+00:00')}"))
        if len(value) <= 64:
            return _ns(datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", value)))
    except (ValueError, OverflowError):
        pass
    raise ValueError(f"{text!r} is not a time: {TIME_HELP}")
