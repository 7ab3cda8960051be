"""The spawn path: one workload process, in its cgroup and namespaces before its first instruction.

Two spawners with the same contract (:func:`spawn`): the C extension :mod:`cells._spawn` (clone3
with CLONE_VM and CLONE_INTO_CGROUP, v1 hierarchies joined thread-wise: no copy of the supervisor's
page tables and no cgroup.procs write, see ``_spawn.c``) for requests described as data (:attr:`ExecRequest.cgroup_procs`,
:attr:`ExecRequest.namespaces`), and :func:`fork_exec`, which runs an arbitrary Python ``setup``
between fork and exec (the namespace holder needs that) and is the fallback when the extension was
not built. Why not ``subprocess``: the supervisor reaps every child itself (``waitpid(-1)`` in its
SIGCHLD handler), which ``Popen`` objects would race with. In the fork path exec failures come back
through a CLOEXEC pipe as ``stage\\0errno\\0text`` (an empty read means the exec succeeded); the C
path reports the same stage names. Not PR_SET_PDEATHSIG: workloads must outlive a supervisor restart.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import fcntl
import functools
import os
import select
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from cells import namespaces as ns
from cells import profile
from cells.errors import CellError, ExecTimeout, InvalidArgument, ResourceExhausted, RuntimeFailure
from cells.profile import SecurityProfile

try:
    from cells import _spawn as _c_spawn  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler: the fork path does everything
    _c_spawn = None

PIPE_SIZE = 1024 * 1024
#: How long the parent waits for a child to exec by default (:attr:`ExecRequest.exec_timeout_s`). It
#: only fails to when something is badly wrong: a frozen cgroup, a CPU quota too small to run the
#: exec path, a hung filesystem. The event loop is blocked meanwhile.
EXEC_TIMEOUT_S = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_SELF_PIDNS: int | None = None


def self_pidns_fd() -> int:
    """An fd on the supervisor's own pid namespace, to restore pid_for_children after a fork."""
    global _SELF_PIDNS
    if _SELF_PIDNS is None:
        _SELF_PIDNS = ns.open_ns("self", "pid")
    return _SELF_PIDNS


class _StageError(Exception):
    def __init__(self, stage: str, err: int, text: str) -> None:
        super().__init__(text)
        self.stage, self.err, self.text = stage, err, text


def stage(name: str, fn: Callable[[], object]) -> None:
    """Run one child setup step, labelling its OSError with ``name`` for the parent's report."""
    try:
        fn()
    except OSError as exc:
        raise _StageError(name, exc.errno or errno_mod.EIO, exc.strerror or str(exc)) from None


