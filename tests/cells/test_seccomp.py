"""The default seccomp filter, attacked the way a contained workload would.

Every test that installs a filter does it in a forked child (no_new_privs, :func:`seccomp.load`, then
the syscall through libc's ``syscall()``), which reports the errno through a pipe: the test process
itself stays unfiltered. Where the host allows it, the same call is made in an unfiltered child as
well, so an EPERM is seccomp's and not the kernel's own answer to bad arguments.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable

import pyseccomp
import pytest

from cells import seccomp
from cells.capabilities import DEFAULT_CAPS
from cells.errors import RuntimeFailure

PR_SET_NO_NEW_PRIVS = 38
CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLOCK_REALTIME = 0
PTRACE_TRACEME = 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _nr(name: str) -> int:
    number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    assert number >= 0, f"{name} has no number on this architecture"
    return int(number)


def sys_errno(name: str | int, *args: int | bytes) -> int:
    """The raw syscall's errno, 0 when it succeeded."""
    number = _nr(name) if isinstance(name, str) else name
    cargs = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    rc = _libc.syscall(ctypes.c_long(number), *cargs)
    return ctypes.get_errno() if rc == -1 else 0


def in_child(action: Callable[[], int], caps: frozenset[str] | None = DEFAULT_CAPS) -> int:
    """``action()``'s result in a forked child, under the filter for ``caps`` (None: unfiltered)."""
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")
    program = None if caps is None else seccomp.filter_for(caps)  # built here, not in the child
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if program is not None:
                if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
                seccomp.load(program)
            os.write(w, str(action()).encode())
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - report anything, never return into pytest
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as reader:
        out = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child failed: {out}"
    return int(out)


def exec_in_child(argv: list[str], caps: frozenset[str] = DEFAULT_CAPS, via_path: bool = False) -> int:
    """The exit code of ``argv`` exec'd in a filtered child, as the fork spawner does it."""
    program = seccomp.filter_for(caps)
    pid = os.fork()
    if pid == 0:
        try:
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.load(program)
            if via_path:
                os.execvpe(argv[0], argv, {"PATH": "/usr/bin:/bin"})
            os.execv(argv[0], argv)
        finally:
            os._exit(126)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- the program itself (no root needed) --------------------------------------------------------------


def test_program_is_a_sock_filter_array_built_once_per_set() -> None:
    program = seccomp.filter_for(DEFAULT_CAPS)
    assert isinstance(program, bytes) and len(program) % 8 == 0
    assert 0 < len(program) // 8 <= seccomp.BPF_MAXINSNS
    assert seccomp.filter_for(DEFAULT_CAPS) is program
    # NET_ADMIN is never mentioned by the profile: the same program, not a second build
    assert seccomp.filter_for(DEFAULT_CAPS | {"NET_ADMIN"}) is program
    assert seccomp.filter_for(DEFAULT_CAPS | {"SYS_ADMIN"}) != program


def test_missing_libseccomp_is_an_error_not_an_empty_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import pyseccomp -> ImportError
    with pytest.raises(RuntimeFailure, match="libseccomp2"):
        seccomp._build.__wrapped__(frozenset({"CAP_CHOWN"}))


