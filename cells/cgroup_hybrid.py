"""Hybrid hosts: v2 (``/sys/fs/cgroup/unified``) for membership/kill/freeze/events, v1 for limits.

On such hosts the controllers are bound to v1 hierarchies and the unified hierarchy has none, so a
cell exists once in the unified tree and once in each v1 hierarchy cellar uses (cpu, cpuacct,
cpuset, memory, pids; co-mounted ones like ``cpu,cpuacct`` count once). A process joins all of
them before exec (:meth:`procs_files`).

Limit mapping (v2 field -> v1 file):

* cpu_weight -> ``cpu.shares`` via :func:`cells.spec.weight_to_cpu_shares` (runc's classic linear map)
* cpu_max_quota_us/period -> ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (period default 100000)
* cpuset_cpus/mems -> ``cpuset.cpus`` / ``cpuset.mems``; a new v1 cpuset group starts empty and
  refuses tasks, so both are copied from the parent at creation
* memory_max -> ``memory.limit_in_bytes``; swap_max -> ``memory.memsw.limit_in_bytes`` =
  memory_max + swap_max (v1 limits memory+swap together), only where swap accounting exists
* pids_max -> ``pids.max``
* memory_min, memory_low, memory_high: no v1 equivalent (``memory.soft_limit_in_bytes`` is only a
  reclaim hint, not a throttle) -> FailedPrecondition instead of silently weaker behaviour.

Files are written directly rather than through cgroupspy: every write here is a single value into a
known file, and cgroupspy would add a directory walk and its v1 quirks without removing any code.
"""

from __future__ import annotations

import contextlib
import os

from cells.cgroup import CgroupBackend, Mount, read_keyed, read_pressure, read_text, write_text
from cells.errors import FailedPrecondition, RuntimeFailure
from cells.spec import CellLimits, weight_to_cpu_shares
from cells.state import CellStats

#: The v1 controllers cellar needs, in the order their hierarchies are joined.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")
DEFAULT_CFS_PERIOD_US = 100_000

#: Fields with no v1 equivalent, and why.
_UNSUPPORTED = {
    "memory_min": "memory.min",
    "memory_low": "memory.low",
    "memory_high": "memory.high (memory.soft_limit_in_bytes is a reclaim hint, not a throttle)",
}


def v1_hierarchies(mounts: list[Mount], controllers: tuple[str, ...] = CONTROLLERS) -> dict[str, str]:
    """controller -> mount point of its v1 hierarchy (co-mounted controllers share one)."""
    out: dict[str, str] = {}
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        for controller in controllers:
            if controller in m.super_options and controller not in out:
                out[controller] = m.mountpoint
    return out