def join_cgroup(procs_files: Sequence[str]) -> None:
    """Child side: write our own pid into every hierarchy's cgroup.procs (one pid per write)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


@dataclass
class ExecRequest:
    argv: Sequence[str]
    env: dict[str, str]
    #: runs in the child after fork, after the joins below, before stdio is wired and fds are closed;
    #: raise via :func:`stage`. Only the fork path can run it.
    setup: Callable[[], None] | None
    stdin: int  # fds in the parent, dup'ed onto 0/1/2 in the child
    stdout: int
    stderr: int
    cwd: str = ""
    #: the cgroup.procs files to join, the unified hierarchy's first (``CgroupBackend.procs_files``)
    cgroup_procs: Sequence[str] = ()
    #: (fd, CLONE_NEW*) entered in order after the cgroup joins
    namespaces: Sequence[tuple[int, int]] = ()
    uid: int | None = None
    gid: int | None = None
    #: the pid namespace the child is born in (setns around fork in the parent); None: the supervisor's
    pidns_fd: int | None = None
    #: parent-side fds to close after the fork (the child's ends of pipes)
    close_in_parent: list[int] = field(default_factory=list)
    #: the child is killed (:class:`ExecTimeout`) if it has not exec'd by then
    exec_timeout_s: float = EXEC_TIMEOUT_S
    #: capabilities, no_new_privs, seccomp, cgroup namespace (:mod:`cells.profile`); None: untouched
    profile: SecurityProfile | None = None
    #: clone the child sharing the caller's memory (no page-table copy); False under a memory limit,
    #: whose OOM kill of the child before its exec would kill every process sharing that memory
    share_memory: bool = True


def _child(req: ExecRequest, errw: int) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()
        if req.cgroup_procs:
            stage("cgroup", lambda: join_cgroup(req.cgroup_procs))
        for fd, kind in req.namespaces:
            stage("setns", functools.partial(ns.setns, fd, kind))
        if req.setup is not None:
            req.setup()
        prof = req.profile
        if prof is not None and prof.unshare:
            stage("unshare", functools.partial(ns.unshare, prof.unshare))
        if prof is not None and prof.caps is not None:
            stage("caps", functools.partial(profile.drop_bounding, prof.caps))
        if req.gid is not None or req.uid is not None:
            stage("setgroups", lambda: os.setgroups([]))
        if req.gid is not None:
            stage("setgid", lambda: os.setgid(req.gid))  # type: ignore[arg-type]
        if req.uid is not None:
            stage("setuid", lambda: os.setuid(req.uid))  # type: ignore[arg-type]
        if prof is not None and prof.caps is not None:
            stage("caps", functools.partial(profile.cut_sets, prof.caps))
        if req.cwd:
            stage("chdir", lambda: os.chdir(req.cwd))
        os.dup2(req.stdin, 0)
        os.dup2(req.stdout, 1)
        os.dup2(req.stderr, 2)
        os.closerange(3, errw)
        os.closerange(errw + 1, 1 << 30)
        if prof is not None and prof.no_new_privs:
            stage("no_new_privs", profile.set_no_new_privs)
        if prof is not None and prof.seccomp is not None:
            from cells import seccomp

            stage("seccomp", functools.partial(seccomp.load, prof.seccomp))
        stage("exec", lambda: os.execvpe(req.argv[0], list(req.argv), req.env))
    except _StageError as exc:
        msg = f"{exc.stage}\0{exc.err}\0{exc.text}"
    except BaseException as exc:  # noqa: BLE001 - anything else: report, never return into the parent's code
        msg = f"setup\0{errno_mod.EIO}\0{type(exc).__name__}: {exc}"
    try:
        os.write(errw, msg.encode(errors="replace")[:4000])
    finally:
        os._exit(127)


def _read_report(fd: int, pid: int, timeout_s: float) -> bytes:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    chunks: list[bytes] = []
    while True:
        if not poller.poll(timeout_s * 1000):
            os.kill(pid, signal.SIGKILL)
            return b"setup\0%d\0" % errno_mod.ETIMEDOUT
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _error_for(report: bytes, req: ExecRequest) -> CellError:
    stage_name, _, rest = report.decode(errors="replace").partition("\0")
    err_s, _, text = rest.partition("\0")
    return _stage_error(stage_name, err_s, text, req)


def _stage_error(stage_name: str, err_s: str, text: str, req: ExecRequest) -> CellError:
    if stage_name == "setup" and err_s == str(errno_mod.ETIMEDOUT):
        return ExecTimeout(f"spawn failed at setup: child did not exec within {req.exec_timeout_s:g}s")
    if stage_name == "exec":
        return InvalidArgument("executable.argv", f"{req.argv[0]}: {text}")
    if stage_name == "chdir":
        return InvalidArgument("executable.cwd", f"{req.cwd}: {text}")
    if stage_name in ("setuid", "setgid", "setgroups"):
        return InvalidArgument(f"executable.{stage_name.removeprefix('set')}", text)
    return RuntimeFailure(f"spawn failed at {stage_name}: {text} (errno {err_s})")


def spawn(req: ExecRequest) -> int:
    """Start ``req``; return the pid once it exec'd, or raise (child reaped). C path when possible."""
    if can_clone(req):
        try:
            return clone_exec(req)
        except NoClone3:  # a kernel without clone3/CLONE_INTO_CGROUP: fork from now on
            disable_clone()
    return fork_exec(req)


def can_clone(req: ExecRequest) -> bool:
    """Whether :func:`clone_start` can run ``req`` (the extension is built, no Python ``setup``)."""
    return _c_spawn is not None and _c_spawn.SUPPORTED and req.setup is None


def disable_clone() -> None:
    """After :class:`NoClone3`: every later request takes the fork path."""
    global _c_spawn
    _c_spawn = None


class NoClone3(Exception):
    """clone3 is missing (kernel < 5.3): the request is untouched, retry it with :func:`fork_exec`."""


def _exec_candidates(argv0: str, env: dict[str, str]) -> list[bytes]:
    """The paths ``os.execvpe`` would try, in order: argv0 itself if it has a slash, else PATH's."""
    if os.path.dirname(argv0):
        return [os.fsencode(argv0)]
    return [os.fsencode(os.path.join(d, argv0)) for d in os.get_exec_path(env)]


class Cloned(NamedTuple):
    """What :func:`clone_start` reports about its child."""

    pid: int
    stage: str  # "" once it exec'd; else the failing step (the child is dead, not reaped)
    err: int
    ns_pid: int  # its pid in its own pid namespace, read by the child itself (0: it never ran)

    def failure(self, req: ExecRequest) -> CellError:
        return _stage_error(self.stage, str(self.err), os.strerror(self.err), req)


