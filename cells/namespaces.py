"""Thin ctypes wrappers for the namespace and mount syscalls.

Python 3.11 has no ``os.unshare``/``os.setns`` (3.12 does), and the spawn path needs them inside a
``preexec_fn``, so the libc symbols are resolved once at import time: the forked child then only
makes the foreign call. Every wrapper raises ``OSError`` with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: /proc/PID/ns/<name> for each clone flag.
NS_NAMES: dict[int, str] = {
    CLONE_NEWNS: "mnt",
    CLONE_NEWCGROUP: "cgroup",
    CLONE_NEWUTS: "uts",
    CLONE_NEWIPC: "ipc",
    CLONE_NEWUSER: "user",
    CLONE_NEWPID: "pid",
    CLONE_NEWNET: "net",
    CLONE_NEWTIME: "time",
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

MNT_FORCE = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_sethostname = _libc.sethostname
_sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(result: int, what: str, target: str | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", target)


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread (CLONE_NEWNET) or process (the rest)."""
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): move the calling thread into the namespace behind ``fd`` (0 = any type)."""
    _check(_setns(fd, nstype), "setns")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount(target: str, flags: int = 0) -> None:
    """umount2(2); pass MNT_DETACH for a lazy unmount that cannot fail with EBUSY."""
    _check(_umount2(_b(target), flags), "umount", target)


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace."""
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), "sethostname")


def ns_inode(pid: int | str, ns: str) -> int:
    """Inode of a process's namespace: two processes share a namespace iff the inodes match."""
    return os.stat(f"/proc/{pid}/ns/{ns}").st_ino


def nspid(pid: int) -> int:
    """The pid of ``pid`` as seen inside its own (innermost) pid namespace."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise OSError(f"/proc/{pid}/status has no NSpid line")


def open_ns(pid: int | str, ns: str) -> int:
    """An O_RDONLY|O_CLOEXEC fd on /proc/PID/ns/NS, for :func:`setns`."""
    return os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
