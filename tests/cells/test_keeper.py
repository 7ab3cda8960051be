"""The keeper (cells/keeper.py): exit statuses survive a supervisor crash; the keeper restarts it.

Real processes against the real kernel: the supervisor is SIGKILLed while its workloads run, and what
they do while no supervisor runs (exit 3, die of a signal) must be what the successor records, not
``lost``. ``lost`` stays for what the keeper cannot see: its own death (the host-went-away case).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from cells import keeper
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.spec import CellSpec, ExecutableSpec, RestartPolicy
from cells.state import ExecutableInfo, ExecutableState
from observe.logread import LogReader
from observe.logstore import run_dir
from observe.records import Stream

pytestmark = pytest.mark.root

TIMEOUT_S = 20.0


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX"


def _cmdline_pids(module: bytes, config: RuntimeConfig) -> list[int]:
    needle = f'"cgroup_root_name": "{config.cgroup_root_name}"'.encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if module in cmdline.split(b"\0") and needle in cmdline and alive(int(entry)):
                pids.append(int(entry))
    return pids


def keeper_pids(config: RuntimeConfig) -> list[int]:
    return _cmdline_pids(b"cells.keeper", config)


def supervisor_pids(config: RuntimeConfig) -> list[int]:
    return _cmdline_pids(b"cells.supervisor", config)


def zombies_of(parents: set[int]) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] == "Z" and int(fields[1]) in parents:
                out.append(int(entry))
    return out


@pytest.fixture
def cfg(runtime_config: RuntimeConfig) -> Any:
    """``runtime_config``, with every keeper of it killed first at the end (else it would restart the
    supervisor that the runtime_config finalizer kills)."""
    yield runtime_config
    for pid in keeper_pids(runtime_config):
        os.kill(pid, signal.SIGKILL)


def wait_until(what: str, check: Any, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def _client(cfg: RuntimeConfig) -> RuntimeClient:
    return await RuntimeClient.connect(cfg)


async def _info(cfg: RuntimeConfig) -> dict[str, Any]:
    return await (await _client(cfg)).info()


def start(cfg: RuntimeConfig, cell: str, *specs: ExecutableSpec) -> tuple[int, list[ExecutableInfo]]:
    async def body() -> tuple[int, list[ExecutableInfo]]:
        c = await _client(cfg)
        await c.allocate(CellSpec(cell))
        infos = [await c.start(spec) for spec in specs]
        return (await c.info())["supervisor_pid"], infos

    return asyncio.run(body())


def executables(cfg: RuntimeConfig, cell: str) -> dict[str, ExecutableInfo]:
    async def body() -> dict[str, ExecutableInfo]:
        [info] = await (await _client(cfg)).list(cell)
        return {e.name: e for e in info.executables}

    return asyncio.run(body())


def ended(cfg: RuntimeConfig, cell: str, name: str) -> ExecutableInfo:
    def check() -> ExecutableInfo | None:
        exe = executables(cfg, cell)[name]
        return exe if exe.state in (ExecutableState.EXITED, ExecutableState.LOST) else None

    return wait_until(f"{cell}/{name} to end", check)  # type: ignore[no-any-return]


def after_supervisor(pid: int, then: str) -> str:
    """A shell command that runs until supervisor ``pid`` is gone, then ``then``."""
    return f"while kill -0 {pid} 2>/dev/null; do sleep 0.02; done; {then}"


def new_supervisor(cfg: RuntimeConfig, old: int) -> int:
    return wait_until("a successor supervisor", lambda: [p for p in supervisor_pids(cfg) if p != old])[0]  # type: ignore[no-any-return]


def free_all(cfg: RuntimeConfig) -> None:
    async def body() -> None:
        await (await _client(cfg)).shutdown_supervisor(kill_workloads=True)

    asyncio.run(body())


def test_an_exit_while_no_supervisor_runs_keeps_its_code(cfg: RuntimeConfig) -> None:
    """The must-show: exit 3 while the supervisor is dead shows code 3 afterwards, not lost."""
    sup = asyncio.run(_client(cfg)).process
    assert sup is not None  # this client started the keeper
    sup_pid, _ = start(cfg, "c", ExecutableSpec("c", "idle", argv=("sleep", "1000")))
    _, [three, long] = start(
        cfg,
        "d",
        ExecutableSpec("d", "three", command=after_supervisor(sup_pid, "exit 3")),
        ExecutableSpec("d", "later", command=after_supervisor(sup_pid, "sleep 1; exit 4")),
    )
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("exit 3", lambda: not alive(three.host_pid))
    # The one that ends at once is found gone at reconcile; the later one is adopted, then ends.
    exe = ended(cfg, "d", "three")
    assert exe.state is ExecutableState.EXITED and exe.exit is not None and exe.exit.code == 3, exe
    exe = ended(cfg, "d", "later")
    assert exe.state is ExecutableState.EXITED and exe.exit is not None and exe.exit.code == 4, exe
    assert executables(cfg, "c")["idle"].state is ExecutableState.RUNNING
    free_all(cfg)


def test_on_failure_restarts_what_exited_3_while_no_supervisor_ran(cfg: RuntimeConfig, tmp_path: Path) -> None:
    """Issue 14's must-show with the restart policy: the successor learns code 3 and so restarts it."""
    marker = tmp_path / "second-run"
    sup_pid = asyncio.run(_info(cfg))["supervisor_pid"]
    command = f"if [ -e {marker} ]; then exec sleep 1000; fi; touch {marker}; " + after_supervisor(sup_pid, "exit 3")
    spec = ExecutableSpec("f", "svc", command=command, restart=RestartPolicy("on-failure", delay_s=0.2))
    _, [first] = start(cfg, "f", spec)
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("exit 3", lambda: not alive(first.host_pid))

    def restarted() -> ExecutableInfo | None:
        exe = executables(cfg, "f")["svc"]
        return exe if exe.run == 2 and exe.state is ExecutableState.RUNNING else None

    second = wait_until("the restart", restarted)
    assert second.host_pid != first.host_pid
    reader = LogReader(run_dir(Path(cfg.log_dir), "f", "svc", 1))
    [record] = [r.exit_info() for r in reader.read() if r.stream is Stream.EXIT]
    assert record["code"] == 3 and not record.get("lost"), record
    free_all(cfg)


