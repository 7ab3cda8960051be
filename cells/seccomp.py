"""Docker's default seccomp filter, built once per capability set as a raw classic-BPF program.

Why raw bytes: both spawners load the filter in the child right before execve -- the C spawner's
clone3 child makes nothing but raw syscalls and cannot call libseccomp, and the Python fork child
should not either. So the supervisor builds the ``struct sock_filter`` array (8 bytes per
instruction, native endianness) once with libseccomp (through the ``pyseccomp`` ctypes binding,
system ``libseccomp.so.2``) and the child only does ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
&fprog)``, after ``no_new_privs`` (:func:`load`). ``seccomp`` and ``prctl`` stay allowed for the
workload, as in Docker; ``execve`` and ``execveat`` are allowed, so the load can be the last step.

The anchor is Docker's behaviour, not a list of our own: ``seccomp_default.json`` is moby's default
profile verbatim (``seccomp/default.json`` of github.com/moby/profiles at commit 02e898b1, where
moby's ``profiles/seccomp/default.json`` now lives; newer than the newest moby/moby copy we found,
00f3d189, which still allowed io_uring and every socket family but AF_VSOCK). It is translated as
moby's ``setupSeccomp`` and runc's ``InitSeccomp`` do:

- default action ``SCMP_ACT_ERRNO`` with ``defaultErrnoRet`` (EPERM); bad architecture: kill.
- a rule applies if its ``includes`` match (every listed capability held, the native arch listed,
  the kernel at least ``minKernel``) and its ``excludes`` don't (any listed capability held, the
  native arch listed). Capabilities are the workload's set (moby: the bounding set).
- ``args`` are AND-ed in one rule -- unless two of them test the same argument: then runc adds one
  rule per condition (OR), and so do we. ``value``/``valueTwo`` are libseccomp's datum a/b.
- names this libseccomp does not know are skipped, as runc does (libseccomp 2.5.4 here: statmount,
  listmount, lsm_*, mseal, the *xattrat calls, uretprobe, riscv_hwprobe).
- architectures: **the native one only** -- where moby adds its ``archMap`` sub-architectures (x86_64:
  x86 and x32). Their rules cost every Start more than the whole rest of the profile (measured
  below); the price is that a 32-bit binary (or an ``int 0x80`` from a 64-bit one) is killed at its
  first syscall (bad-arch action), which is also the safe answer to the classic filter bypass.
- runc's ``-ENOSYS`` stub (``patchbpf``): a native-arch syscall numbered above every syscall the
  filter names gets ENOSYS, not EPERM, so that libc falls back from a syscall newer than this
  libseccomp (e.g. statmount, mseal on kernel 6.18) instead of failing. The stub can only deny.

What a workload with :data:`cells.capabilities.DEFAULT_CAPS` cannot do, then: mount/umount and the
new mount API, pivot_root, unshare/setns and clone with namespace flags, clone3 (ENOSYS, so libc
falls back to clone, whose flags can be checked), keyctl/add_key/request_key, module loading,
kexec, reboot, bpf, perf_event_open, setting the clock, swapon, open_by_handle_at, acct, ptrace
below kernel 4.8 (allowed from 4.8 on, as in Docker), userfaultfd, io_uring, personality other
than the five Docker allows, socket families AF_ALG/AF_VSOCK and the ones the kernel dropped.
Capabilities unlock their syscalls as in Docker (SYS_ADMIN: mount, unshare, clone3...).

Measured (kernel 6.18, libseccomp 2.5.4, 2 CPUs under load ~7 from parallel test runs; default set;
throwaway C/Python harnesses, not asserted anywhere):

- build: 12 ms once per capability set (42 ms with moby's x86 and x32 rules), plus 23 ms for the
  first ``import pyseccomp`` (it runs ``ldconfig -p`` to find the library); the supervisor builds the
  default set's at startup. :func:`filter_for` is cached, so a Start pays a dict lookup. 444
  instructions (6 of them the ENOSYS stub; the kernel takes at most 4096); 1299 with x86 and x32.
- libseccomp's binary-tree optimization (attribute ``SCMP_FLTATR_CTL_OPTIMIZE`` set to 2, as runc
  does; pyseccomp exposes it as ``set_attr(Attr.CTL_OPTIMIZE, 2)``) makes libseccomp's program
  longer (1293 instead of 1048 instructions) and the path a syscall walks far shorter: 16
  instructions on average over x86_64 numbers 0-469 instead of 318, 14 instead of 100 over 20
  common calls (futex 16 instead of 174). The kernel accepts it, so it is on.
- loading, i.e. the ``prctl`` in a forked C child (median of 300): 0.57 ms (min 0.48), roughly
  0.4 µs per instruction, as the kernel converts and JITs the program and precomputes its
  per-syscall allow cache. Native arch only (444 instructions, what we build): 0.23 ms; native + x86
  0.47 ms, native + x32 0.39 ms, all three (moby's) 0.57 ms; unoptimized, 1.75 ms. Against a clone3
  spawn of 0.6-1.7 ms and a budget of 0.5 ms for the whole profile, that decided the architectures.
- the workload's syscalls (C loop, best of 25 x 200k): getpid 140 -> 161 ns. Since kernel 5.11
  seccomp caches per syscall number what the filter always allows and skips the filter for it;
  only the slower syscall entry remains. A call whose argument the filter checks
  (``personality(0xffffffff)``) runs it: 140 -> 212 ns optimized, 434 ns unoptimized.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import platform
import re
import struct
import time
from importlib import resources
from typing import Any

import structlog

from cells.errors import RuntimeFailure

log = structlog.get_logger("cells.seccomp")

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096  # the kernel refuses longer classic-BPF programs
PROFILE_NAME = "seccomp_default.json"

#: platform.machine() -> (moby's name for the native arch in includes/excludes, its archMap key)
_ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
}

# classic BPF: opcodes, the seccomp_data offsets, return values, for the ENOSYS stub
_LD_W_ABS, _JEQ_K, _JGT_K, _JSET_K, _RET_K = 0x20, 0x15, 0x25, 0x45, 0x06
_OFF_NR, _OFF_ARCH = 0, 4
_RET_ERRNO = 0x00050000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000


@functools.lru_cache(maxsize=256)
def filter_for(caps: frozenset[str]) -> bytes:
    """The program for a workload holding ``caps`` (names like ``NET_ADMIN``). Cached per set; sets
    that differ only in capabilities the profile never mentions share one build."""
    held = {"CAP_" + c.upper().removeprefix("CAP_") for c in caps}
    return _build(frozenset(held & _profile_caps()))


def load(program: bytes) -> None:
    """Install ``program`` on the calling thread (the fork child, right before exec). Needs
    no_new_privs already set, or CAP_SYS_ADMIN; raises OSError with the kernel's errno."""
    if not program or len(program) % 8:
        raise ValueError("a seccomp program is a non-empty array of 8-byte sock_filter")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


