"""Restart policies (issue 14): backoff, start limit, Stop/Free cancel, and a supervisor crash mid-backoff.

Real supervisors, real processes; the backoff sequence is read from the events' timestamps (short
delays configured), and every wait is bounded generously (:func:`tests.timeouts.scaled`).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cells import protocol, restart
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.errors import AlreadyExists, InvalidArgument
from cells.spec import CellSpec, ExecutableSpec, RestartPolicy
from cells.state import ExecutableInfo, ExecutableState, ExitStatus
from observe.logread import LogReader
from observe.logstore import run_dir
from observe.records import Stream
from tests.support.runtime import collect_events
from tests.support.timeouts import scaled

T = TypeVar("T")
S = 1_000_000_000


def run(config: RuntimeConfig, body: Callable[[RuntimeClient], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(await RuntimeClient.connect(config))

    return asyncio.run(main())


def unique(prefix: str = "r") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def exit_of_run(config: RuntimeConfig, cell: str, name: str, run_no: int) -> dict[str, Any]:
    records = LogReader(run_dir(Path(config.log_dir), cell, name, run_no)).read()
    return [r.exit_info() for r in records if r.stream is Stream.EXIT][0]


async def exe_info(c: RuntimeClient, cell: str, name: str) -> ExecutableInfo:
    return next(e for e in (await c.inspect(cell)).executables if e.name == name)


async def wait_state(c: RuntimeClient, cell: str, name: str, state: ExecutableState, timeout: float = 10.0,
                     run_no: int = 0) -> ExecutableInfo:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        info = await exe_info(c, cell, name)
        if info.state is state and info.run >= run_no:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{cell}/{name}: {info.state.value} run {info.run}, expected {state.value}")
        await asyncio.sleep(0.02)


def kinds(events: list[tuple[str, ExecutableInfo]]) -> list[str]:
    return [k for k, _ in events]


# -- pure: the policy's arithmetic and its validation -------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RestartPolicy("on-failure", delay_s=0.25, max_delay_s=1.5)
    assert [restart.next_delay(policy, step) for step in range(6)] == [0.25, 0.5, 1.0, 1.5, 1.5, 1.5]
    assert restart.next_delay(policy, 10_000) == 1.5  # no overflow at any step
    assert [restart.next_delay(RestartPolicy("always", delay_s=0.0), s) for s in range(3)] == [0.0, 0.0, 0.0]


def test_defaults_are_the_kubelets_and_systemds() -> None:
    p = RestartPolicy()
    assert (p.mode, p.delay_s, p.max_delay_s, p.reset_after_s) == ("never", 10.0, 300.0, 600.0)
    assert (p.limit_burst, p.limit_interval_s) == (5, 10.0)


def test_which_ends_restart() -> None:
    code = {c: ExitStatus(code=c) for c in (0, 1)}
    killed, oom = ExitStatus(signal=9), ExitStatus(signal=9, oom_killed=True)
    on_failure, always, never = RestartPolicy("on-failure"), RestartPolicy("always"), RestartPolicy()
    assert not restart.wants_restart(on_failure, code[0], lost=False)
    assert all(restart.wants_restart(on_failure, e, lost=False) for e in (code[1], killed, oom))
    assert restart.wants_restart(on_failure, ExitStatus(), lost=True)  # unknown: not known to be clean
    assert all(restart.wants_restart(always, e, lost=False) for e in (code[0], code[1], killed))
    assert not any(restart.wants_restart(never, e, lost=False) for e in (code[0], code[1], killed, oom))


def test_start_limit_counts_starts_within_the_window() -> None:
    policy = RestartPolicy("always", limit_burst=3, limit_interval_s=10.0)
    starts = [100 * S, 101 * S, 102 * S]
    assert restart.limit_hit(policy, starts, 103 * S)  # a 4th within 10 s
    assert not restart.limit_hit(policy, starts, 110 * S + 1)  # the first left the window
    assert not restart.limit_hit(policy, starts[:2], 103 * S)
    assert not restart.limit_hit(RestartPolicy("always", limit_burst=1, limit_interval_s=0), starts, 103 * S)


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"mode": "sometimes"}, "executable.restart.mode", "never, on-failure or always"),
        ({"delay_s": -1.0}, "executable.restart.delay_s", "[0, 86400]"),
        ({"delay_s": math.nan}, "executable.restart.delay_s", "[0, 86400]"),
        ({"max_delay_s": math.inf}, "executable.restart.max_delay_s", "[0, 86400]"),
        ({"delay_s": 20.0, "max_delay_s": 10.0}, "executable.restart.max_delay_s", ">= delay_s"),
        ({"reset_after_s": -0.5}, "executable.restart.reset_after_s", "[0, 604800]"),
        ({"limit_burst": 0}, "executable.restart.limit_burst", "[1, 10000]"),
        ({"limit_burst": 10**9}, "executable.restart.limit_burst", "[1, 10000]"),
        ({"limit_interval_s": 10.0**12}, "executable.restart.limit_interval_s", "[0, 86400]"),
        ({"limit_burst": True}, "executable.restart.limit_burst", "integer"),
        ({"delay_s": "1"}, "executable.restart.delay_s", "number"),
    ],
)
def test_bad_policies_name_the_field_and_the_rule(fields: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        ExecutableSpec("c", "e", argv=("true",), restart=RestartPolicy(**{"mode": "always", **fields})).validate()
    assert raised.value.field == field and rule in raised.value.rule


def test_the_policy_crosses_the_supervisor_protocol() -> None:
    exe = ExecutableSpec("a", "b", argv=("x",), restart=RestartPolicy("on-failure", delay_s=0.5, limit_burst=2))
    wire = protocol.request("start", spec=exe)
    import json

    assert protocol.executable_spec_from_dict(json.loads(wire)["args"]["spec"]) == exe
    assert protocol.executable_spec_from_dict({"cell_name": "a", "name": "b", "argv": ["x"]}).restart == RestartPolicy()
    for bad in ({"mode": 3}, [1], {"bogus": 1}):
        with pytest.raises(InvalidArgument):
            protocol.executable_spec_from_dict({"cell_name": "a", "name": "b", "argv": ["x"], "restart": bad})


# -- through a supervisor (root, real processes) ------------------------------------------------------


@pytest.fixture(scope="module")
def config(shared_runtime_config: RuntimeConfig) -> RuntimeConfig:
    return shared_runtime_config


@pytest.mark.root
def test_on_failure_restarts_with_the_configured_backoff(config: RuntimeConfig) -> None:
    """exit 1 each run: delays 0.2, 0.4, 0.8, 0.8 (cap), read from the backoff events and the runs' times."""
    cell = unique()
    policy = RestartPolicy("on-failure", delay_s=0.2, max_delay_s=0.8, limit_interval_s=0)

    async def body(c: RuntimeClient) -> list[tuple[str, ExecutableInfo]]:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: kinds(ev).count("started") >= 5, 30))
        await asyncio.sleep(0.1)
        first = await c.start(ExecutableSpec(cell, "crash", command="exit 1", restart=policy))
        assert first.run == 1 and first.restarts == 0 and first.restart["mode"] == "on-failure"
        events = await watch
        await c.free(cell, grace_s=0)
        return events

    events = run(config, body)
    exits = [i for k, i in events if k == "exited"]
    backoffs = [i for k, i in events if k == "backoff"]
    restarting = [i for k, i in events if k == "restarting"]
    starts = [i for k, i in events if k == "started"]
    assert kinds(events)[:5] == ["started", "exited", "backoff", "restarting", "started"]
    assert [s.run for s in starts] == [1, 2, 3, 4, 5] and [s.restarts for s in starts] == [0, 1, 2, 3, 4]
    assert all(e.state is ExecutableState.EXITED and e.exit is not None and e.exit.code == 1 for e in exits)
    assert all(b.state is ExecutableState.BACKOFF for b in backoffs)
    assert len(restarting) >= 4
    for expected, ended, backoff, started in zip((0.2, 0.4, 0.8, 0.8), exits, backoffs, starts[1:], strict=False):
        assert ended.exit is not None
        scheduled = (backoff.restart_at_ns - ended.exit.ended_at_ns) / S
        assert expected <= scheduled < expected + scaled(1.0), (expected, scheduled)
        assert started.started_at_ns >= backoff.restart_at_ns
        assert (started.started_at_ns - backoff.restart_at_ns) / S < scaled(2.0)
    # each restart is a new run; the crashed one keeps its log and exit record (logs --previous)
    assert exit_of_run(config, cell, "crash", 1)["code"] == 1


