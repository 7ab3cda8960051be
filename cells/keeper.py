"""The keeper: a tiny process above the supervisor that keeps workloads' exit statuses across its crash.

    python -m cells.keeper --config-json '<RuntimeConfig JSON>'

cellard (:mod:`cells.client`) starts this instead of the supervisor (new session, so it outlives
cellard); it starts the supervisor as its child and sets PR_SET_CHILD_SUBREAPER, as containerd's shim
parents a container. While the supervisor runs nothing changes: workloads are the supervisor's
children and it reaps them. When the supervisor dies, the kernel reparents its children (workloads,
namespace holders, the fd store) to the nearest subreaper, this process. Those children are noted
then; when one of them ends, the keeper takes its wait status with ``waitid(WNOWAIT)`` (the zombie
still holds its pid), reads its start time from ``/proc/<pid>/stat``, appends ``pid start status
reaped_ns`` to ``<run_dir>/keeper.exits`` (flock, fsync) and only then reaps it. So a record exists before the
pid can be reused, and (pid, start time) names one process for good. Other orphans (a workload's
grandchildren whose parent died) are reaped without a record.

The successor supervisor adopts the survivors by pidfd (:mod:`cells.reconcile`); when one ends, or
is found gone at reconcile, it takes the keeper's record instead of recording ``lost``, then prunes
what it consumed (the file holds at most the records of adopted executables still running). The run
dir survives a supervisor and a cellard crash, not a reboot: after a reboot nothing is left to adopt.

The keeper restarts a supervisor that died unexpectedly (killed by a signal, or exit status other
than 0) while workloads are left to protect: after 2.5 s, doubling for each quick death (up to 30 s,
reset after 10 s of uptime), never a tight loop; at once when a client asks for a supervisor meanwhile
(a second keeper, started by cellard's respawn after its health probe saw the death, finds the lock
held and sends the keeper SIGHUP), so with cellard running a crash costs what it did without keeper. A supervisor that ends with
status 0 (a ``shutdown`` request, SIGTERM, or a lost start race on ``supervisor.lock``) ends the
keeper too, and so does one that fails before it ever got ready (its status is the keeper's: cellard
reports it) or dies with no workload left (cellard's next call starts both again). SIGTERM/SIGINT to
the keeper are passed to the supervisor (which leaves workloads running) and the keeper exits with
it. An exclusive flock on ``<run_dir>/keeper.lock`` makes a second keeper of the same config exit 0
at once (the client then waits for the first one's supervisor, as it did for a second supervisor).

If the keeper itself is SIGKILLed, its supervisor lives on (reparented to init) and so do the
workloads, but whatever ends from then on while no supervisor parents it is init's child: its status
is unseen, ``lost`` as before the keeper existed. That is the "host went away" case.

Small on purpose: no thread, no asyncio, only the standard library's os/signal/time/fcntl/json
(``ctypes`` for prctl), run with ``python -S``; signals are blocked and taken with ``sigtimedwait``.
Before it spawns the supervisor it imports only json: its hop on cellard's first start is one bare
Python start. Measured (bench/supervisor_start.py, 2-vCPU host under other test load): cold start to
the first answered ping p50 523 ms through the keeper against 474 ms for the supervisor alone (+10 %,
within the run-to-run spread); the keeper's RSS is 11.4 MiB (the idle supervisor's 32.8 MiB).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

EXITS_FILE = "keeper.exits"
LOCK_FILE = "keeper.lock"
#: Set in the supervisor's environment: the keeper's pid (the supervisor checks it is still its parent).
KEEPER_PID_ENV = "CELLAR_KEEPER_PID"
PR_SET_CHILD_SUBREAPER = 36
#: The first restart waits a little longer than cellard's health probe interval (2 s): with cellard
#: running, it notices the death (NOT_SERVING) and asks for a successor itself, which wakes us (SIGHUP);
#: without cellard, this is how long its workloads' exits wait to be recorded by a supervisor.
BACKOFF_FIRST_S = 2.5
BACKOFF_MAX_S = 30.0
#: A supervisor that ran this long resets the backoff.
BACKOFF_RESET_S = 10.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exits_path(run_dir: str) -> str:
    return os.path.join(run_dir, EXITS_FILE)


# -- records: shared by the keeper (writes) and the supervisor (reads, prunes) --------------------------


def proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), zombies too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _open_locked(path: str, flags: int) -> int:
    """``path`` opened and flocked; reopened if it was replaced (pruned) while we waited for the lock."""
    while True:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


#: One record: (pid, start time in ticks since boot, wait status, wall-clock ns when it was reaped).
Record = tuple[int, int, int, int]


def append_record(path: str, pid: int, start: int, status: int, reaped_ns: int | None = None) -> None:
    """One exit, durably: appended under the file's lock, then fsynced."""
    reaped_ns = time.time_ns() if reaped_ns is None else reaped_ns
    fd = _open_locked(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{pid} {start} {status} {reaped_ns}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(data: bytes) -> list[Record]:
    records = []
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts):  # a torn line is skipped
            records.append((int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])))
    return records