def test_a_signal_death_while_no_supervisor_runs_keeps_its_signal(cfg: RuntimeConfig) -> None:
    sup_pid, [exe, adopted] = start(
        cfg,
        "s",
        ExecutableSpec("s", "killed", argv=("sleep", "1000")),
        ExecutableSpec("s", "adopted", argv=("sleep", "1000")),
    )
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("the supervisor's death", lambda: not alive(sup_pid))
    os.kill(exe.host_pid, signal.SIGUSR1)  # most likely before the successor's reconcile
    killed = ended(cfg, "s", "killed")
    assert killed.state is ExecutableState.EXITED and killed.exit is not None
    assert killed.exit.signal == signal.SIGUSR1 and killed.exit.code is None, killed
    # Stopped by the successor: it is the keeper's child, not the successor's; the status is still known.
    async def stop() -> Any:
        return await (await _client(cfg)).stop("s", "adopted", grace_s=5)

    status = asyncio.run(stop())
    assert status.signal == signal.SIGTERM, status
    assert executables(cfg, "s")["adopted"].state is ExecutableState.EXITED
    free_all(cfg)


def test_the_keeper_restarts_a_killed_supervisor_by_itself_and_it_readopts(cfg: RuntimeConfig) -> None:
    sup_pid, [exe] = start(cfg, "r", ExecutableSpec("r", "s", argv=("sleep", "1000")))
    [keeper_pid] = keeper_pids(cfg)
    for _ in range(2):  # and again: each successor is restarted too (after 2.5 s, then 5 s: the backoff)
        os.kill(sup_pid, signal.SIGKILL)
        successor = new_supervisor(cfg, sup_pid)
        assert int(Path(f"/proc/{successor}/stat").read_text().rsplit(") ", 1)[1].split()[1]) == keeper_pid
        wait_until("the successor's socket", lambda s=successor: Path(cfg.pid_path).exists()
                   and int(Path(cfg.pid_path).read_text() or 0) == s)
        sup_pid = successor
        assert not os.path.exists(f"/proc/{sup_pid}/task") or alive(sup_pid)
    got = executables(cfg, "r")["s"]
    assert got.state is ExecutableState.RUNNING and got.host_pid == exe.host_pid
    assert keeper_pids(cfg) == [keeper_pid] and alive(exe.host_pid)
    free_all(cfg)
    wait_until("the keeper to exit with its supervisor", lambda: not keeper_pids(cfg))
    assert not supervisor_pids(cfg)