@pytest.mark.root
def test_a_run_that_lasted_reset_after_starts_the_backoff_over(config: RuntimeConfig) -> None:
    """Runs 1, 2 and 4 crash at once, run 3 after 1.3 s (past reset_after_s 1): 0.5, 1, then 0.5 again."""
    cell = unique()
    marker = Path(config.state_dir) / f"{cell}.runs"
    script = f"echo x >> {marker}; [ $(wc -l < {marker}) -eq 3 ] && sleep 1.3; exit 1"
    policy = RestartPolicy("on-failure", delay_s=0.5, max_delay_s=10, reset_after_s=1.0, limit_interval_s=0)

    async def body(c: RuntimeClient) -> list[tuple[str, ExecutableInfo]]:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: kinds(ev).count("backoff") >= 4, 30))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "r", command=script, restart=policy, privileged=True))
        events = await watch
        await c.free(cell, grace_s=0)
        return events

    backoffs = [i for k, i in run(config, body) if k == "backoff"]
    delays = []
    for b in backoffs:
        assert b.exit is not None
        delays.append((b.restart_at_ns - b.exit.ended_at_ns) / S)
    for got, expected in zip(delays, (0.5, 1.0, 0.5, 1.0), strict=True):
        assert expected <= got < expected + 0.45, delays  # below the next step's difference