def read_records(path: str) -> list[Record]:
    """Every ``(pid, start, wait status, reaped_ns)`` recorded, oldest first."""
    try:
        with open(path, "rb") as f:
            return _parse(f.read())
    except FileNotFoundError:
        return []


def prune_records(path: str, keep_pids: set[int]) -> int:
    """Drop every record whose pid is not in ``keep_pids``; returns how many are left."""
    if not os.path.exists(path):
        return 0
    fd = _open_locked(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        records = _parse(os.pread(fd, size, 0)) if size else []
        kept = [r for r in records if r[0] in keep_pids]
        if len(kept) == len(records):
            return len(kept)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(f"{p} {s} {st} {r}\n".encode() for p, s, st, r in kept))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)  # an appender waiting on the old file's lock reopens the new one
        return len(kept)
    finally:
        os.close(fd)


def ticks_to_wall_ns(ticks: int) -> int:
    """A ``/proc`` start time as wall-clock nanoseconds (to 1/CLK_TCK)."""
    boot_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return boot_ns + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class KeeperLink:
    """The supervisor's side: the records of the keeper that parents it (see :func:`link`)."""

    def __init__(self, run_dir: str, keeper_pid: int) -> None:
        self.path = exits_path(run_dir)
        self.keeper_pid = keeper_pid

    def status_of(self, pid: int, start: int) -> int | None:
        """The recorded wait status of exactly the process (pid, start), None if there is none (yet)."""
        for p, s, status, _ in reversed(read_records(self.path)):
            if p == pid and s == start:
                return status
        return None

    def status_near(self, pid: int, lo_ns: int, hi_ns: int, reaped_after_ns: int) -> tuple[int, int] | None:
        """``(start, status)`` of the newest record of ``pid`` whose process started between ``lo_ns`` and
        ``hi_ns`` (wall clock) and was reaped after ``reaped_after_ns``: for an executable found gone,
        whose start tick was never read. An earlier holder of its pid ended before it started."""
        for p, s, status, reaped in reversed(read_records(self.path)):
            if p == pid and lo_ns <= ticks_to_wall_ns(s) <= hi_ns and reaped >= reaped_after_ns:
                return s, status
        return None

    def pending(self, pid: int) -> bool:
        """``pid`` (ended, or ending: its pidfd fired) is still the keeper's child, so its record is on
        its way (written before the reap). Not only zombies: a pidfd can fire before the state is Z."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
        except (OSError, IndexError):
            return False
        return int(fields[1]) == self.keeper_pid and self.alive()

    def alive(self) -> bool:
        return os.getppid() == self.keeper_pid

    def prune(self, keep_pids: set[int]) -> None:
        try:  # noqa: SIM105 - contextlib is an import the keeper process need not pay for
            prune_records(self.path, keep_pids)
        except OSError:
            pass  # best effort: the file only grows by what ended while no supervisor ran


def link(run_dir: str) -> KeeperLink | None:
    """The keeper parenting this process (a supervisor it started), None without one (started
    directly, or the keeper died: then nothing records exits for us)."""
    value = os.environ.get(KEEPER_PID_ENV, "")
    if not value.isdigit() or os.getppid() != int(value):
        return None
    return KeeperLink(run_dir, int(value))


# -- the keeper process ---------------------------------------------------------------------------------


def _wait_status(result: os.waitid_result) -> int:
    """A ``waitid`` siginfo as the int ``waitpid`` would have returned."""
    if result.si_code == os.CLD_EXITED:
        return (result.si_status & 0xFF) << 8
    return result.si_status | (0x80 if result.si_code == os.CLD_DUMPED else 0)


def _children() -> set[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:  # no CONFIG_PROC_CHILDREN: scan
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        if int(f.read().rsplit(b") ", 1)[1].split()[1]) == me:
                            found.add(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
        return found


def _is_fdstore(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"cells.fdstore" in f.read().split(b"\0")
    except OSError:
        return False


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class Keeper:
    def __init__(self, config_json: str, run_dir: str, pid_path: str) -> None:
        self.config_json = config_json
        self.exits = exits_path(run_dir)
        self.pid_path = pid_path
        self.supervisor = 0  # its pid while one runs
        self.started_at = 0.0
        self.ever_ready = False
        self.failures = 0  # unexpected deaths in a row (for the backoff)
        self.restart_at: float | None = None
        self.stopping = False
        self.known: set[int] = set()  # reparented from a dead supervisor: their exits are recorded

    def spawn(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env[KEEPER_PID_ENV] = str(os.getpid())
        self.supervisor = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "cells.supervisor", "--config-json", self.config_json],
            env,
            setsigmask=(),  # ours are blocked for sigtimedwait; the supervisor starts with none
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def run(self) -> int:
        # The supervisor first: everything else here is off the path of cellard's first start (signal
        # imports enum, ctypes its own machinery: ~10 ms each on a loaded host). A child dying meanwhile
        # is found by the first waitid below; only what dies after PR_SET_CHILD_SUBREAPER is ours,
        # and the supervisor has no child before it has imported its modules.
        self.spawn()
        import signal

        _set_subreaper()
        signals = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        while True:
            code = self._reap()
            if code is not None:
                return code
            if self.restart_at is not None and time.monotonic() >= self.restart_at:
                self.spawn()
                continue
            timeout = None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())
            info = signal.sigtimedwait(signals, 3600.0 if timeout is None else timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                if not self.supervisor:
                    return 0
                os.kill(self.supervisor, signal.SIGTERM)
            elif info is not None and info.si_signo == signal.SIGHUP and self.restart_at is not None:
                self.restart_at = time.monotonic()  # a client asks for a supervisor: no more waiting

    def _reap(self) -> int | None:
        """Take every ended child; an exit code when the keeper is done."""
        while True:
            try:
                result = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                result = None
            if result is None or not result.si_pid:
                return None
            pid, status = result.si_pid, _wait_status(result)
            if pid == self.supervisor:
                os.waitpid(pid, 0)
                code = self._supervisor_ended(pid, status)
                if code is not None:
                    return code
                continue
            if pid in self.known:
                self.known.discard(pid)
                start = proc_start(pid)
                if start is not None:
                    try:
                        append_record(self.exits, pid, start, status)
                    except OSError as exc:
                        print(f"keeper: cannot record the exit of {pid}: {exc}", file=sys.stderr, flush=True)
            os.waitpid(pid, 0)

    def _supervisor_ended(self, pid: int, status: int) -> int | None:
        self.supervisor = 0
        self.known |= _children()  # reparented to us before we were told: the workloads
        ready = self.ever_ready or self._was_ready(pid)
        self.ever_ready = ready
        if self.stopping or (os.WIFEXITED(status) and os.waitstatus_to_exitcode(status) == 0):
            return 0
        code = _exit_code(status)
        if not ready:
            print(f"keeper: the supervisor failed before it was ready (status {code})", file=sys.stderr, flush=True)
            return code
        if not [p for p in _children() if not _is_fdstore(p)]:
            return code  # nothing to keep: the next client call starts both again
        ran = time.monotonic() - self.started_at
        self.failures = 1 if ran >= BACKOFF_RESET_S else self.failures + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
        print(f"keeper: supervisor {pid} died (status {code}); restarting in {delay:g}s", file=sys.stderr, flush=True)
        self.restart_at = time.monotonic() + delay
        return None

    def _was_ready(self, pid: int) -> bool:
        """It wrote its pid file (done once it serves) and never removed it (as a clean stop does)."""
        try:
            with open(self.pid_path) as f:
                return f.read().strip() == str(pid)
        except OSError:
            return False


def _set_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def main(argv: list[str] | None = None) -> int:
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--config-json":
        print("usage: python -m cells.keeper --config-json JSON", file=sys.stderr)
        return 2
    config = json.loads(args[1])
    run_dir = config.get("run_dir") or "/run/cellar"
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # A client wants a supervisor: if the keeper holding the lock waits to restart one, now.
        try:
            import signal

            holder = int(os.pread(lock, 32, 0).split()[0])
            os.kill(holder, signal.SIGHUP)
        except (OSError, ValueError, IndexError):
            pass
        print("another keeper holds the lock; exiting", file=sys.stderr)
        return 0
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    return Keeper(args[1], run_dir, os.path.join(run_dir, "supervisor.pid")).run()


if __name__ == "__main__":
    sys.exit(main())
