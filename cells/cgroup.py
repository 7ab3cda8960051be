"""cgroup backends: one interface over pure cgroup v2 and hybrid (v2 membership + v1 limits) hosts.

Both modes share the unified (v2) hierarchy for everything that is not a resource limit: membership,
``cgroup.kill``, ``cgroup.freeze``, ``cgroup.events`` (populated/frozen), ``cgroup.stat``, ``cpu.stat``
and the PSI ``*.pressure`` files. These exist in every v2 cgroup, even one without controllers, so
this base class implements them once; a subclass only decides where limits go and how stats are read.

* :class:`cells.cgroup_v2.V2Backend` - controllers live on the unified hierarchy (most production hosts).
* :class:`cells.cgroup_hybrid.HybridBackend` - controllers are mounted as v1 hierarchies (the CI
  machines); limits go to v1 files and every cell also exists in each v1 hierarchy cellar uses.

Everything cellar creates lives below :attr:`CgroupBackend.root`; a ``rel`` path is validated (no
``..``, no absolute paths, no empty segments) before it is joined, so no caller can reach a cgroup
outside that subtree. :func:`detect` picks the backend from ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import os
import re
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cells.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from cells.spec import CellLimits
from cells.state import CellStats, PressureStats

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")


def validate_rel(rel: str) -> str:
    """A relative cgroup path of safe segments; the empty string is the backend's root itself."""
    if rel == "":
        return rel
    if len(rel) > 1024 or "\0" in rel:
        raise InvalidArgument("cgroup", "path too long or contains NUL")
    for segment in rel.split("/"):
        if not _SEGMENT.match(segment) or segment in (".", ".."):
            raise InvalidArgument("cgroup", f"bad path segment {segment!r} in {rel!r}")
    return rel


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, value: str) -> None:
    """One write(2) per call: cgroup files act on each write, and several pids per write -> EINVAL."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_keyed(path: str) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line), e.g. cgroup.events, cpu.stat, memory.events."""
    out: dict[str, int] = {}
    for line in read_text(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def parse_pressure(text: str) -> dict[str, dict[str, float]]:
    """A PSI file: ``{"some": {"avg10": .., "avg60": .., "avg300": .., "total": ..}, "full": {...}}``."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        values: dict[str, float] = {}
        for field in fields:
            key, _, value = field.partition("=")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
        out[kind] = values
    return out


def read_pressure(directory: str) -> PressureStats | None:
    """The cpu/memory/io PSI of a unified cgroup, None when the kernel has PSI disabled."""
    got: dict[str, dict[str, dict[str, float]]] = {}
    for resource in ("cpu", "memory", "io"):
        try:
            got[resource] = parse_pressure(read_text(os.path.join(directory, f"{resource}.pressure")))
        except OSError:
            got[resource] = {}
    if not any(got.values()):
        return None

    def val(resource: str, kind: str, key: str) -> float:
        return got[resource].get(kind, {}).get(key, 0.0)

    return PressureStats(
        cpu_some_avg10=val("cpu", "some", "avg10"),
        memory_some_avg10=val("memory", "some", "avg10"),
        memory_full_avg10=val("memory", "full", "avg10"),
        io_some_avg10=val("io", "some", "avg10"),
        cpu_some_total_us=int(val("cpu", "some", "total")),
        memory_some_total_us=int(val("memory", "some", "total")),
        io_some_total_us=int(val("io", "some", "total")),
    )


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as ``{hierarchy: path}``: ``""`` for the unified one, else the
    comma-joined controller list of a v1 hierarchy (``"cpu,cpuacct"``, ``"name=systemd"``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    super_options: tuple[str, ...]


def parse_mountinfo(text: str) -> list[Mount]:
    r"""The cgroup/cgroup2 mounts of a mountinfo file (octal escapes like ``\040`` decoded)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        mountpoint = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        mounts.append(Mount(mountpoint, rest[0], tuple(rest[2].split(","))))
    return mounts


class CgroupBackend(abc.ABC):
    """cellar's subtree of cgroups. ``rel`` paths like ``"web/api/exe.nginx"`` are relative to it."""

    mode: str  # "v2" | "hybrid"
    limits_v2: bool  # limits are written to v2 files
    root: str  # cellar's subtree in the unified hierarchy, absolute

    def __init__(self, root: str) -> None:
        self.root = root

    # -- paths ---------------------------------------------------------------------------------
    def unified_path(self, rel: str) -> str:
        rel = validate_rel(rel)
        return os.path.join(self.root, rel) if rel else self.root

    def _v1_paths(self, rel: str) -> list[str]:
        """The directories of ``rel`` in each v1 hierarchy cellar uses (none on pure v2)."""
        return []

    def procs_files(self, rel: str) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in (self.unified_path(rel), *self._v1_paths(rel))]

    def events_path(self, rel: str) -> str:
        return os.path.join(self.unified_path(rel), "cgroup.events")

    def exists(self, rel: str) -> bool:
        return os.path.isdir(self.unified_path(rel))

    def cgroup_id(self, rel: str) -> int:
        """Inode of the unified directory; equals sock_diag's INET_DIAG_CGROUP_ID of its sockets."""
        return os.stat(self.unified_path(rel)).st_ino

    def _walk(self, rel: str) -> Iterator[str]:
        """``rel`` and every descendant rel path, parents first."""
        base = self.unified_path(rel)
        for dirpath, _dirnames, _files in os.walk(base):
            sub = os.path.relpath(dirpath, self.root)
            yield "" if sub == "." else sub

    def list_tree(self) -> list[str]:
        return [r for r in self._walk("") if r]

    # -- lifecycle -----------------------------------------------------------------------------
    def create(self, rel: str, limits: CellLimits | None = None) -> None:
        """Create ``rel`` (its parent must exist) in every hierarchy, then apply ``limits``.

        All or nothing: on any failure whatever was created is removed and the error re-raised.
        """
        validate_rel(rel)
        if not rel:
            raise InvalidArgument("cgroup", "must not be empty")
        if limits is not None:
            limits.validate()
        parent = rel.rpartition("/")[0]
        created: list[str] = []
        try:
            try:
                self._prepare_parent(parent)
            except FileNotFoundError:
                if self.exists(parent):
                    raise
                raise FailedPrecondition(f"parent cgroup {parent or '<root>'!r} of {rel!r} does not exist") from None
            # No stat before: the unified mkdir (made first, as exists() follows it) tells a missing
            # parent and an existing cgroup apart, one syscall fewer each on every Start.
            for directory in (self.unified_path(rel), *self._v1_paths(rel)):
                try:
                    os.mkdir(directory, 0o755)
                except FileNotFoundError:
                    if created or self.exists(parent):
                        raise
                    raise FailedPrecondition(f"parent cgroup {parent or '<root>'!r} of {rel!r} does not exist") from None
                except FileExistsError:
                    if created:
                        raise
                    raise FailedPrecondition(f"cgroup {rel!r} exists already") from None
                created.append(directory)
                self._init_dir(directory)
            if limits is not None:
                self.set_limits(rel, limits)
        except BaseException as exc:
            for directory in reversed(created):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"creating cgroup {rel!r}: {exc}") from exc
            raise

    def _prepare_parent(self, parent: str) -> None:  # noqa: B027 - optional hook
        """Hook: make the parent able to host a limited child (v2: enable its subtree_control)."""

    def _init_dir(self, directory: str) -> None:  # noqa: B027 - optional hook
        """Hook: initialise a freshly made directory (v1 cpuset: copy cpus/mems from the parent)."""

    def remove(self, rel: str) -> None:
        """Remove ``rel`` and its (empty) descendants in every hierarchy; idempotent."""
        validate_rel(rel)
        if not rel:
            raise InvalidArgument("cgroup", "must not be empty; use remove_root")
        self._remove_tree(rel)

    def _remove_tree(self, rel: str) -> None:
        if self.exists(rel) and self.populated(rel):
            raise FailedPrecondition(f"cgroup {rel or '<root>'!r} still has processes")
        subtree = list(self._walk(rel)) if self.exists(rel) else [rel]
        for sub in reversed(subtree):
            # v1 first, unified last: exists() follows the unified directory.
            for directory in (*self._v1_paths(sub), self.unified_path(sub)):
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise FailedPrecondition(f"cgroup {sub!r} is busy: {directory}") from exc
                    raise RuntimeFailure(f"removing cgroup {sub!r}: {exc}") from exc

    def remove_root(self) -> None:
        """Kill everything below the root and remove the whole subtree (tests, uninstall)."""
        if not self.exists(""):
            for directory in self._v1_paths(""):
                with contextlib.suppress(FileNotFoundError):
                    self._rmdir_v1_tree(directory)
            return
        if self.populated(""):
            self.kill("")
            deadline = time.monotonic() + 10
            while self.populated("") and time.monotonic() < deadline:
                time.sleep(0.005)
        self._remove_tree("")
        for directory in self._v1_paths(""):
            with contextlib.suppress(FileNotFoundError):
                self._rmdir_v1_tree(directory)

    @staticmethod
    def _rmdir_v1_tree(directory: str) -> None:
        """Leftover v1 directories (e.g. of a crashed create) below ``directory``, deepest first."""
        for dirpath, _dirs, _files in os.walk(directory, topdown=False):
            os.rmdir(dirpath)

    # -- limits and stats ------------------------------------------------------------------------
    @abc.abstractmethod
    def set_limits(self, rel: str, limits: CellLimits) -> None:
        """Write every field of ``limits`` that is not None; None fields are left as they are."""

    @abc.abstractmethod
    def limits(self, rel: str) -> dict[str, str]:
        """Raw limit file name -> content, for every limit file this backend manages."""

    @abc.abstractmethod
    def stats(self, rel: str) -> CellStats: ...

    def _cpu_stat(self, rel: str, stats: CellStats) -> bool:
        """cpu.stat usage from the unified hierarchy (present even without the cpu controller)."""
        try:
            cpu = read_keyed(os.path.join(self.unified_path(rel), "cpu.stat"))
        except OSError:
            return False
        stats.cpu_usage_us = cpu.get("usage_usec", 0)
        stats.cpu_user_us = cpu.get("user_usec", 0)
        stats.cpu_system_us = cpu.get("system_usec", 0)
        return "usage_usec" in cpu

    # -- processes -------------------------------------------------------------------------------
    def pids(self, rel: str) -> list[int]:
        out: list[int] = []
        for sub in self._walk(rel):
            with contextlib.suppress(FileNotFoundError):
                out.extend(
                    int(p) for p in read_text(os.path.join(self.unified_path(sub), "cgroup.procs")).split()
                )
        return out

    def populated(self, rel: str) -> bool:
        return read_keyed(self.events_path(rel)).get("populated", 0) == 1

    def release_cpu(self, rel: str) -> None:
        """Lift every CPU bandwidth limit in the subtree of ``rel``, parents first; best effort.

        For a subtree about to be killed: dying takes CPU, and under a cell's cpu.max of 1 ms/s that
        a busy loop exhausts, 300 killed processes took minutes to exit (tests/cells/test_runtime.py).
        """
        for sub in self._walk(rel):
            path, unlimited = self._cpu_bandwidth(sub)
            with contextlib.suppress(OSError):
                write_text(path, unlimited)

    def cpu_throttled(self, rel: str) -> int | None:
        """How many periods ``rel`` was throttled by its CPU bandwidth limit, or None if unknown.

        cpu.stat's nr_throttled sits beside the bandwidth file: v2's cpu.max, v1's cfs_quota_us
        (on a hybrid host the unified cpu.stat has usage only)."""
        path = os.path.join(os.path.dirname(self._cpu_bandwidth(rel)[0]), "cpu.stat")
        try:
            return read_keyed(path).get("nr_throttled")
        except OSError:
            return None

    @abc.abstractmethod
    def _cpu_bandwidth(self, rel: str) -> tuple[str, str]:
        """The file that caps ``rel``'s CPU time, and the value that lifts the cap."""

    def kill(self, rel: str) -> None:
        """SIGKILL every process of the subtree, grandchildren included, without a pid race."""
        kill_file = os.path.join(self.unified_path(rel), "cgroup.kill")
        if os.path.exists(kill_file):
            write_text(kill_file, "1")
            return
        # Kernels before 5.14: freeze so nothing forks while we signal, then thaw to let them die.
        self.freeze(rel)
        try:
            for pid in self.pids(rel):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            self.thaw(rel)

    def freeze(self, rel: str) -> None:
        """Ask the kernel to freeze; completion shows as ``frozen 1`` in cgroup.events."""
        write_text(os.path.join(self.unified_path(rel), "cgroup.freeze"), "1")

    def thaw(self, rel: str) -> None:
        write_text(os.path.join(self.unified_path(rel), "cgroup.freeze"), "0")

    def frozen(self, rel: str) -> bool:
        return read_keyed(self.events_path(rel)).get("frozen", 0) == 1

    # -- errors ----------------------------------------------------------------------------------
    @staticmethod
    def _write_limit(path: str, value: str, field: str) -> None:
        """Write one limit; the kernel's EINVAL/ERANGE names the field, EBUSY is a state conflict."""
        try:
            write_text(path, value)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"cell.{field}: this host has no {os.path.basename(path)} (controller not available)"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
                raise InvalidArgument(
                    f"cell.{field}", f"the kernel rejected {value!r} for {os.path.basename(path)}"
                ) from None
            if exc.errno == errno.EBUSY:
                raise FailedPrecondition(
                    f"cell.{field}: the kernel refused {value!r} for {os.path.basename(path)} now (busy)"
                ) from None
            raise RuntimeFailure(f"writing {path}: {exc}") from exc


