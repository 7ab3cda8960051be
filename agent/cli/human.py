"""How ``cellar`` shows times, durations and sizes to people (tables) and to scripts (``-o json``).

People get docker's and kubectl's words ("Up 5 minutes", "5m ago", "12.3MiB / 256MiB (4.8%)");
scripts get RFC 3339 times in UTC with their zone (``...Z``) and ``null`` for "none", never ``"-"``.
Pure functions of their arguments (``now_ns`` is a parameter), so the golden tests are exact.
"""

from __future__ import annotations

import time

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def rfc3339_ns(ts_ns: int) -> str:
    """``2026-12-07T22:43:15.123456789Z``: nanoseconds, UTC, the zone said."""
    seconds, nanos = divmod(ts_ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def rfc3339_or_none(ts_ns: int) -> str | None:
    """An RFC 3339 time, or None for 0 (the wire's "never")."""
    return rfc3339_ns(ts_ns) if ts_ns > 0 else None


def docker_duration(seconds: float) -> str:
    """docker's wording of a duration (go-units HumanDuration): "5 minutes", "About an hour"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // (24 * 7)} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{hours // (24 * 365)} years"


def short_duration(seconds: float) -> str:
    """kubectl's short duration (``5s``, ``4m10s``, ``25m``, ``3h5m``, ``2d4h``, ``40d``)."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 and days % 365 else f"{days // 365}y"


def ago(ts_ns: int, now_ns: int) -> str:
    """``5m ago`` (kubectl describe's ages); ``-`` for a zero time."""
    return f"{short_duration((now_ns - ts_ns) / 1e9)} ago" if ts_ns > 0 else "-"


def size(n: int | float) -> str:
    """``512B``, ``1.5KiB``, ``12.3MiB``, ``2GiB``: 1024-based as the sizes flags read them."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{int(value)}B"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text}{_UNITS[unit]}"


def usage(current: int, limit: int | None) -> str:
    """``12.3MiB / 256MiB (4.8%)``, or ``12.3MiB`` with no limit."""
    if not limit:
        return size(current)
    return f"{size(current)} / {size(limit)} ({100 * current / limit:.1f}%)"
