"""What a workload sees of the filesystem: its cell's mount view, built once per cell.

Without it a root workload sees (and, root being root, writes) the whole cgroup tree, cellar's run
directory with the main socket, its state (keys, cell records) and every cell's logs. Dropping
capabilities does not help: cgroup files and sockets are guarded by file permissions, which root
passes (``notes/containment.md``: a root process without CAP_SYS_ADMIN still moved itself into
another cell). What stops it is a mount namespace in which those paths are read-only or gone:

- **every contained cell** (like a systemd service with ProtectControlGroups, ProtectKernelTunables,
  InaccessiblePaths): ``/sys`` read-only; the cgroup mounts replaced by the cell's own directories
  (read-only: the workload reads its limits and usage, never writes them); runc's masked ``/proc``
  paths covered and its read-only ones remounted so; cellar's trees (:attr:`View.hidden`) covered
  by empty read-only tmpfs, except the node-local socket, bound back at its own path (the one
  ``CELLAR_LOCAL_ENDPOINT`` names);
- **process-isolated cells** in addition (like ``docker run``): a new root (a tmpfs with the host's
  top-level directories bound read-only, or ``--rootfs DIR``), a fresh ``/proc`` of the cell's pid
  namespace, a private ``/dev`` with only the harmless devices, a private ``/tmp`` and ``/run``, the
  cell's data directory at ``/data``, and the requested bind mounts.

A non-isolated cell has no process to hold its namespace (cells stay free of idle processes), so
its view is built by a short-lived thread and pinned by a bind mount of the namespace under
``<run_dir>/views`` (how ``ip netns`` pins a netns); each executable enters it with setns, which
costs a Start about what entering a netns does. A process-isolated cell's view is built by its
namespace holder before it execs, and executables enter the holder's namespace as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from cells import namespaces as ns
from cells.config import RuntimeConfig
from cells.netns import in_fresh_thread
from cells.spec import Mount

log = structlog.get_logger("cells.mountview")

#: runc's default masked paths: covered by /dev/null (files) or an empty read-only tmpfs (dirs).
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
#: runc's default read-only paths.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
#: Device nodes of a process-isolated cell's /dev (Docker's default set), bound from the host's.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: Host top-level entries a process-isolated cell does not get: it has its own of each.
_OWN_TOP_LEVEL = frozenset({"proc", "sys", "dev", "tmp", "run", "data", "lost+found"})
#: Where a process-isolated cell's data directory appears.
DATA_TARGET = "/data"

_TMPFS_FLAGS = ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC
_NOSUID_NODEV = ns.MOUNT_ATTR_NOSUID | ns.MOUNT_ATTR_NODEV
_RO_ALL = ns.MOUNT_ATTR_RDONLY | ns.MOUNT_ATTR_NOSUID | ns.MOUNT_ATTR_NODEV | ns.MOUNT_ATTR_NOEXEC


@dataclass(frozen=True)
class View:
    """The host paths a view is built from; the same for every cell but the cgroup directories."""

    #: cellar's own trees (run, state and log directories, configuration): covered
    hidden: tuple[str, ...]
    #: (mount point of a cgroup hierarchy, the cell's directory in it), unified hierarchy first
    cgroups: tuple[tuple[str, str], ...]
    #: sockets of cellard's that stay reachable, (announced path, real path): the node-local one,
    #: and the main one in a cell granted a role. cellard keeps each alone in a directory, the
    #: announced path a symlink to it (agent.auth.unixpeer.socket_home); that directory is bound into the
    #: view, not the socket: a restarted cellard binds a new socket, a bind of the file keeps the dead one.
    sockets: tuple[tuple[str, str], ...] = ()

    def endpoints(self, trees: _Detached) -> tuple[list[_Bind], list[tuple[str, str]]]:
        """The binds and symlinks that make the announced socket paths work in a view."""
        binds: list[_Bind] = []
        links: list[tuple[str, str]] = []
        for announced, real in self.sockets:
            if real == announced:  # not a symlink (an older cellard): the file itself
                binds.append(_Bind(trees.clone(real, recursive=False), real, False, 0))
                continue
            home = os.path.dirname(real)
            binds.append(_Bind(trees.clone(home, recursive=False), home, True, 0))
            links.append((announced, os.path.relpath(real, os.path.dirname(announced))))
        return binds, links


def build_shared_root(view: View) -> None:
    """The view of a non-isolated cell, in a fresh mount namespace of the caller: the host's root
    with the protections of the module docstring."""
    _private_root()
    with _Detached() as trees:
        endpoint, links = view.endpoints(trees)
        cgroups = [(mp, trees.clone(d)) for mp, d in view.cgroups]
        _scope_cgroups("", cgroups)
        ns.set_mount_attrs("/sys", _RO_ALL, recursive=True)
        _mask_proc("")
        _hide("", view.hidden, endpoint, links)


def build_isolated_root(
    view: View, data_dir: str, staging: str, mounts: Sequence[Mount] = (), rootfs: str = ""
) -> None:
    """The view of a process-isolated cell, in a fresh mount namespace of the calling process, which
    is pid 1 of the cell's new pid namespace (its /proc is mounted here). Ends with pivot_root into
    the new root; ``staging`` is an empty directory to assemble it on (covered in our namespace
    only), below which no source lies: move_mount refuses (EINVAL) a tree cloned from below the
    directory it is then attached under (seen on 6.18 with sources in /tmp and /tmp as staging)."""
    _private_root()
    top_level = sorted(os.listdir("/"))
    with _Detached() as trees:
        rebinds, links = view.endpoints(trees)
        cgroups = [(mp, trees.clone(d)) for mp, d in view.cgroups]
        sys_tree = trees.clone("/sys")
        dev_nodes = [(name, trees.clone(f"/dev/{name}", recursive=False)) for name in DEVICES]
        data = trees.clone(data_dir, recursive=False)
        binds = [(m, trees.clone(m.source)) for m in mounts]
        root = staging
        if rootfs:
            ns.attach_tree(trees.clone(rootfs), root)
        else:
            ns.mount("tmpfs", root, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=0755,size=1m")
            for name in top_level:
                if name not in _OWN_TOP_LEVEL:
                    _bind_host_entry(f"/{name}", f"{root}/{name}", trees)
        for name in ("proc", "sys", "dev", "tmp", "run", DATA_TARGET.lstrip("/")):
            os.makedirs(_inside(root, f"/{name}"), mode=0o755, exist_ok=True)
        for mount, _tree in binds:  # mount points on the root itself, while it is writable
            if rootfs or not on_host_or_own(mount.target, top_level):
                _make_mount_point(_inside(root, mount.target), directory=os.path.isdir(mount.source))
        # Read-only, the rootfs too: a workload that could write it could plant symlinks that the
        # next cell's setup follows (runc's mount-target CVEs); nodev: no disk node of a workload works.
        ns.set_mount_attrs(root, ns.MOUNT_ATTR_RDONLY | ns.MOUNT_ATTR_NODEV, recursive=True)
        ns.mount("proc", f"{root}/proc", "proc", _TMPFS_FLAGS)
        ns.attach_tree(sys_tree, f"{root}/sys")
        _scope_cgroups(root, cgroups)
        ns.set_mount_attrs(f"{root}/sys", _RO_ALL, recursive=True)
        _mask_proc(root)
        _private_dev(f"{root}/dev", dev_nodes)
        ns.mount("tmpfs", f"{root}/tmp", "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=1777")
        ns.mount("tmpfs", f"{root}/run", "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=0755")
        ns.attach_tree(data, f"{root}{DATA_TARGET}")
        ns.set_mount_attrs(f"{root}{DATA_TARGET}", _NOSUID_NODEV, recursive=False)
        for mount, tree in binds:  # after the hiding: a job's work dir lies in cellar's state dir
            ro = ns.MOUNT_ATTR_RDONLY if mount.read_only else 0
            rebinds.append(_Bind(tree, mount.target, os.path.isdir(mount.source), _NOSUID_NODEV | ro))
        _hide(root, view.hidden, rebinds, links)
    os.chdir(root)
    ns.pivot_root(".", ".")  # runc's way: the old root is stacked below "." and detached at once
    ns.umount(".", ns.MNT_DETACH)
    os.chdir("/")


def on_host_or_own(target: str, top_level: Iterable[str]) -> bool:
    """Whether ``target`` lies in a host directory bound read-only into a process-isolated cell's
    root (it must exist there: creating it would write the host) or in one of the cell's own
    (/tmp, /run, /data, ...: created after those are mounted)."""
    first = target.strip("/").split("/")[0]
    return first in _OWN_TOP_LEVEL or first in set(top_level)


def check_mount_target(target: str) -> str | None:
    """Why ``target`` cannot be a mount point in a process-isolated cell on the host root, or None."""
    first = target.strip("/").split("/")[0]
    if first in ("proc", "sys", "dev"):
        return f"{target} lies in the cell's own /{first}"
    if first not in _OWN_TOP_LEVEL and os.path.isdir(f"/{first}") and not os.path.exists(target):
        return f"{target} does not exist, and /{first} is the host's, read-only in the cell"
    return None


def _private_root() -> None:
    """Nothing mounted in this namespace may propagate to the host's: every mount private."""
    try:
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        raise OSError(
            errno.EINVAL, "the root directory is not a mount point (cellard in a chroot?): bind-mount it onto itself"
        ) from None


