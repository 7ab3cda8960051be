"""What an exec session (``cellar exec``, cells/exec.py) leaves on the host: its leaf cgroups and processes."""

from __future__ import annotations

import os
from typing import Any

from tests.support.cgroups import hierarchy_tops


def exec_leaves(api: Any) -> list[str]:
    """The exec leaves (``<cell>/_exec.<id>``) under ``api``'s cgroup root, one name per leaf whatever the
    hierarchies (``api``: a tests.support.api.Api)."""
    return sorted({d.split(":", 1)[1] for d in api.cgroup_dirs() if "/_exec." in d})


def leaf_pids(api: Any, leaf: str) -> list[int]:
    """The processes in the exec leaf ``leaf`` (as :func:`exec_leaves` names it)."""
    tops = hierarchy_tops(api.root)
    top = tops.get("unified") or next(iter(tops.values()))
    with open(os.path.join(top, leaf, "cgroup.procs")) as f:
        return [int(p) for p in f.read().split()]


def alive(pid: int) -> bool:
    """Neither gone nor a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] not in (b"Z", b"X")
    except OSError:
        return False