def test_a_killed_keeper_leaves_workloads_running_and_a_later_start_recovers(cfg: RuntimeConfig) -> None:
    sup_pid, [exe] = start(cfg, "k", ExecutableSpec("k", "s", argv=("sleep", "1000")))
    [keeper_pid] = keeper_pids(cfg)
    os.kill(keeper_pid, signal.SIGKILL)  # the "host went away" case for what runs now
    time.sleep(0.2)
    assert alive(sup_pid) and alive(exe.host_pid)  # the supervisor lives on (reparented), so do workloads
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("the supervisor's death", lambda: not alive(sup_pid))
    assert alive(exe.host_pid) and not keeper_pids(cfg)
    got = executables(cfg, "k")["s"]  # a new keeper and supervisor, started by this connect
    assert got.state is ExecutableState.RUNNING and got.host_pid == exe.host_pid
    assert len(keeper_pids(cfg)) == 1
    # Its exit is lost: it was init's child when it ended (no keeper saw it), as documented.
    os.kill(exe.host_pid, signal.SIGKILL)
    assert ended(cfg, "k", "s").state is ExecutableState.LOST
    free_all(cfg)


def test_a_record_of_a_reused_pid_is_never_taken(cfg: RuntimeConfig) -> None:
    """A record with our pid but another process's start time (the pid reused) is not ours."""
    sup_pid, [gone, adopted] = start(
        cfg,
        "p",
        ExecutableSpec("p", "gone", argv=("sleep", "1000")),
        ExecutableSpec("p", "adopted", argv=("sleep", "1000")),
    )
    [keeper_pid] = keeper_pids(cfg)
    path = keeper.exits_path(cfg.run_dir)
    for exe in (gone, adopted):
        start_ticks = keeper.proc_start(exe.host_pid)
        assert start_ticks is not None
        for other in (start_ticks - 100_000, start_ticks + 500):  # long before; after it
            keeper.append_record(path, exe.host_pid, other, 9 << 8)
        # Started just before it (inside the start window of one found gone), but reaped before it started:
        # the earlier holder of its pid.
        keeper.append_record(path, exe.host_pid, start_ticks - 50, 9 << 8, exe.started_at_ns - 2_000_000_000)
    # The keeper dies first: "gone" ends unseen (lost); a foreign record must not be taken for it.
    os.kill(keeper_pid, signal.SIGKILL)
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("the supervisor's death", lambda: not alive(sup_pid))
    os.kill(gone.host_pid, signal.SIGKILL)
    wait_until("its end", lambda: not alive(gone.host_pid))
    got = ended(cfg, "p", "gone")
    assert got.state is ExecutableState.LOST and got.exit is not None and got.exit.code is None, got
    # The adopted one ends under the new keeper's successor: not a keeper child either -> lost, not 9.
    os.kill(adopted.host_pid, signal.SIGTERM)
    got = ended(cfg, "p", "adopted")
    assert got.exit is not None and got.exit.code != 9, got
    free_all(cfg)


