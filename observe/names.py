"""The names cellar gives to things on disk and in the kernel, defined once.

A cell is a '/'-separated path of DNS labels; an executable's name is one wider segment; each
executable lives in a leaf ``exe.<name>`` under its cell, both as a cgroup (:mod:`cells`) and as a
log directory (:mod:`observe.logstore`), and the inventory maps a socket's cgroup back to
``(cell, executable)`` by the same rule. A network-isolated cell's netns is
``/run/netns/<prefix><cell with '/' -> '.'>``.

This lives in ``observe`` because it is the lower of the two packages (``cells`` imports
``observe``, never the reverse) and both need it. Only predicates and constants here: each caller
raises its own error (``cells.errors.InvalidArgument`` with the field, ``observe.errors.InvalidName``).
"""

from __future__ import annotations

import hashlib
import os
import re

#: A cell path segment is a DNS label (RFC 1123): lowercase alnum and '-', 1-63 chars.
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: Executable (and netns) names: a little wider than a DNS label (operators use '_' and '.'), never
#: a path: no '/', and starting alphanumeric excludes '.' and '..'.
_SEGMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

MAX_CELL_NAME = 255
MAX_CELL_DEPTH = 8

#: Leaf of an executable inside its cell (cgroup and log directory). '.' is never part of a DNS
#: label, so executable leaves can never collide with a child cell of the same name.
EXE_PREFIX = "exe."

NETNS_DIR = "/run/netns"
#: Longest netns name cellar makes (``ip netns`` accepts longer; 63 keeps it a segment name).
MAX_NETNS_NAME = 63


def is_dns_label(segment: str) -> bool:
    return _DNS_LABEL.match(segment) is not None


def is_segment_name(name: str) -> bool:
    """1-63 of [A-Za-z0-9_.-], starting alphanumeric: an executable's or a netns's name."""
    return _SEGMENT_NAME.match(name) is not None


def netns_name(prefix: str, cell: str) -> str:
    """``<prefix><cell with '/' -> '.'>``, shortened with a hash when above the 63-char netns limit."""
    name = prefix + cell.replace("/", ".")
    if len(name) > MAX_NETNS_NAME:
        name = name[:52] + "-" + hashlib.sha1(cell.encode()).hexdigest()[:10]
    return name


def netns_path(name: str) -> str:
    """``/run/netns/<name>`` for any netns (also ones cellar did not make: the inventory reads
    those); names with ``/`` or ``..`` never reach the filesystem."""
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > 255:
        raise ValueError(f"bad netns name {name!r}")
    return os.path.join(NETNS_DIR, name)


def list_netns(prefix: str = "") -> list[str]:
    """Named netns under /run/netns starting with ``prefix``, sorted (no pyroute2 needed)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))