def test_rules_apply_as_in_moby() -> None:
    """includes: every cap held, arch listed, kernel new enough; excludes: any cap held or arch listed."""
    caps = frozenset({"CAP_SYS_ADMIN", "CAP_CHOWN"})
    assert seccomp._applies({"includes": {"caps": ["CAP_SYS_ADMIN", "CAP_CHOWN"]}}, caps, "amd64")
    assert not seccomp._applies({"includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}}, caps, "amd64")
    assert not seccomp._applies({"excludes": {"caps": ["CAP_BPF", "CAP_CHOWN"]}}, caps, "amd64")
    assert seccomp._applies({"excludes": {"arches": ["s390x"]}}, caps, "amd64")
    assert not seccomp._applies({"includes": {"arches": ["arm64"]}}, caps, "amd64")
    assert seccomp._applies({"includes": {"minKernel": "4.8"}}, caps, "amd64")
    assert not seccomp._applies({"includes": {"minKernel": "999.0"}}, caps, "amd64")
    assert not seccomp._applies({"excludes": {"minKernel": "4.8"}}, caps, "amd64")


def test_conditions_on_one_argument_become_separate_rules_as_in_runc() -> None:
    eq = {"op": "SCMP_CMP_EQ", "value": 1}
    assert [
        len(rule) for rule in seccomp._conditions(pyseccomp, [{"index": 0, **eq}, {"index": 1, **eq}])
    ] == [2]
    assert [
        len(rule) for rule in seccomp._conditions(pyseccomp, [{"index": 0, **eq}, {"index": 0, **eq}])
    ] == [1, 1]
    assert seccomp._conditions(pyseccomp, []) == [[]]


def test_load_refuses_a_torn_program() -> None:
    with pytest.raises(ValueError):
        seccomp.load(b"\x06\x00\x00\x00")


# -- what the default set cannot do ------------------------------------------------------------------

BLOCKED: list[tuple[str, tuple[int | bytes, ...]]] = [
    ("mount", (0, 0, 0, 0, 0)),
    ("umount2", (0, 0)),
    ("pivot_root", (0, 0)),
    ("unshare", (CLONE_NEWUSER,)),
    ("unshare", (CLONE_NEWNS,)),
    ("setns", (-1, 0)),
    ("clone", (CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0)),  # namespace flag: EPERM before EINVAL
    ("keyctl", (9999, 0, 0, 0, 0)),
    ("add_key", (0, 0, 0, 0, 0)),
    ("request_key", (0, 0, 0, 0)),
    ("bpf", (-1, 0, 0)),
    ("perf_event_open", (0, 0, -1, -1, 0)),
    ("settimeofday", (0, 0)),
    ("clock_settime", (CLOCK_REALTIME, 0)),
    ("swapon", (0, 0)),
    ("open_by_handle_at", (-1, 0, 0)),
    ("acct", (1,)),  # a bad pointer: an unfiltered root gets EFAULT, not accounting turned off
    ("reboot", (0, 0, 0, 0)),  # bad magic: EINVAL unfiltered
    ("userfaultfd", (0,)),  # not in Docker's profile
    ("personality", (0xFFFF,)),
]
#: their unfiltered answer depends on the host (no CONFIG_MODULES/KEXEC, lockdown, modules_disabled)
BLOCKED_HOST_DEPENDENT: list[tuple[str, tuple[int | bytes, ...]]] = [
    ("init_module", (0, 0, 0)),
    ("finit_module", (-1, b"", 0)),
    ("delete_module", (b"", 0)),
    ("kexec_load", (0, 0, 0, 0)),
    ("io_uring_setup", (0, 0)),  # removed from Docker's profile; kernel.io_uring_disabled=2 says EPERM too
]


@pytest.mark.root
@pytest.mark.parametrize(
    ("name", "args"), BLOCKED, ids=[f"{n}-{a[0]:#x}" if n in ("unshare", "clone") else n for n, a in BLOCKED]
)
def test_default_set_gets_eperm_where_root_would_not(name: str, args: tuple[int | bytes, ...]) -> None:
    unfiltered = in_child(lambda: sys_errno(name, *args), caps=None)
    assert unfiltered != errno.EPERM, f"{name}: the kernel itself says EPERM here, the test proves nothing"
    assert in_child(lambda: sys_errno(name, *args)) == errno.EPERM


@pytest.mark.root
@pytest.mark.parametrize(("name", "args"), BLOCKED_HOST_DEPENDENT, ids=[n for n, _ in BLOCKED_HOST_DEPENDENT])
def test_default_set_gets_eperm_whatever_the_host_says(name: str, args: tuple[int | bytes, ...]) -> None:
    assert in_child(lambda: sys_errno(name, *args)) == errno.EPERM


@pytest.mark.root
def test_clone3_says_enosys_so_libc_falls_back_to_clone() -> None:
    assert in_child(lambda: sys_errno("clone3", 0, 0), caps=None) == errno.EINVAL
    assert in_child(lambda: sys_errno("clone3", 0, 0)) == errno.ENOSYS


@pytest.mark.root
def test_syscalls_newer_than_the_filter_say_enosys() -> None:
    """runc's stub: past every number the filter names, ENOSYS (libseccomp alone would say EPERM)."""
    assert in_child(lambda: sys_errno(1000)) == errno.ENOSYS


@pytest.mark.root
def test_a_syscall_of_another_architecture_kills_the_process() -> None:
    """The filter is native-only (see cells.seccomp): an x32 call (bit 30 of the number) is the
    bad-arch action, SIGSYS, never a way around the rules."""
    program = seccomp.filter_for(DEFAULT_CAPS)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.load(program)
            sys_errno(_nr("mount") | 0x40000000, 0, 0, 0, 0, 0)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


@pytest.mark.root
def test_socket_families_outside_dockers_list_are_refused() -> None:
    for family in (socket.AF_ALG, 40):  # 40: AF_VSOCK
        assert in_child(lambda f=family: sys_errno("socket", f, socket.SOCK_STREAM, 0)) == errno.EPERM  # type: ignore[misc]


# -- what the default set can still do ---------------------------------------------------------------


@pytest.mark.root
def test_ordinary_work_still_works() -> None:
    def work() -> int:
        assert sys_errno("getpid") == 0 and os.getpid() > 0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "f")
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            os.write(fd, b"contained")
            os.lseek(fd, 0, os.SEEK_SET)
            assert os.read(fd, 100) == b"contained"
            os.close(fd)
        child = os.fork()  # glibc fork: clone(SIGCHLD), no namespace flag
        if child == 0:
            os._exit(7)
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 7
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM):
            pass
        return 0

    assert in_child(work) == 0