@pytest.mark.root
def test_always_restarts_after_exit_0_and_on_failure_does_not(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> tuple[ExecutableInfo, ExecutableInfo]:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "a", command="exit 0",
                                     restart=RestartPolicy("always", delay_s=0.05, limit_interval_s=0)))
        await c.start(ExecutableSpec(cell, "f", command="exit 0", restart=RestartPolicy("on-failure", delay_s=0.05)))
        always = await wait_state(c, cell, "a", ExecutableState.BACKOFF, run_no=3)
        await asyncio.sleep(0.5)
        on_failure = await exe_info(c, cell, "f")
        await c.free(cell, grace_s=0)
        return always, on_failure

    always, on_failure = run(config, body)
    assert always.run >= 3 and always.restarts == always.run - 1
    assert always.exit is not None and always.exit.code == 0
    assert on_failure.state is ExecutableState.EXITED and on_failure.run == 1 and on_failure.restarts == 0
    assert on_failure.restart_at_ns == 0


@pytest.mark.root
def test_never_is_the_default_and_does_not_restart(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell))
        first = await c.start(ExecutableSpec(cell, "n", command="exit 1"))
        assert first.restart["mode"] == "never"
        await wait_state(c, cell, "n", ExecutableState.EXITED)
        await asyncio.sleep(0.5)
        info = await exe_info(c, cell, "n")
        await c.free(cell, grace_s=0)
        return info

    info = run(config, body)
    assert info.state is ExecutableState.EXITED and info.run == 1 and info.restarts == 0 and info.restart_at_ns == 0


