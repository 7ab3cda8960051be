"""Thin ctypes wrappers for the namespace and mount syscalls.

Python 3.11 has no ``os.unshare``/``os.setns`` (3.12 does), and the spawn path needs them inside a
``preexec_fn``, so the libc symbols are resolved once at import time: the forked child then only
makes the foreign call. Every wrapper raises ``OSError`` with the kernel's errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

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


# -- the new mount API (kernel 5.2+; mount_setattr 5.12+): detached trees and recursive flags ---------

OPEN_TREE_CLONE = 1
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
_SYS_OPEN_TREE = 428  # the same number on every architecture (syscalls added after 5.1 are unified)
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _checked_syscall(what: str, target: str, *args: object) -> int:
    result = _syscall(*args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", target)
    return int(result)


def clone_tree(path: str, recursive: bool = True) -> int:
    """open_tree(OPEN_TREE_CLONE): a detached copy of the mount at ``path``, as an fd (CLOEXEC).

    Taken before ``path`` is hidden, it can still be attached later with :func:`attach_tree`."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _checked_syscall(
        "open_tree", path, ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(_AT_FDCWD), _b(path), ctypes.c_uint(flags)
    )


def attach_tree(fd: int, target: str) -> None:
    """move_mount: attach a tree from :func:`clone_tree` at ``target`` (which must exist)."""
    _checked_syscall(
        "move_mount",
        target,
        ctypes.c_long(_SYS_MOVE_MOUNT),
        ctypes.c_int(fd),
        b"",
        ctypes.c_int(_AT_FDCWD),
        _b(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )


def set_mount_attrs(path: str, attrs: int, recursive: bool) -> None:
    """mount_setattr: set MOUNT_ATTR_* on the mount at ``path`` (and every mount below it)."""
    attr = _MountAttr(attrs, 0, 0, 0)
    _checked_syscall(
        "mount_setattr",
        path,
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        _b(path),
        ctypes.c_uint(AT_RECURSIVE if recursive else 0),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )


#: pivot_root has no glibc wrapper, and an older syscall number per architecture
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _PIVOT_ROOT[platform.machine()]
    _checked_syscall("pivot_root", new_root, ctypes.c_long(nr), _b(new_root), _b(put_old))