# -- the build ----------------------------------------------------------------------------------------


@functools.cache
def _profile() -> dict[str, Any]:
    text = resources.files("cells").joinpath(PROFILE_NAME).read_text()
    return dict(json.loads(text))


@functools.cache
def _profile_caps() -> frozenset[str]:
    return frozenset(
        cap
        for rule in _profile()["syscalls"]
        for part in ("includes", "excludes")
        for cap in (rule.get(part) or {}).get("caps", ())
    )


def _libseccomp() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError, RuntimeError) as exc:  # pyseccomp raises RuntimeError when it finds no .so
        raise RuntimeFailure(
            f"seccomp: cannot load libseccomp ({exc}); install the libseccomp2 package (and pyseccomp)"
        ) from exc
    return pyseccomp


@functools.cache
def _kernel() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _applies(rule: dict[str, Any], caps: frozenset[str], arch: str) -> bool:
    """moby's setupSeccomp: excludes first (any match drops the rule), then includes (all must match)."""
    exc, inc = rule.get("excludes") or {}, rule.get("includes") or {}
    if arch in (exc.get("arches") or ()) or caps & set(exc.get("caps") or ()):
        return False
    if exc.get("minKernel") and _kernel() >= _version(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if not set(inc.get("caps") or ()) <= caps:
        return False
    return not (inc.get("minKernel") and _kernel() < _version(inc["minKernel"]))


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _action(sc: Any, name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return int(sc.ERRNO(errno.EPERM if errno_ret is None else errno_ret))
    simple = {
        "SCMP_ACT_ALLOW": sc.ALLOW,
        "SCMP_ACT_KILL": sc.KILL,
        "SCMP_ACT_KILL_THREAD": sc.KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS,
        "SCMP_ACT_TRAP": sc.TRAP,
        "SCMP_ACT_LOG": sc.LOG,
    }
    if name not in simple:
        raise RuntimeFailure(f"seccomp profile: action {name} not supported")
    return int(simple[name])


def _conditions(sc: Any, args: list[dict[str, Any]]) -> list[list[Any]]:
    """The argument conditions as the rules to add: one AND-ed rule, or -- runc's rule when two
    conditions test the same argument -- one rule per condition (OR)."""
    ops = {
        "SCMP_CMP_NE": sc.NE,
        "SCMP_CMP_LT": sc.LT,
        "SCMP_CMP_LE": sc.LE,
        "SCMP_CMP_EQ": sc.EQ,
        "SCMP_CMP_GE": sc.GE,
        "SCMP_CMP_GT": sc.GT,
        "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ,
    }
    conds = [sc.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args]
    indexes = [a["index"] for a in args]
    return [[c] for c in conds] if len(set(indexes)) < len(indexes) else [conds]


@functools.lru_cache(maxsize=64)
def _build(caps: frozenset[str]) -> bytes:
    """The program for ``caps`` given as ``CAP_*`` names, restricted to those the profile mentions."""
    started = time.perf_counter()
    sc = _libseccomp()
    profile = _profile()
    arch, _arch_key = _ARCHES.get(platform.machine(), (platform.machine(), ""))
    try:
        default = _action(sc, profile["defaultAction"], profile.get("defaultErrnoRet"))
        filt = sc.SyscallFilter(default)
        # Native arch only, unlike moby (archMap adds x86 and x32): their rules would more than
        # double what every Start pays to load the filter (see the module docstring). A 32-bit
        # syscall (an i386 binary, or int 0x80 from a 64-bit one) hits the bad-arch action: killed.
        filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # binary tree: see the module docstring
        unknown: set[str] = set()
        highest = -1
        for rule in profile["syscalls"]:
            if not _applies(rule, caps, arch):
                continue
            action = _action(sc, rule["action"], rule.get("errnoRet"))
            if action == default:  # runc: redundant, and libseccomp refuses it
                continue
            for name in rule.get("names") or [rule["name"]]:
                number = sc.resolve_syscall(sc.Arch.NATIVE, name)
                if number == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp
                    unknown.add(name)
                    continue
                highest = max(highest, number)
                for conds in _conditions(sc, rule.get("args") or []):
                    filt.add_rule(action, number, *conds)
        fd = os.memfd_create("cellar-seccomp", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "rb") as handle:
                filt.export_bpf(handle)
            program = os.pread(fd, BPF_MAXINSNS * 8 + 8, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RuntimeFailure(f"seccomp: libseccomp refused the default profile: {exc}") from exc
    if highest >= 0:
        program = _enosys_stub(sc.system_arch(), highest) + program
    if not program or len(program) % 8 or len(program) // 8 > BPF_MAXINSNS:
        raise RuntimeFailure(f"seccomp: the built program has {len(program)} bytes, not a loadable filter")
    log.info(
        "seccomp.built",
        caps=sorted(caps),
        instructions=len(program) // 8,
        ms=round((time.perf_counter() - started) * 1000, 1),
        unknown_syscalls=sorted(unknown),
    )
    return program


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _enosys_stub(native: int, highest: int) -> bytes:
    """runc's patchbpf stub for the native arch: syscall number > ``highest`` -> ENOSYS; everything
    else (other arches, x32 calls, known numbers) falls through to libseccomp's program."""
    x32 = [_insn(_JSET_K, 2, 0, _X32_SYSCALL_BIT)] if native == _AUDIT_ARCH_X86_64 else []
    body = [
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
        *x32,
        _insn(_JGT_K, 0, 1, highest),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
    ]
    head = [_insn(_LD_W_ABS, 0, 0, _OFF_ARCH), _insn(_JEQ_K, 0, len(body), native)]
    return b"".join(head + body)