@pytest.mark.root
def test_on_failure_restarts_after_a_signal(config: RuntimeConfig) -> None:
    cell = unique()
    policy = RestartPolicy("on-failure", delay_s=0.05, limit_interval_s=0)

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "k", command="kill -9 $$", restart=policy))
        info = await wait_state(c, cell, "k", ExecutableState.BACKOFF, run_no=2)
        await c.free(cell, grace_s=0)
        return info

    info = run(config, body)
    assert info.exit is not None and info.exit.signal == signal.SIGKILL and info.restarts >= 1


@pytest.mark.root
def test_on_failure_restarts_after_an_oom_kill(config: RuntimeConfig) -> None:
    import sys

    from cells.spec import CellLimits

    cell = unique()
    hog = "a = []\nwhile True: a.append(bytearray(1 << 20))"

    async def body(c: RuntimeClient) -> list[tuple[str, ExecutableInfo]]:
        await c.allocate(CellSpec(cell, CellLimits(memory_max=64 * 2**20)))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: "backoff" in kinds(ev), 30))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "hog", argv=(sys.executable, "-c", hog),
                                     restart=RestartPolicy("on-failure", delay_s=30)))
        events = await watch
        await c.free(cell, grace_s=0)
        return events

    (backoff,) = [i for k, i in run(config, body) if k == "backoff"]
    assert backoff.exit is not None and backoff.exit.oom_killed and backoff.exit.signal == signal.SIGKILL
    assert backoff.state is ExecutableState.BACKOFF and backoff.restart_at_ns > backoff.exit.ended_at_ns


@pytest.mark.root
def test_the_start_limit_ends_in_failed_and_says_why(config: RuntimeConfig) -> None:
    cell = unique()
    policy = RestartPolicy("always", delay_s=0.0, limit_burst=3, limit_interval_s=60.0)

    async def body(c: RuntimeClient) -> tuple[ExecutableInfo, list[tuple[str, ExecutableInfo]]]:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: "failed" in kinds(ev), 20))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "burst", command="exit 2", restart=policy))
        events = await watch
        await asyncio.sleep(0.3)
        info = await exe_info(c, cell, "burst")
        # failed is an ended state: the name may be started again, from a fresh policy history
        again = await c.start(ExecutableSpec(cell, "burst", command="exit 0", restart=RestartPolicy()))
        assert again.run == 4 and again.restarts == 0 and again.state is ExecutableState.RUNNING
        await c.free(cell, grace_s=0)
        return info, events

    info, events = run(config, body)
    assert info.state is ExecutableState.FAILED and info.run == 3 and info.restarts == 2
    assert info.exit is not None and info.exit.code == 2 and info.restart_at_ns == 0
    assert "start limit" in info.reason and "3 starts within 60s" in info.reason
    assert kinds(events).count("started") == 3 and kinds(events)[-1] == "failed"


@pytest.mark.root
def test_stop_during_backoff_cancels_the_restart_and_start_is_refused_meanwhile(config: RuntimeConfig) -> None:
    cell = unique()
    policy = RestartPolicy("on-failure", delay_s=1.0)

    async def body(c: RuntimeClient) -> tuple[ExitStatus, ExecutableInfo]:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "s", command="exit 3", restart=policy))
        await wait_state(c, cell, "s", ExecutableState.BACKOFF)
        with pytest.raises(AlreadyExists):
            await c.start(ExecutableSpec(cell, "s", command="exit 3"))
        status = await c.stop(cell, "s")
        await asyncio.sleep(1.5)
        info = await exe_info(c, cell, "s")
        await c.free(cell, grace_s=0)
        return status, info

    status, info = run(config, body)
    assert status.code == 3
    assert info.state is ExecutableState.EXITED and info.run == 1 and info.restart_at_ns == 0