class HybridBackend(CgroupBackend):
    mode = "hybrid"
    limits_v2 = False

    def __init__(self, root: str, v1_roots: dict[str, str]) -> None:
        """``v1_roots``: controller -> cellar's root directory in that controller's hierarchy."""
        super().__init__(root)
        self.v1_roots = v1_roots
        self._distinct = list(dict.fromkeys(v1_roots.values()))
        self._cpuset_prefix = v1_roots["cpuset"] + "/"

    @classmethod
    def setup(cls, mount: str, root_name: str, mounts: list[Mount]) -> HybridBackend:
        hierarchies = v1_hierarchies(mounts)
        missing = [c for c in CONTROLLERS if c not in hierarchies]
        if missing:
            raise FailedPrecondition(f"hybrid cgroups without v1 controller(s) {', '.join(missing)}")
        backend = cls(
            os.path.join(mount, "unified", root_name),
            {c: os.path.join(point, root_name) for c, point in hierarchies.items()},
        )
        for directory in (backend.root, *backend._distinct):
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o755)
                backend._init_dir(directory)
        # The kernel copies cpus and mems into each new cpuset below (cells made before this flag
        # inherit none: _init_dir still copies for them), so a leaf's _init_dir is one read, not six
        # file operations. Children inherit the flag.
        with contextlib.suppress(OSError):
            write_text(os.path.join(backend.v1_roots["cpuset"], "cgroup.clone_children"), "1")
        # Limits of a cell must cover its executables' leaves: make v1 memory hierarchical.
        with contextlib.suppress(OSError):
            if read_text(os.path.join(backend.v1_roots["memory"], "memory.use_hierarchy")).strip() != "1":
                write_text(os.path.join(backend.v1_roots["memory"], "memory.use_hierarchy"), "1")
        return backend

    def _v1_paths(self, rel: str) -> list[str]:
        return [os.path.join(d, rel) if rel else d for d in self._distinct]

    def _v1(self, controller: str, rel: str, name: str) -> str:
        base = self.v1_roots[controller]
        return os.path.join(base, rel, name) if rel else os.path.join(base, name)

    def _init_dir(self, directory: str) -> None:
        if directory.startswith(self._cpuset_prefix) or directory == self.v1_roots["cpuset"]:
            # With cgroup.clone_children (see setup) the kernel filled both, cpus and mems together.
            if read_text(os.path.join(directory, "cpuset.cpus")).strip() and read_text(
                os.path.join(directory, "cpuset.mems")
            ).strip():
                return
            parent = os.path.dirname(directory)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not read_text(os.path.join(directory, name)).strip():
                    write_text(os.path.join(directory, name), read_text(os.path.join(parent, name)).strip())

    def set_limits(self, rel: str, limits: CellLimits) -> None:
        limits.validate()
        self.unified_path(rel)  # validates rel
        for field, what in _UNSUPPORTED.items():
            if getattr(limits, field) is not None:
                raise FailedPrecondition(
                    f"cell.{field}: this host (hybrid cgroups, v1 memory controller) has no {what}"
                )
        memsw = self._v1("memory", rel, "memory.memsw.limit_in_bytes")
        if limits.swap_max is not None:
            if limits.memory_max is None:
                raise FailedPrecondition(
                    "cell.swap_max: on this host (v1 memory+swap limit) swap_max needs memory_max"
                )
            if not os.path.exists(memsw):
                raise FailedPrecondition("cell.swap_max: this host has no swap accounting (memory.memsw.*)")
        if not os.path.isdir(self.unified_path(rel)):
            raise FailedPrecondition(f"cgroup {rel!r} does not exist")

        if limits.cpu_weight is not None:
            self._write_limit(
                self._v1("cpu", rel, "cpu.shares"), str(weight_to_cpu_shares(limits.cpu_weight)), "cpu_weight"
            )
        if limits.cpu_max_quota_us is not None:
            period = limits.cpu_max_period_us or DEFAULT_CFS_PERIOD_US
            self._write_limit(self._v1("cpu", rel, "cpu.cfs_period_us"), str(period), "cpu_max_period_us")
            self._write_limit(
                self._v1("cpu", rel, "cpu.cfs_quota_us"), str(limits.cpu_max_quota_us), "cpu_max_quota_us"
            )
        if limits.cpuset_cpus is not None:
            self._write_limit(self._v1("cpuset", rel, "cpuset.cpus"), limits.cpuset_cpus, "cpuset_cpus")
        if limits.cpuset_mems is not None:
            self._write_limit(self._v1("cpuset", rel, "cpuset.mems"), limits.cpuset_mems, "cpuset_mems")
        if limits.memory_max is not None:
            self._set_memory(rel, limits.memory_max, limits.swap_max)
        if limits.pids_max is not None:
            self._write_limit(self._v1("pids", rel, "pids.max"), str(limits.pids_max), "pids_max")

    def _cpu_bandwidth(self, rel: str) -> tuple[str, str]:
        return self._v1("cpu", rel, "cpu.cfs_quota_us"), "-1"

    def _set_memory(self, rel: str, memory_max: int, swap_max: int | None) -> None:
        """v1 requires memory.limit <= memsw.limit at every step: order the two writes accordingly."""
        limit = self._v1("memory", rel, "memory.limit_in_bytes")
        memsw = self._v1("memory", rel, "memory.memsw.limit_in_bytes")
        if swap_max is None:
            self._write_limit(limit, str(memory_max), "memory_max")
            return
        both = memory_max + swap_max
        if both > int(read_text(memsw)):
            self._write_limit(memsw, str(both), "swap_max")
            self._write_limit(limit, str(memory_max), "memory_max")
        else:
            self._write_limit(limit, str(memory_max), "memory_max")
            self._write_limit(memsw, str(both), "swap_max")

    def limits(self, rel: str) -> dict[str, str]:
        files = [
            ("cpu", "cpu.shares"),
            ("cpu", "cpu.cfs_quota_us"),
            ("cpu", "cpu.cfs_period_us"),
            ("cpuset", "cpuset.cpus"),
            ("cpuset", "cpuset.mems"),
            ("memory", "memory.limit_in_bytes"),
            ("memory", "memory.memsw.limit_in_bytes"),
            ("pids", "pids.max"),
        ]
        out: dict[str, str] = {}
        for controller, name in files:
            with contextlib.suppress(FileNotFoundError):
                out[name] = read_text(self._v1(controller, rel, name)).strip()
        return out

    def stats(self, rel: str) -> CellStats:
        unified = self.unified_path(rel)
        if not os.path.isdir(unified):
            raise FailedPrecondition(f"cgroup {rel!r} does not exist")
        stats = CellStats()
        try:
            stats.memory_current = int(read_text(self._v1("memory", rel, "memory.usage_in_bytes")))
            stats.memory_peak = int(read_text(self._v1("memory", rel, "memory.max_usage_in_bytes")))
            stats.pids_current = int(read_text(self._v1("pids", rel, "pids.current")))
            if not self._cpu_stat(rel, stats):
                stats.cpu_usage_us = int(read_text(self._v1("cpuacct", rel, "cpuacct.usage"))) // 1000
                stats.cpu_user_us = int(read_text(self._v1("cpuacct", rel, "cpuacct.usage_user"))) // 1000
                stats.cpu_system_us = int(read_text(self._v1("cpuacct", rel, "cpuacct.usage_sys"))) // 1000
            # v1 counts an OOM kill only in the victim's own memcg (not its ancestors): sum the subtree.
            for sub in self._walk(rel):
                with contextlib.suppress(FileNotFoundError):
                    stats.oom_kills += read_keyed(self._v1("memory", sub, "memory.oom_control")).get(
                        "oom_kill", 0
                    )
        except FileNotFoundError as exc:
            raise FailedPrecondition(f"cgroup {rel!r} is incomplete: {exc.filename} is missing") from None
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"reading stats of cgroup {rel!r}: {exc}") from exc
        stats.pressure = read_pressure(unified)
        return stats