def clone_exec(req: ExecRequest) -> int:
    """:func:`fork_exec` done by :mod:`cells._spawn`: same stages, errors and guarantees."""
    cloned = clone_start(req)
    if cloned.stage:
        os.waitpid(cloned.pid, 0)
        raise cloned.failure(req)
    return cloned.pid


def clone_start(req: ExecRequest) -> Cloned:
    """Run ``req`` with :mod:`cells._spawn`; a failed child is dead but not reaped (the caller reaps
    it: a supervisor's SIGCHLD reaper may be racing for it). Safe in a worker thread: the GIL is
    released while it waits for the exec.

    The unified hierarchy is joined at birth (CLONE_INTO_CGROUP on the leaf's directory), the v1
    ones (hybrid hosts) by the child writing "0" to their ``tasks`` files before exec.
    """
    assert _c_spawn is not None
    prof = req.profile or profile.PRIVILEGED
    cgroup_fd = -1
    keep = False
    tasks: list[bytes] = []
    try:
        if req.cgroup_procs:
            unified, *v1 = (os.path.dirname(p) for p in req.cgroup_procs)
            tasks = [os.fsencode(os.path.join(d, "tasks")) for d in v1]
            try:
                cgroup_fd = os.open(unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise RuntimeFailure(f"spawn failed at cgroup: {exc.strerror} (errno {exc.errno})") from None
        result = _c_spawn.spawn(
            [os.fsencode(a) for a in req.argv],
            [os.fsencode(f"{k}={v}") for k, v in req.env.items()],
            _exec_candidates(req.argv[0], req.env),
            (req.stdin, req.stdout, req.stderr),
            os.fsencode(req.cwd) if req.cwd else None,
            -1 if req.uid is None else req.uid,
            -1 if req.gid is None else req.gid,
            cgroup_fd,
            tasks,
            list(req.namespaces),
            -1 if req.pidns_fd is None else req.pidns_fd,
            self_pidns_fd() if req.pidns_fd is not None else -1,
            max(1, int(req.exec_timeout_s * 1000)),
            prof.unshare,
            prof.cap_mask,
            prof.no_new_privs,
            prof.seccomp,
            req.share_memory,
        )
    except OSError as exc:  # clone3 itself (or setns into the cell's pid namespace) failed
        if exc.errno == errno_mod.ENOSYS:
            keep = True  # the fork path takes over the request, fds included
            raise NoClone3() from exc
        if exc.errno == errno_mod.EAGAIN:  # pure v2: born in a leaf whose pids.max is reached
            raise ResourceExhausted(
                f"spawn failed at clone: {exc.strerror} (pids limit of the cell?)"
            ) from None
        raise RuntimeFailure(f"spawn failed at clone: {exc.strerror} (errno {exc.errno})") from None
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
        if not keep:
            for fd in req.close_in_parent:
                os.close(fd)
            req.close_in_parent = []
    return Cloned(*result)


def fork_exec(req: ExecRequest) -> int:
    """Fork, set up and exec; return the pid once the exec succeeded, or raise (child reaped)."""
    errr, errw = os.pipe2(os.O_CLOEXEC)
    try:
        if req.pidns_fd is not None:
            ns.setns(req.pidns_fd, ns.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            if req.pidns_fd is not None:
                ns.setns(self_pidns_fd(), ns.CLONE_NEWPID)
            raise
        if pid == 0:  # pragma: no cover - the child never returns, never runs a finally of ours
            os.close(errr)
            _child(req, errw)
        if req.pidns_fd is not None:
            ns.setns(self_pidns_fd(), ns.CLONE_NEWPID)
        os.close(errw)
        errw = -1
        for fd in req.close_in_parent:
            os.close(fd)
        req.close_in_parent = []
        report = _read_report(errr, pid, req.exec_timeout_s)
    finally:
        os.close(errr)
        if errw >= 0:
            os.close(errw)
        for fd in req.close_in_parent:
            os.close(fd)
    if report:
        os.waitpid(pid, 0)
        raise _error_for(report, req)
    return pid


def output_pipe() -> tuple[int, int]:
    """(read end non-blocking, write end), 1 MiB so a burst never blocks the workload."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # above pipe-max-size somehow: the default 64 KiB still works
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    os.set_blocking(r, False)
    return r, w


def default_env(cell: str, executable: str, extra: Sequence[tuple[str, str]]) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "HOME": "/", "CELLAR_CELL": cell, "CELLAR_EXECUTABLE": executable}
    env.update(extra)
    return env


def open_devnull() -> int:
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