def test_records_stay_few_and_no_zombie_is_left(cfg: RuntimeConfig) -> None:
    n = 40
    sup_pid = asyncio.run(_info(cfg))["supervisor_pid"]
    # Each ends after the supervisor's death (one that ended before it may have been reaped by the dead
    # supervisor, its exit not saved yet: lost, and no keeper's business); some before the successor's
    # reconcile (found gone), the rest after (adopted).
    _, infos = start(cfg, "z", *(
        ExecutableSpec("z", f"e{i}", command=after_supervisor(sup_pid, f"sleep {i * 0.02}; exit {i % 7}"))
        for i in range(n)
    ))
    [keeper_pid] = keeper_pids(cfg)
    os.kill(sup_pid, signal.SIGKILL)
    wait_until("every exit", lambda: all(not alive(i.host_pid) for i in infos))
    new = new_supervisor(cfg, sup_pid)
    for i in range(n):
        exe = ended(cfg, "z", f"e{i}")
        assert exe.state is ExecutableState.EXITED and exe.exit is not None and exe.exit.code == i % 7, exe
    wait_until("the consumed records to be pruned", lambda: not keeper.read_records(keeper.exits_path(cfg.run_dir)))
    assert not os.path.exists(f"/proc/{sup_pid}")  # the killed supervisor was reaped
    assert zombies_of({keeper_pid, new}) == []
    free_all(cfg)
    wait_until("the keeper to exit", lambda: not keeper_pids(cfg))
    assert zombies_of({keeper_pid, new}) == []
    assert not os.path.exists(f"/proc/{new}")  # the supervisor that exited cleanly was reaped too


def test_a_pid_reused_by_a_later_run_gets_that_runs_status(cfg: RuntimeConfig) -> None:
    """Real pid reuse (``ns_last_pid``): a run that gets the pid of one that exited 3 while no supervisor
    ran, whose record is still there, ends with code 5 while no supervisor runs and is credited 5."""
    sup1 = asyncio.run(_info(cfg))["supervisor_pid"]
    _, [first] = start(cfg, "u", ExecutableSpec("u", "first", command=after_supervisor(sup1, "exit 3")))
    first_start = keeper.proc_start(first.host_pid)
    assert first_start is not None
    os.kill(sup1, signal.SIGKILL)
    got = ended(cfg, "u", "first")
    assert got.exit is not None and got.exit.code == 3, got
    reaped = time.time_ns()  # (after the real reap) its record, as if a prune had not removed it yet
    keeper.append_record(keeper.exits_path(cfg.run_dir), first.host_pid, first_start, 3 << 8, reaped)
    sup2 = asyncio.run(_info(cfg))["supervisor_pid"]

    async def reuse() -> ExecutableInfo | None:
        c = await _client(cfg)
        # A first Start creates the supervisor's exec-wait thread: not with the pid we rewind to.
        await c.start(ExecutableSpec("u", "warm", argv=("true",)))
        for attempt in range(60):
            if os.path.exists(f"/proc/{first.host_pid}"):  # a thread or process holds it now
                await asyncio.sleep(0.05)
                continue
            # The supervisor may take a pid or two (a thread) between our write and its clone.
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(first.host_pid - 1 - attempt % 3))
            info = await c.start(ExecutableSpec("u", f"again{attempt}", command=after_supervisor(sup2, "exit 5")))
            if info.host_pid == first.host_pid:
                return info
            await c.stop("u", info.name, grace_s=0)
        return None

    again = asyncio.run(reuse())
    if again is None:
        pytest.skip("another process took the pid each time (a busy host)")
    os.kill(sup2, signal.SIGKILL)
    got = ended(cfg, "u", again.name)
    assert got.state is ExecutableState.EXITED and got.exit is not None and got.exit.code == 5, got
    assert executables(cfg, "u")["first"].exit.code == 3  # type: ignore[union-attr]
    free_all(cfg)


def test_sigterm_to_the_keeper_stops_both_and_leaves_workloads_running(cfg: RuntimeConfig) -> None:
    sup_pid, [exe] = start(cfg, "t", ExecutableSpec("t", "s", argv=("sleep", "1000")))
    [keeper_pid] = keeper_pids(cfg)
    os.kill(keeper_pid, signal.SIGTERM)  # passed on to the supervisor, which leaves workloads alone
    wait_until("both to exit", lambda: not alive(keeper_pid) and not alive(sup_pid))
    assert alive(exe.host_pid) and not supervisor_pids(cfg)
    got = executables(cfg, "t")["s"]  # a new keeper and supervisor adopt it
    assert got.state is ExecutableState.RUNNING and got.host_pid == exe.host_pid
    free_all(cfg)
