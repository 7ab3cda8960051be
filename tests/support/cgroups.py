"""Where a test's cgroups live on this host, so one test checks the right files on either kind.

* pure v2 (every controller on ``/sys/fs/cgroup``, the VM of packaging/v2vm/run-tests.sh): a cell
  is one directory, ``/sys/fs/cgroup/<root>/<cell>``, and its limits are v2 files there.
* hybrid (the CI machine): membership, kill and freeze in ``/sys/fs/cgroup/unified/<root>/<cell>``,
  limits in v1 hierarchies ``/sys/fs/cgroup/<controller>/<root>/<cell>``.

The answer comes from the host's mounts, not from cellard, so a daemon that misjudges the host fails.
"""

from __future__ import annotations

import functools
import os

from cells.cgroup import parse_mountinfo
from tests.support.cleanup import CGROUP_MOUNT


@functools.cache
def host_mode() -> str:
    """``"v2"`` or ``"hybrid"``: what cellard's Info must report on this host."""
    with open("/proc/self/mountinfo") as f:
        mounts = {m.mountpoint: m.fstype for m in parse_mountinfo(f.read())}
    if mounts.get(CGROUP_MOUNT) == "cgroup2":
        return "v2"
    if mounts.get(os.path.join(CGROUP_MOUNT, "unified")) == "cgroup2":
        return "hybrid"
    return "legacy"


def pure_v2() -> bool:
    return host_mode() == "v2"


def unified_dir(root: str, cell: str = "") -> str:
    """A cell's directory in the v2 hierarchy (membership, cgroup.kill, cgroup.freeze; on v2 also limits)."""
    top = CGROUP_MOUNT if pure_v2() else os.path.join(CGROUP_MOUNT, "unified")
    return os.path.join(top, root, cell) if cell else os.path.join(top, root)


def hierarchy_tops(root: str) -> dict[str, str]:
    """``{hierarchy: <root>'s directory in it}`` for every hierarchy (one, ``unified``, on pure v2)."""
    if pure_v2():
        return {"unified": unified_dir(root)}
    return {h: os.path.join(CGROUP_MOUNT, h, root) for h in sorted(os.listdir(CGROUP_MOUNT))
            if os.path.isdir(os.path.join(CGROUP_MOUNT, h))}


def read_file(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()