@pytest.mark.root
def test_a_stopped_run_is_not_restarted_by_always(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", argv=("sleep", "1000"), restart=RestartPolicy("always", delay_s=0)))
        status = await c.stop(cell, "svc", grace_s=5)
        assert status.signal == signal.SIGTERM
        await asyncio.sleep(0.5)
        info = await exe_info(c, cell, "svc")
        await c.free(cell, grace_s=0)
        return info

    info = run(config, body)
    assert info.state is ExecutableState.EXITED and info.run == 1


@pytest.mark.root
def test_free_during_backoff_cancels_the_restart(config: RuntimeConfig) -> None:
    cell = unique()
    marker = Path(config.state_dir) / f"{cell}.starts"

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "x", command=f"echo x >> {marker}; exit 1",
                                     restart=RestartPolicy("on-failure", delay_s=0.5), privileged=True))
        await wait_state(c, cell, "x", ExecutableState.BACKOFF)
        await c.free(cell, grace_s=0)
        await asyncio.sleep(1.0)
        assert cell not in {i.name for i in await c.list()}

    run(config, body)
    assert marker.read_text().splitlines() == ["x"]


@pytest.mark.root
def test_sigkill_of_the_supervisor_during_backoff_restarts_on_schedule_exactly_once(
    runtime_config: RuntimeConfig,
) -> None:
    cfg = runtime_config
    cell = unique()
    marker = Path(cfg.state_dir) / f"{cell}.starts"
    # the first run fails, the second stays up
    script = f"echo $$ >> {marker}; [ $(wc -l < {marker}) -ge 2 ] && exec sleep 1000; exit 1"

    async def before() -> tuple[int, ExecutableInfo]:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", command=script, privileged=True,
                                     restart=RestartPolicy("on-failure", delay_s=1.5)))
        backoff = await wait_state(c, cell, "svc", ExecutableState.BACKOFF)
        return (await c.info())["supervisor_pid"], backoff

    old_pid, backoff = asyncio.run(before())
    os.kill(old_pid, signal.SIGKILL)
    assert backoff.restart_at_ns > time.time_ns()  # killed before the restart was due

    async def after() -> ExecutableInfo:
        c = await RuntimeClient.connect(cfg)
        assert (await c.info())["supervisor_pid"] != old_pid
        early = await exe_info(c, cell, "svc")
        if time.time_ns() < backoff.restart_at_ns - S // 10:
            assert early.state is ExecutableState.BACKOFF and early.restart_at_ns == backoff.restart_at_ns
        info = await wait_state(c, cell, "svc", ExecutableState.RUNNING, run_no=2)
        await asyncio.sleep(1.0)  # no second restart follows
        assert (await exe_info(c, cell, "svc")).run == 2
        await c.free(cell, grace_s=0)
        return info

    info = asyncio.run(after())
    assert info.run == 2 and info.restarts == 1
    assert info.started_at_ns >= backoff.restart_at_ns
    assert len(marker.read_text().splitlines()) == 2


@pytest.mark.root
def test_a_restart_spawned_just_before_a_supervisor_crash_is_adopted_not_started_again(
    runtime_config: RuntimeConfig,
) -> None:
    """The window between a restart's spawn and its saved record: the record says ``spawning`` and
    the leaf holds a process (made here by hand, as the dead supervisor would have left it)."""
    import json
    import subprocess

    from cells.cgroup import detect

    cfg = runtime_config
    cell = unique()

    async def before() -> int:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", command="exit 1", restart=RestartPolicy("on-failure", delay_s=60)))
        await wait_state(c, cell, "svc", ExecutableState.BACKOFF)
        return int((await c.info())["supervisor_pid"])

    os.kill(asyncio.run(before()), signal.SIGKILL)
    [path] = [p for p in Path(cfg.cells_dir).iterdir() if p.name.startswith(cell)]
    record = json.loads(path.read_text())
    record["restarts"]["svc"]["spawning"] = True
    path.write_text(json.dumps(record))
    backend = detect(cfg.cgroup_root_name)
    backend.create(f"{cell}/exe.svc")
    orphan = subprocess.Popen(["sleep", "1000"])
    for procs in backend.procs_files(f"{cell}/exe.svc"):
        Path(procs).write_text(str(orphan.pid))
    run_dir(Path(cfg.log_dir), cell, "svc", 2).mkdir(parents=True)

    async def after() -> ExecutableInfo:
        c = await RuntimeClient.connect(cfg)
        info = await exe_info(c, cell, "svc")
        await asyncio.sleep(0.5)
        assert (await exe_info(c, cell, "svc")).host_pid == orphan.pid
        await c.free(cell, grace_s=0)
        return info

    try:
        info = asyncio.run(after())
    finally:
        orphan.kill()
        orphan.wait()
    assert info.state is ExecutableState.RUNNING and info.host_pid == orphan.pid
    assert info.run == 2 and info.restarts == 1 and info.restart_at_ns == 0