#: How long the processes left in a cgroup may take to die after cgroup.kill.
KILL_EMPTY_TIMEOUT_S = 10.0


async def kill_and_remove(backend: CgroupBackend, rel: str) -> None:
    """cgroup.kill the subtree, wait until it is empty, remove it."""
    if not backend.exists(rel):
        return
    if backend.populated(rel):
        backend.release_cpu(rel)  # dying takes CPU
        backend.kill(rel)
        if not await wait_empty(backend, rel, KILL_EMPTY_TIMEOUT_S):
            raise RuntimeFailure(f"cgroup {rel!r} still has processes after cgroup.kill")
    backend.remove(rel)


async def wait_empty(backend: CgroupBackend, rel: str, timeout: float) -> bool:
    """Wait until ``rel`` has no process left; True when empty, False on timeout.

    kernfs signals cgroup.events changes with POLLPRI, but always reports POLLIN too, so registering
    the file itself with the loop (EPOLLIN) would spin. A private epoll set watching only EPOLLPRI is
    readable exactly when an event arrived; the loop watches that epoll fd. The file is read once
    before waiting (which arms the notification) and again after every wake-up.
    """
    path = backend.events_path(rel)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    poller = select.epoll()
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def populated() -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 4096).decode()
        except OSError:
            return False  # ENODEV: the cgroup was removed, so it is certainly empty
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
        return False

    def on_ready() -> None:
        poller.poll(0)
        wake.set()

    try:
        poller.register(fd, select.EPOLLPRI | select.EPOLLERR)
        loop.add_reader(poller.fileno(), on_ready)
        try:
            deadline = loop.time() + timeout
            while populated():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                wake.clear()
                # The timeout also bounds a missed wake-up to 1 s of extra latency.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(remaining, 1.0))
            return True
        finally:
            loop.remove_reader(poller.fileno())
    finally:
        poller.close()
        os.close(fd)


