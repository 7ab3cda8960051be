"""The security profile of one executable: what the spawn path takes away before exec.

A contained workload (the default) keeps :data:`cells.capabilities.DEFAULT_CAPS` adjusted by the
cell's and the executable's ``cap_add`` / ``cap_drop``, in the bounding, permitted and effective
sets (inheritable and ambient empty, as Docker does since CVE-2022-24769); runs with
``no_new_privs`` (a setuid binary or file capabilities grant nothing); under the seccomp filter for
its capability set (:mod:`cells.seccomp`); and in a cgroup namespace of its own, so that
``/proc/self/cgroup`` reads ``0::/``. A ``privileged`` cell or executable gets none of it: the
host's view and every capability, as before containment existed.

Both spawners apply the same steps in the same order (``cells/_spawn.c`` in C, :func:`apply` here
for the fork path): unshare the cgroup namespace, drop the bounding set (needs CAP_SETPCAP, so
before any uid switch), switch uid/gid, cut the other sets, then -- last, so that nothing but execve
runs under it -- no_new_privs and the seccomp filter.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from cells import capabilities
from cells import namespaces as ns
from cells.spec import CellSpec, ExecutableSpec

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522


@dataclass(frozen=True)
class SecurityProfile:
    """What :func:`cells.spawn.spawn` applies in the child. ``caps`` None: capabilities untouched."""

    caps: frozenset[str] | None
    no_new_privs: bool
    seccomp: bytes | None
    unshare: int  # CLONE_NEW* flags unshared after the cell's namespaces are entered

    @property
    def cap_mask(self) -> int:
        """For the C spawner: the kept capabilities as a mask, -1 for "leave them alone"."""
        return -1 if self.caps is None else capabilities.mask(self.caps)

    @property
    def privileged(self) -> bool:
        return self.caps is None


PRIVILEGED = SecurityProfile(caps=None, no_new_privs=False, seccomp=None, unshare=0)


def is_privileged(cell: CellSpec, exe: ExecutableSpec) -> bool:
    return cell.privileged or exe.privileged


def effective_caps(cell: CellSpec, exe: ExecutableSpec) -> frozenset[str]:
    """The default set, then the cell's adjustments, then the executable's."""
    return capabilities.effective_set((cell.cap_add, cell.cap_drop), (exe.cap_add, exe.cap_drop))


def for_executable(cell: CellSpec, exe: ExecutableSpec) -> SecurityProfile:
    """The profile of ``exe`` in ``cell``; the seccomp program is built once per capability set."""
    if is_privileged(cell, exe):
        return PRIVILEGED
    from cells import seccomp  # libseccomp is loaded only once a contained workload starts

    caps = effective_caps(cell, exe)
    return SecurityProfile(caps=caps, no_new_privs=True, seccomp=seccomp.filter_for(caps), unshare=ns.CLONE_NEWCGROUP)


# -- the fork path: the same steps through libc ------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def drop_bounding(caps: frozenset[str]) -> None:
    """Drop every capability not in ``caps`` from the bounding set (EINVAL: past the kernel's last)."""
    keep = capabilities.mask(caps)
    for cap in range(64):
        dropped = keep & (1 << cap) or _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0
        if not dropped and ctypes.get_errno() != 22:  # EINVAL: past the kernel's last capability
            _check(-1, "prctl(PR_CAPBSET_DROP)")


def cut_sets(caps: frozenset[str]) -> None:
    """Permitted and effective to ``caps`` (or less, after a uid switch), inheritable and ambient empty."""
    keep = capabilities.mask(caps)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for i in range(2):
        part = (keep >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted &= part
        data[i].effective &= part
        data[i].inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    if _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
        _check(-1, "prctl(PR_CAP_AMBIENT)")


def set_no_new_privs() -> None:
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def for_holder() -> SecurityProfile:
    """The namespace holder (a shell waiting forever) needs no capability at all."""
    from cells import seccomp

    return SecurityProfile(
        caps=frozenset(), no_new_privs=True, seccomp=seccomp.filter_for(capabilities.DEFAULT_CAPS), unshare=0
    )