@pytest.mark.root
def test_a_stop_interrupted_by_a_supervisor_crash_still_means_no_restart(runtime_config: RuntimeConfig) -> None:
    """Stop asked, the supervisor killed during the grace period, the run ends after: not restarted."""
    cfg = runtime_config
    cell = unique()
    marker = Path(cfg.state_dir) / f"{cell}.term"
    script = f"trap 'echo term > {marker}; sleep 1; exit 0' TERM; while :; do sleep 0.1; done"

    async def before() -> int:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", command=script, privileged=True,
                                     restart=RestartPolicy("always", delay_s=0.1)))
        pid = int((await c.info())["supervisor_pid"])
        stop = asyncio.ensure_future(c.stop(cell, "svc", grace_s=30))
        deadline = time.monotonic() + scaled(10)
        while not marker.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert marker.exists(), "the workload never got SIGTERM"
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Exception):  # noqa: B017 - the supervisor died under the call
            await stop
        return pid

    old = asyncio.run(before())

    async def after() -> ExecutableInfo:
        c = await RuntimeClient.connect(cfg)
        assert (await c.info())["supervisor_pid"] != old
        info = await wait_state(c, cell, "svc", ExecutableState.EXITED, timeout=15)
        await asyncio.sleep(0.6)
        info = await exe_info(c, cell, "svc")
        await c.free(cell, grace_s=0)
        return info

    info = asyncio.run(after())
    assert info.state is ExecutableState.EXITED and info.run == 1, info


def test_a_crash_loop_keeps_a_bounded_number_of_runs(tmp_path: Path) -> None:
    """Each restart is a run; tiny runs never reach the byte bound, so the count is bounded too (the
    scan before each start stays short however long the loop ran)."""
    from observe.logstore import MAX_FINISHED_RUNS, list_runs, prune_runs

    for run_no in range(1, MAX_FINISHED_RUNS + 51):
        directory = run_dir(tmp_path, "c", "x", run_no)
        directory.mkdir(parents=True)
        (directory / "seg").write_bytes(b"x" * 10)
    removed = prune_runs(tmp_path, "c", "x", keep_bytes=10**9)
    assert sorted(removed) == list(range(1, 51))
    assert list_runs(tmp_path, "c", "x") == list(range(51, MAX_FINISHED_RUNS + 51))


@pytest.mark.root
def test_a_run_that_exits_3_while_no_supervisor_runs_is_restarted_by_on_failure(
    runtime_config: RuntimeConfig,
) -> None:
    """The keeper keeps the exit status while no supervisor runs (cells.keeper): the successor sees
    code 3, not lost, and the policy restarts it."""
    cfg = runtime_config
    cell = unique()
    marker = Path(cfg.state_dir) / f"{cell}.starts"
    script = f"echo x >> {marker}; [ $(wc -l < {marker}) -ge 2 ] && exec sleep 1000; sleep 1; exit 3"

    async def before() -> int:
        c = await RuntimeClient.connect(cfg)
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "svc", command=script, privileged=True,
                                     restart=RestartPolicy("on-failure", delay_s=0.2)))
        return int((await c.info())["supervisor_pid"])

    os.kill(asyncio.run(before()), signal.SIGKILL)
    time.sleep(1.5)  # the run exits (after 1 s) while no supervisor runs

    async def after() -> ExecutableInfo:
        c = await RuntimeClient.connect(cfg)
        info = await wait_state(c, cell, "svc", ExecutableState.RUNNING, run_no=2)
        await c.free(cell, grace_s=0)
        return info

    info = asyncio.run(after())
    assert info.run == 2 and info.restarts == 1
    assert exit_of_run(cfg, cell, "svc", 1)["code"] == 3
    assert len(marker.read_text().splitlines()) == 2


