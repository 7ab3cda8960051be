"""Who owns a listening socket: a cell's executable, else a process, else a well-known service.

- cells: a socket's cgroup id is the inode of its unified cgroup directory; cellar's leaves are
  ``<cgroup root>/<cell>/exe.<name>``, so one ``stat`` per leaf maps ids to (cell, executable);
- processes: socket inode -> pid by reading the ``/proc/*/fd`` links (what ``ss -p`` does), for a
  cell's socket first among the processes of its leaf cgroup; a process we may not read (EACCES,
  gone) just leaves the socket unknown. Results are cached per inode, so a steady host costs no
  /proc scan (nor cgroup walk) at all;
- else the port's name in ``/etc/services``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from observe.names import EXE_PREFIX


@dataclass(frozen=True)
class Owner:
    cell: str = ""
    executable: str = ""
    pid: int = 0
    process: str = ""


def cgroup_owners(cgroup_root: str) -> dict[int, tuple[str, str]]:
    """cgroup id -> (cell, executable) for every ``exe.<name>`` leaf under ``cgroup_root``."""
    out: dict[int, tuple[str, str]] = {}
    if not cgroup_root:
        return out
    for dirpath, dirnames, _files in os.walk(cgroup_root):
        for name in dirnames:
            if not name.startswith(EXE_PREFIX):
                continue
            cell = os.path.relpath(dirpath, cgroup_root)
            with contextlib.suppress(OSError):
                out[os.stat(os.path.join(dirpath, name)).st_ino] = (cell, name[len(EXE_PREFIX):])
        dirnames[:] = [d for d in dirnames if not d.startswith(EXE_PREFIX)]
    return out


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def cgroup_pids(path: str) -> list[int]:
    """The processes directly in the cgroup directory ``path``, in pid order ([] if unreadable)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return sorted(int(line) for line in f if line.strip())
    except (OSError, ValueError):
        return []


def scan_socket_pids(inodes: set[int], pids: list[int] | None = None) -> dict[int, int]:
    """socket inode -> pid (the first process found holding it) among ``pids`` (None: all, from /proc);
    stops once every inode is found."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    if pids is None:
        try:
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        except OSError:
            return found
    readlink = os.readlink
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # EACCES (another user's or a protected process), or gone
            continue
        for fd in fds:
            try:
                target = readlink(fd_dir + fd)
            except OSError:
                continue
            inode = wanted.pop(target, None)
            if inode is not None:
                found[inode] = pid
                if not wanted:
                    return found
    return found


SERVICES_PATH = "/etc/services"
_services: tuple[int, dict[tuple[int, str], str]] = (-1, {})


def service_names(path: str = SERVICES_PATH) -> dict[tuple[int, str], str]:
    """``(port, proto) -> name`` from /etc/services (first entry wins, as ``getservbyport``), reread
    when the file changes. A table rather than ``getservbyport`` per socket: a host with thousands of
    unattributed ports overflowed a bounded cache, and each miss re-read the file (~20 us)."""
    global _services
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    if mtime != _services[0]:
        table: dict[tuple[int, str], str] = {}
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2 or "/" not in fields[1]:
                    continue
                port, _, proto = fields[1].partition("/")
                if port.isdigit():
                    table.setdefault((int(port), proto), fields[0])
        _services = (mtime, table)
    return _services[1]


def service_name(port: int, proto: str) -> str:
    """Well-known name of ``port`` from /etc/services, else ""."""
    return service_names().get((port, proto), "")


class Attributor:
    """Maps socket inodes to owners, remembering processes between calls (inodes are unique while open)."""

    def __init__(self) -> None:
        self._by_inode: dict[int, Owner] = {}

    def owners(self, sockets: list[tuple[int, int]], cgroup_root: str) -> dict[int, Owner]:
        """``[(inode, cgroup_id)]`` -> ``{inode: Owner}``; unknown sockets get ``Owner()``.

        A steady host costs one dict lookup per socket: the cgroup tree and /proc are only read
        for sockets not seen before, and the cache is only pruned when it holds more than is live.
        """
        cache = self._by_inode
        missing = [(inode, cgroup_id) for inode, cgroup_id in sockets if inode not in cache]
        if missing:
            cells = cgroup_owners(cgroup_root) if cgroup_root else {}
            pids = self._pids(missing, cells, cgroup_root)
            for inode, cgroup_id in missing:
                cell, executable = cells.get(cgroup_id, ("", ""))
                pid = pids.get(inode, 0)
                # also "unknown" is kept: rescanning every poll would not change it
                cache[inode] = Owner(cell, executable, pid, process_name(pid) if pid else "")
        if len(cache) > len(sockets):  # closed sockets are remembered: forget them
            live = {inode for inode, _ in sockets}
            for inode in [i for i in cache if i not in live]:
                del cache[inode]
        return dict(cache)

    @staticmethod
    def _pids(missing: list[tuple[int, int]], cells: dict[int, tuple[str, str]], cgroup_root: str) -> dict[int, int]:
        """inode -> pid. A cell's socket is looked for among its executable's processes first (the pid
        is a bonus there, the cell is already known); only what is left costs a scan of all of /proc."""
        in_cell: dict[int, set[int]] = {}
        for inode, cgroup_id in missing:
            if cgroup_id in cells:
                in_cell.setdefault(cgroup_id, set()).add(inode)
        pids: dict[int, int] = {}
        for cgroup_id, inodes in in_cell.items():
            cell, executable = cells[cgroup_id]
            leaf = os.path.join(cgroup_root, cell, EXE_PREFIX + executable)
            pids.update(scan_socket_pids(inodes, cgroup_pids(leaf)))
        rest = {inode for inode, _ in missing if inode not in pids}
        if rest:
            pids.update(scan_socket_pids(rest))
        return pids
