"""Sizes, counts and durations as people write them: the one reading of the CLI and of manifests.

Sizes are read as docker (``--memory``) and systemd (``MemoryMax=``) read them: ``K M G T P`` in
either case are binary (1024-based), so are ``Ki Mi Gi Ti Pi``; an optional ``B`` (``512MB``,
``1KiB``); decimals (``1.5G`` = 1.5 GiB, rounded down to a byte); a bare number is bytes.
``max`` (also systemd's ``infinity`` and docker's ``-1``) means "no limit" where the kernel has
one: the caller gets ``None``, i.e. the limit is left unset and the cgroup keeps its default,
which for memory.max, memory.high, swap.max and pids.max is ``max``.

Durations: ``90s``, ``10m``, ``1h30m``, ``2d``, ``1.5h``, ``1h 30m`` (systemd's spelling with
spaces), units ``ns us ms s m h d w`` (also ``µs``, ``sec``, ``min``, ``hr``); a bare number is
seconds.

Every function raises :class:`ValueError` with a message that says what is accepted, and nothing
else, whatever the input: callers name the field or flag.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_SIZE = 2**62  # bytes: what the cell limits accept (cells.spec), well inside a uint64
UNLIMITED = frozenset({"max", "infinity", "-1"})

_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(i)?)?(b)?$", re.IGNORECASE | re.ASCII)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}

SIZE_HELP = "bytes, or K M G T (1024-based; also Ki Mi Gi Ti, an optional B, decimals: 512M, 1.5G)"


def parse_size(text: str, *, allow_max: bool = False) -> int | None:
    """``512M``, ``512Mi``, ``1.5G``, ``4096``, ``1KiB`` -> bytes; ``max`` -> None when ``allow_max``."""
    value = str(text).strip()
    if value.lower() in UNLIMITED:
        if allow_max:
            return None
        raise ValueError(f"{text!r}: this limit has no 'max' (give a size like 512M)")
    found = _SIZE.match(value) if len(value) <= 64 else None
    if not found:
        accepted = "a size like 512M, 1.5G or 4096" + (", or max" if allow_max else "")
        raise ValueError(f"{text!r} is not {accepted}")
    number, unit = found.group(1), (found.group(2) or "").lower()
    try:
        size = int(Decimal(number) * 1024 ** _POWER[unit])
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        raise ValueError(f"{text!r} is not a size") from None
    if not unit and "." in number and Decimal(number) != size:
        raise ValueError(f"{text!r}: a fraction of a byte (give a unit: 1.5K)")
    if size > MAX_SIZE:
        raise ValueError(f"{text!r} is too large (at most 4P)")
    return size


def parse_count(text: str, *, minimum: int = 0, maximum: int | None = None, allow_max: bool = False) -> int | None:
    """A whole number in [minimum, maximum]; ``max`` (``infinity``, ``-1``) -> None when ``allow_max``."""
    value = str(text).strip()
    if allow_max and value.lower() in UNLIMITED:
        return None
    if not re.fullmatch(r"[+-]?\d{1,19}", value, re.ASCII):
        raise ValueError(f"{text!r} is not a whole number" + (" or max" if allow_max else ""))
    count = int(value)
    if count < minimum or (maximum is not None and count > maximum):
        bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{text!r}: must be {bounds}" + (" (or max for no limit)" if allow_max else ""))
    return count


_DURATION_UNITS_NS = {
    "ns": 1, "nsec": 1, "us": 1_000, "µs": 1_000, "usec": 1_000, "ms": 1_000_000, "msec": 1_000_000,
    "s": 10**9, "sec": 10**9, "second": 10**9, "seconds": 10**9,
    "m": 60 * 10**9, "min": 60 * 10**9, "minute": 60 * 10**9, "minutes": 60 * 10**9,
    "h": 3600 * 10**9, "hr": 3600 * 10**9, "hour": 3600 * 10**9, "hours": 3600 * 10**9,
    "d": 86400 * 10**9, "day": 86400 * 10**9, "days": 86400 * 10**9,
    "w": 7 * 86400 * 10**9, "week": 7 * 86400 * 10**9, "weeks": 7 * 86400 * 10**9,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)\s*", re.IGNORECASE | re.ASCII)
MAX_DURATION_NS = 100 * 365 * 86400 * 10**9  # a century: beyond any log or deadline

DURATION_HELP = "a duration: 90s, 10m, 1h30m, 2d (units ns us ms s m h d w; a bare number is seconds)"


def parse_duration_ns(text: str) -> int:
    """``1h30m``, ``2d``, ``90s``, ``1.5h``, ``1h 30m``, ``45`` (seconds) -> nanoseconds."""
    value = str(text).strip()
    if not value or len(value) > 64:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 1h30m or 2d")
    total = Decimal(0)
    pos = 0
    while pos < len(value):
        found = _PART.match(value, pos)
        unit = found.group(2) if found else ""
        scale = _DURATION_UNITS_NS.get(unit.lower()) if found else None
        if found and not unit and found.end() == len(value) and pos == 0:
            scale = 10**9  # a bare number: seconds, as systemd reads it
        if not found or scale is None:
            raise ValueError(f"{text!r} is not a duration like 90s, 10m, 1h30m or 2d")
        total += Decimal(found.group(1)) * scale
        pos = found.end()
    if total > MAX_DURATION_NS:
        raise ValueError(f"{text!r} is too long (at most 100 years)")
    return int(total)