@pytest.mark.root
def test_a_restart_due_while_the_cell_is_frozen_waits_for_the_thaw(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> tuple[ExecutableInfo, ExecutableInfo]:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "f", command="exit 1", restart=RestartPolicy("on-failure", delay_s=0.3)))
        await wait_state(c, cell, "f", ExecutableState.BACKOFF)
        await c.freeze(cell)
        await asyncio.sleep(1.0)
        frozen = await exe_info(c, cell, "f")
        await c.thaw(cell)
        thawed = await wait_state(c, cell, "f", ExecutableState.BACKOFF, run_no=2)
        await c.free(cell, grace_s=0)
        return frozen, thawed

    frozen, thawed = run(config, body)
    assert frozen.state is ExecutableState.BACKOFF and frozen.run == 1
    assert thawed.run >= 2 and thawed.restarts >= 1


def test_the_remembered_run_sizes_follow_a_purged_and_reused_run_number(tmp_path: Path) -> None:
    import shutil

    from observe.logstore import RunSizes, list_runs, prune_runs

    def make(run_no: int, size: int) -> None:
        directory = run_dir(tmp_path, "c", "x", run_no)
        directory.mkdir(parents=True)
        (directory / "seg").write_bytes(b"x" * size)

    sizes = RunSizes()
    for run_no in (1, 2, 3):
        make(run_no, 10)
    assert prune_runs(tmp_path, "c", "x", keep_bytes=100, sizes=sizes) == []
    shutil.rmtree(tmp_path / "c")  # purged; the numbers start over with bigger runs
    for run_no in (1, 2, 3):
        make(run_no, 60)
    assert prune_runs(tmp_path, "c", "x", keep_bytes=100, sizes=sizes) == [2, 1]  # not the old 10 bytes each
    assert list_runs(tmp_path, "c", "x") == [3]


@pytest.mark.root
def test_a_restart_whose_spawn_fails_backs_off_and_counts_toward_the_limit(
    config: RuntimeConfig, tmp_path: Path
) -> None:
    """The program removes itself, so the restart's exec fails: that is a start that failed at once."""
    cell = unique()
    prog = tmp_path / "prog.sh"
    prog.write_text("#!/bin/sh\nrm -f \"$0\"\nexit 1\n")
    prog.chmod(0o755)
    policy = RestartPolicy("on-failure", delay_s=0.05, limit_burst=3, limit_interval_s=60)

    async def body(c: RuntimeClient) -> tuple[list[tuple[str, ExecutableInfo]], ExecutableInfo]:
        await c.allocate(CellSpec(cell))
        watch = asyncio.ensure_future(collect_events(c, cell, lambda ev: "failed" in kinds(ev), 20))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(cell, "gone", argv=(str(prog),), restart=policy, privileged=True))
        events = await watch
        info = await exe_info(c, cell, "gone")
        await c.free(cell, grace_s=0)
        return events, info

    events, info = run(config, body)
    backoffs = [i for k, i in events if k == "backoff"]
    assert any(b.reason.startswith("restart failed:") for b in backoffs), [b.reason for b in backoffs]
    assert info.state is ExecutableState.FAILED and info.run == 1 and info.restarts == 0
    assert "start limit" in info.reason and "restart failed:" in info.reason
    assert kinds(events).count("started") == 1 and kinds(events).count("restarting") == 2