@pytest.mark.root
def test_ptrace_is_allowed_as_in_docker_on_kernels_from_4_8() -> None:
    assert in_child(lambda: sys_errno("ptrace", PTRACE_TRACEME, 0, 0, 0)) == 0


@pytest.mark.root
def test_exec_works_right_after_the_load() -> None:
    assert exec_in_child(["/bin/true"]) == 0
    assert exec_in_child(["/bin/false"]) == 1
    assert exec_in_child(["true"], via_path=True) == 0  # os.execvpe, as the fork spawner does


# -- capabilities unlock their syscalls ---------------------------------------------------------------


@pytest.mark.root
def test_sys_admin_unlocks_mount_unshare_and_clone3() -> None:
    admin = DEFAULT_CAPS | {"SYS_ADMIN"}
    assert in_child(lambda: sys_errno("mount", 0, 0, 0, 0, 0), caps=admin) != errno.EPERM
    assert in_child(lambda: sys_errno("unshare", CLONE_NEWNS), caps=admin) == 0
    assert in_child(lambda: sys_errno("clone3", 0, 0), caps=admin) == errno.EINVAL


@pytest.mark.root
def test_sys_time_unlocks_clock_settime_only() -> None:
    timed = DEFAULT_CAPS | {"SYS_TIME"}
    assert in_child(lambda: sys_errno("clock_settime", CLOCK_REALTIME, 0), caps=timed) == errno.EFAULT
    assert in_child(lambda: sys_errno("mount", 0, 0, 0, 0, 0), caps=timed) == errno.EPERM


@pytest.mark.root
def test_load_reports_the_kernels_errno() -> None:
    def bad() -> int:
        try:
            seccomp.load(b"\x00" * 8)  # no return instruction
        except OSError as exc:
            return exc.errno or -1
        return 0

    assert in_child(bad, caps=None) == errno.EINVAL