class _Detached:
    """Detached mount trees taken before their sources are covered; closed on exit."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def __enter__(self) -> _Detached:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds:
            os.close(fd)

    def clone(self, path: str, recursive: bool = True) -> int:
        fd = ns.clone_tree(path, recursive=recursive)
        self._fds.append(fd)
        return fd


def _inside(root: str, path: str) -> str:
    """``root + path``, refused if an existing component below ``root`` is a symlink: a rootfs (or a
    workload that wrote one) must not redirect a mount or a created file to the host's files."""
    current = root
    for part in path.strip("/").split("/"):
        current = f"{current}/{part}"
        if os.path.islink(current):
            raise OSError(40, f"refusing a symlink in a mount target: {current}", current)
    return current


def _real_parent(path: str) -> str:
    """``path`` with its directory's symlinks resolved (/var/run/x -> /run/x), not the last component."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _bind_host_entry(source: str, target: str, trees: _Detached) -> None:
    """One top-level entry of the host root: symlinks copied (/bin -> usr/bin), directories bound."""
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        os.mkdir(target, 0o755)
        ns.attach_tree(trees.clone(source), target)


def _scope_cgroups(root: str, cgroups: Iterable[tuple[str, int]]) -> None:
    """Each cgroup hierarchy's mount point shows only the cell's directory, read-only. Where the
    mount points live on a tmpfs (hybrid hosts: /sys/fs/cgroup/<controller>), a fresh tmpfs with only
    the cell's hierarchies replaces it, so the host's other hierarchies are not visible either."""
    cgroups = list(cgroups)
    parents = {os.path.dirname(mp) for mp, _ in cgroups} if len(cgroups) > 1 else set()
    for parent in parents:
        ns.mount("tmpfs", f"{root}{parent}", "tmpfs", _TMPFS_FLAGS, "mode=0755,size=64k")
        for mp, _ in cgroups:
            if os.path.dirname(mp) == parent:
                os.mkdir(f"{root}{mp}", 0o755)
    for mp, tree in cgroups:
        ns.attach_tree(tree, f"{root}{mp}")
        ns.set_mount_attrs(f"{root}{mp}", _RO_ALL, recursive=True)


def _mask_proc(root: str) -> None:
    for path in MASKED_PATHS:
        target = f"{root}{path}"
        if os.path.isdir(target):
            ns.mount("tmpfs", target, "tmpfs", ns.MS_RDONLY | _TMPFS_FLAGS, "size=0")
        elif os.path.exists(target):
            ns.mount("/dev/null", target, None, ns.MS_BIND)
    for path in READONLY_PATHS:
        target = f"{root}{path}"
        if os.path.exists(target):
            ns.mount(target, target, None, ns.MS_BIND | ns.MS_REC)
            ns.set_mount_attrs(target, _RO_ALL, recursive=True)


def _private_dev(dev: str, nodes: Iterable[tuple[str, int]]) -> None:
    """Docker's /dev: a tmpfs with the harmless device nodes, a devpts of its own, /dev/shm."""
    ns.mount("tmpfs", dev, "tmpfs", ns.MS_NOSUID | ns.MS_NOEXEC, "mode=0755,size=64k")
    for name, tree in nodes:
        with open(f"{dev}/{name}", "w"):
            pass
        ns.attach_tree(tree, f"{dev}/{name}")
    os.mkdir(f"{dev}/pts", 0o755)
    ns.mount("devpts", f"{dev}/pts", "devpts", ns.MS_NOSUID | ns.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm", 0o1777)
    ns.mount("tmpfs", f"{dev}/shm", "tmpfs", _TMPFS_FLAGS, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    ns.set_mount_attrs(dev, ns.MOUNT_ATTR_RDONLY, recursive=False)


@dataclass(frozen=True)
class _Bind:
    tree: int  # from clone_tree
    target: str
    directory: bool
    attrs: int  # MOUNT_ATTR_* set on it afterwards, recursively


def _hide(root: str, hidden: Iterable[str], binds: Iterable[_Bind], links: Iterable[tuple[str, str]] = ()) -> None:
    """Cover each of cellar's trees with an empty read-only tmpfs (nested ones are covered by their
    parent's), then attach ``binds`` (the node-local socket's directory, and mounts whose targets may
    lie in a covered tree: their mount points are made there before it turns read-only) and make the
    symlinks ``links`` (path, target) where nothing is yet."""
    covered: list[str] = []
    for path in sorted(set(hidden), key=len):
        if any(path == c or path.startswith(c + "/") for c in covered):
            continue
        try:
            inside = _inside(root, path)
        except OSError:  # behind a symlink (paths come realpath'd from the host): not this path here
            continue
        if os.path.isdir(inside):
            ns.mount("tmpfs", inside, "tmpfs", _TMPFS_FLAGS, "mode=0755,size=64k")
            covered.append(path)
        elif os.path.exists(inside):  # a file (a private key kept elsewhere): an empty one instead
            ns.mount("/dev/null", inside, None, ns.MS_BIND)
    for bind in binds:
        target = _inside(root, bind.target)
        _make_mount_point(target, directory=bind.directory)
        ns.attach_tree(bind.tree, target)
        if bind.attrs:
            ns.set_mount_attrs(target, bind.attrs, recursive=True)
    for path, link in links:
        inside = os.path.join(_inside(root, os.path.dirname(path)), os.path.basename(path))
        if not os.path.lexists(inside):  # where the host's symlink is visible already, it serves
            os.makedirs(os.path.dirname(inside), mode=0o755, exist_ok=True)
            os.symlink(link, inside)
    for path in covered:
        ns.set_mount_attrs(f"{root}{path}", ns.MOUNT_ATTR_RDONLY, recursive=False)


def _make_mount_point(target: str, directory: bool) -> None:
    """Create ``target`` (and its parents) to mount on, unless it exists."""
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if directory:
        os.mkdir(target, 0o755)
    else:
        with open(target, "w"):
            pass


# -- pinned views of non-isolated cells -----------------------------------------------------------


def cgroup_mounts(cell_dirs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(mount point, directory) for each of a cell's cgroup directories, from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split(" - ")[-1].split()[0] in ("cgroup", "cgroup2")]
    out = []
    for directory in cell_dirs:
        under = [p for p in points if directory == p or directory.startswith(p.rstrip("/") + "/")]
        if not under:
            raise OSError(f"{directory} is on no cgroup mount")
        out.append((max(under, key=len), directory))
    return tuple(out)


def pin_path(views_dir: str, cell: str) -> str:
    """``a/b`` -> ``<views_dir>/a_b``: '_' never occurs in a cell name's DNS labels."""
    return os.path.join(views_dir, cell.replace("/", "_"))


def ensure_views_dir(views_dir: str) -> None:
    """A private mount point, as ``unshare --mount=FILE`` requires: a namespace pinned here must not
    propagate into other namespaces (the kernel refuses what could form a loop)."""
    os.makedirs(views_dir, mode=0o700, exist_ok=True)
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == views_dir for line in f)
    if not mounted:
        ns.mount(views_dir, views_dir, None, ns.MS_BIND)
    ns.mount(None, views_dir, None, ns.MS_PRIVATE)


def build_in_new_namespace(view: View) -> int:
    """Thread body: build a non-isolated cell's view in a new mount namespace of this thread; return
    an fd on it. The thread never goes back: it must end (netns.in_fresh_thread), because setns into
    the original namespace would also reset its root to that namespace's -- out of a chroot."""
    ns.unshare(ns.CLONE_NEWNS)
    build_shared_root(view)
    return ns.open_ns("thread-self", "mnt")


def pin_namespace(fd: int, pin: str) -> None:
    """Bind the namespace behind ``fd`` at ``pin`` (in the caller's namespace); closes ``fd``."""
    try:
        os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            ns.mount(f"/proc/self/fd/{fd}", pin, None, ns.MS_BIND)
        except BaseException:
            os.unlink(pin)
            raise
    finally:
        os.close(fd)


def release_views_dir(views_dir: str) -> None:
    """Unpin every view and unmount the directory itself (uninstall, tests)."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(views_dir):
            unpin(os.path.join(views_dir, name))
    with contextlib.suppress(OSError):
        ns.umount(views_dir, ns.MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(views_dir)


def unpin(pin: str) -> None:
    """Drop a pinned view (its namespace goes when the last executable in it exits)."""
    with contextlib.suppress(OSError):
        ns.umount(pin, ns.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)


class Views:
    """The mount views of one runtime's cells: templates, pins of non-isolated cells, data dirs."""

    def __init__(self, config: RuntimeConfig, cgroup_dirs: Callable[[str], list[str]]) -> None:
        self.config = config
        self._cgroup_dirs = cgroup_dirs
        self._ready = False

    def view(self, cell: str, granted: bool = False) -> View:
        """``granted``: the cell was granted a role on the main socket, which its view then shows."""
        sockets = [self.config.local_socket] + ([self.config.main_socket] if granted else [])
        return View(
            hidden=tuple(os.path.realpath(p) for p in self.config.hidden_paths),
            cgroups=cgroup_mounts(self._cgroup_dirs(cell)),
            sockets=tuple((_real_parent(p), os.path.realpath(p)) for p in sockets if p and os.path.exists(p)),
        )

    def data_dir(self, cell: str) -> str:
        return os.path.join(self.config.data_dir, cell)

    def make_data_dir(self, cell: str) -> str:
        """Below a root-only directory: a workload can leave setuid-root files in its /data, which
        no host user may reach (inside the cell /data is nosuid, and no_new_privs holds anyway)."""
        os.makedirs(self.config.data_dir, mode=0o700, exist_ok=True)
        os.chmod(self.config.data_dir, 0o700)
        path = self.data_dir(cell)
        os.makedirs(path, mode=0o755, exist_ok=True)
        return path

    def remove_data_dir(self, cell: str) -> None:
        shutil.rmtree(self.data_dir(cell), ignore_errors=True)

    @property
    def staging(self) -> str:
        """Where a holder assembles its cell's root (see :func:`build_isolated_root`)."""
        path = os.path.join(self.config.run_dir, "staging")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def pin_of(self, cell: str) -> str:
        return pin_path(self.config.views_dir, cell)

    async def pin(self, cell: str, granted: bool = False) -> None:
        """Build and pin the view of a non-isolated cell (a fresh thread: it changes namespace)."""
        if not self._ready:
            ensure_views_dir(self.config.views_dir)
            self._ready = True
        view = self.view(cell, granted)
        pin = self.pin_of(cell)
        unpin(pin)  # a stale one of an earlier cell of that name
        pin_namespace(await in_fresh_thread(lambda: build_in_new_namespace(view)), pin)

    def open(self, cell: str) -> int | None:
        """An fd on the cell's pinned view for setns, or None when it has none (yet)."""
        try:
            return os.open(self.pin_of(cell), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def unpin(self, cell: str) -> None:
        unpin(self.pin_of(cell))

    def prune(self, cells: Iterable[str]) -> None:
        """Unpin every view no cell claims (after a crash between pin and record, or a Free)."""
        keep = {os.path.basename(self.pin_of(c)) for c in cells}
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.config.views_dir):
                if name not in keep:
                    log.warning("reconcile.unclaimed_view", view=name)
                    unpin(os.path.join(self.config.views_dir, name))