def _own_unified_cgroup(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise FailedPrecondition("this process is in no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)")


def detect(root_name: str = "cellar", mount: str = "/sys/fs/cgroup") -> CgroupBackend:
    """The backend for this host, with cellar's root created if needed.

    ``mount`` itself is cgroup2 -> pure v2; ``mount/unified`` is cgroup2 -> hybrid (v1 controllers
    in ``mount/<controller>``). A pure v1 host without a unified hierarchy is not supported:
    cellar needs v2 for membership, cgroup.kill and populated notifications.
    """
    from cells.cgroup_hybrid import HybridBackend
    from cells.cgroup_v2 import V2Backend

    if "/" in root_name or not _SEGMENT.match(root_name) or root_name in (".", ".."):
        raise InvalidArgument("cgroup.root", f"bad root name {root_name!r}")
    mounts = parse_mountinfo(read_text("/proc/self/mountinfo"))
    mount = mount.rstrip("/") or "/"
    by_point = {m.mountpoint: m for m in mounts}
    top = by_point.get(mount)
    if top is not None and top.fstype == "cgroup2":
        own = _own_unified_cgroup(read_text("/proc/self/cgroup"))
        return V2Backend.setup(mount, root_name, own)
    unified = by_point.get(os.path.join(mount, "unified"))
    if unified is not None and unified.fstype == "cgroup2":
        return HybridBackend.setup(mount, root_name, mounts)
    raise FailedPrecondition(
        f"no cgroup2 hierarchy at {mount} or {mount}/unified: cgroup v1-only hosts are not supported"
    )
