"""Cells and executables through the supervisor, read back from the kernel (root, real cgroups).

One supervisor serves the whole module; every test uses its own cell names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cells.cgroup import detect
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from cells.spec import EXECUTABLE_CGROUP_PREFIX, CellLimits, CellSpec, ExecutableSpec
from cells.state import CellState, ExecutableInfo, ExecutableState, ExitStatus
from observe.logread import LogReader
from observe.logstore import executable_dir, run_dir
from observe.records import Stream
from tests.support.cleanup import destroy_runtime
from tests.support.runtime import make_runtime_config
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

T = TypeVar("T")


def run(config: RuntimeConfig, body: Callable[[RuntimeClient], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(await RuntimeClient.connect(config))

    return asyncio.run(main())


def unique(prefix: str = "c") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def wait_exited(client: RuntimeClient, cell: str, name: str, timeout: float = 10.0) -> ExecutableInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for exe in (await client.inspect(cell)).executables:
            if exe.name == name and exe.state in (ExecutableState.EXITED, ExecutableState.LOST):
                return exe
        await asyncio.sleep(0.02)
    raise AssertionError(f"{cell}/{name} did not exit")


def output(
    config: RuntimeConfig, cell: str, name: str, run_no: int = 1
) -> tuple[list[str], list[str], dict[str, Any]]:
    """stdout lines, stderr lines and the EXIT record of one run, from the log store."""
    out: list[str] = []
    err: list[str] = []
    exit_info: dict[str, Any] = {}
    for rec in LogReader(run_dir(Path(config.log_dir), cell, name, run_no)).read():
        if rec.stream is Stream.STDOUT:
            out.append(rec.data.decode())
        elif rec.stream is Stream.STDERR:
            err.append(rec.data.decode())
        elif rec.stream is Stream.EXIT:
            exit_info = rec.exit_info()
    return out, err, exit_info


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] in "ZX"
    except FileNotFoundError:
        return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def config(shared_runtime_config: RuntimeConfig) -> RuntimeConfig:
    return shared_runtime_config


def test_process_is_in_its_leaf_cgroup_before_its_first_instruction(config: RuntimeConfig) -> None:
    """Read by a privileged executable (host cgroup namespace); a contained one sees its leaf as /."""
    cell = unique()

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "cat", argv=("cat", "/proc/self/cgroup"), privileged=True))
        await c.start(ExecutableSpec(cell, "contained", argv=("cat", "/proc/self/cgroup")))
        await wait_exited(c, cell, "contained")
        return await wait_exited(c, cell, "cat")

    exe = run(config, body)
    assert exe.exit is not None and exe.exit.code == 0
    contained, _, _ = output(config, cell, "contained")
    assert contained and all(line.endswith(":/") for line in contained), contained
    out, _, exit_info = output(config, cell, "cat")
    lines = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in out}
    leaf = f"/{config.cgroup_root_name}/{cell}/exe.cat"
    assert lines[""] == leaf  # unified hierarchy: membership, kill, freeze
    backend = detect(config.cgroup_root_name)
    if backend.mode == "hybrid":  # every v1 hierarchy used for limits, joined before exec too
        for controller in ("memory", "pids"):
            assert any(controller in k.split(",") and v.endswith(leaf) for k, v in lines.items()), controller
    assert exit_info["code"] == 0 and exit_info["signal"] is None
    assert not backend.exists(f"{cell}/exe.cat")  # the leaf is removed once the run ended
    run(config, lambda c: c.free(cell))


def test_limits_are_in_the_cgroup_files(config: RuntimeConfig) -> None:
    cell = unique()
    limits = CellLimits(pids_max=77, memory_max=256 * 2**20, cpu_weight=100, cpu_max_quota_us=50_000)
    info = run(config, lambda c: c.allocate(CellSpec(cell, limits)))
    files = detect(config.cgroup_root_name).limits(cell)
    assert files["pids.max"].strip() == "77"
    if info.cgroup_v2_limits:
        assert files["memory.max"].strip() == str(256 * 2**20)
        assert files["cpu.weight"].strip() == "100"
        assert files["cpu.max"].split()[0] == "50000"
    else:
        assert files["memory.limit_in_bytes"].strip() == str(256 * 2**20)
        assert files["cpu.cfs_quota_us"].strip() == "50000"
    assert info.cgroup_path == os.path.join(detect(config.cgroup_root_name).root, cell)
    run(config, lambda c: c.free(cell))


def test_isolated_cell_has_its_own_namespaces_shared_by_its_executables(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> tuple[Any, ...]:
        info = await c.allocate(CellSpec(cell, isolate_process=True, isolate_network=True))
        a = await c.start(
            ExecutableSpec(cell, "a", command="echo $$; hostname; ip -o link show lo; exec sleep 3600")
        )
        b = await c.start(ExecutableSpec(cell, "b", argv=("sleep", "100")))
        deadline = time.monotonic() + scaled(10)  # a's three lines (seconds on an emulated host)
        while len(output(config, cell, "a")[0]) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return info, a, b

    info, a, b = run(config, body)
    try:
        assert info.holder_pid > 0 and info.netns.startswith(config.netns_prefix)
        assert os.path.exists(f"/run/netns/{info.netns}")
        for kind in ("pid", "mnt", "uts", "ipc", "net"):
            mine = os.stat(f"/proc/self/ns/{kind}").st_ino
            ns_a = os.stat(f"/proc/{a.host_pid}/ns/{kind}").st_ino
            assert ns_a != mine, kind
            assert ns_a == os.stat(f"/proc/{b.host_pid}/ns/{kind}").st_ino, kind
            assert ns_a == os.stat(f"/proc/{info.holder_pid}/ns/{kind}").st_ino, kind
        assert a.cell_pid not in (0, a.host_pid) and b.cell_pid not in (0, b.host_pid, a.cell_pid)
        out, _, _ = output(config, cell, "a")
        assert out[0] == str(a.cell_pid)
        assert out[1] == cell  # hostname = the cell's (last) name segment
        assert "LOOPBACK" in out[2] and ",UP" in out[2]
    finally:
        run(config, lambda c: c.free(cell, grace_s=0))
    assert gone(a.host_pid) and gone(b.host_pid) and gone(info.holder_pid)
    assert not os.path.exists(f"/run/netns/{info.netns}")


def test_stop_kills_a_grandchild_ignoring_sigterm_and_a_daemonized_child(config: RuntimeConfig) -> None:
    cell = unique()
    # The main shell ignores SIGTERM before it prints anything, so Stop (which waits for both pids
    # to be printed) can never land before the trap is set.
    script = (
        "trap '' TERM; "
        "sh -c 'trap \"\" TERM; exec sleep 1000' & echo $!; "
        "setsid sh -c 'sleep 1000 & echo $!' ; "
        "while :; do sleep 1; done"
    )

    async def body(c: RuntimeClient) -> tuple[ExecutableInfo, ExitStatus, list[str]]:
        await c.allocate(CellSpec(cell))
        exe = await c.start(ExecutableSpec(cell, "tree", command=script))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            out, _, _ = output(config, cell, "tree")
            if len(out) >= 2:
                break
            await asyncio.sleep(0.02)
        status = await c.stop(cell, "tree", grace_s=0.3)
        return exe, status, out

    exe, status, out = run(config, body)
    grandchild, daemon = int(out[0]), int(out[1])
    assert status.signal == signal.SIGKILL and status.code is None and not status.oom_killed
    for pid in (exe.host_pid, grandchild, daemon):
        assert wait_gone(pid), pid
    assert not detect(config.cgroup_root_name).exists(f"{cell}/exe.tree")
    # Stop of an exited executable returns the recorded status.
    assert run(config, lambda c: c.stop(cell, "tree")) == status
    run(config, lambda c: c.free(cell))


def test_main_exit_kills_what_is_left_in_its_leaf(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell, isolate_process=True))
        await c.start(ExecutableSpec(cell, "d", command="setsid sh -c 'exec sleep 1000' & echo $!; exit 3"))
        return await wait_exited(c, cell, "d")

    exe = run(config, body)
    assert exe.exit is not None and exe.exit.code == 3
    out, _, exit_info = output(config, cell, "d")
    assert exit_info["code"] == 3
    # The daemon's pid is a pid inside the cell; no process of the cell but its holder is left.
    backend = detect(config.cgroup_root_name)
    holder = backend.pids(f"{cell}/_init")
    assert run(config, lambda c: c.inspect(cell)).holder_pid in holder
    assert backend.pids(cell) == holder
    run(config, lambda c: c.free(cell))


def test_exit_code_signal_and_restart_of_the_same_name(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> list[ExecutableInfo]:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "x", command="echo first; exit 7"))
        first = await wait_exited(c, cell, "x")
        second = await c.start(ExecutableSpec(cell, "x", command="echo second; kill -USR1 $$"))
        assert second.run == 2
        second = await wait_exited(c, cell, "x")
        await c.start(ExecutableSpec(cell, "x", argv=("sleep", "100")))
        with pytest.raises(AlreadyExists):
            await c.start(ExecutableSpec(cell, "x", argv=("sleep", "100")))
        status = await c.stop(cell, "x", grace_s=5)
        assert status.signal == signal.SIGTERM
        return [first, second]

    first, second = run(config, body)
    assert first.exit is not None and first.exit.code == 7 and first.run == 1
    assert second.exit is not None and second.exit.signal == signal.SIGUSR1 and second.run == 2
    assert output(config, cell, "x", 1)[0] == ["first"]
    assert output(config, cell, "x", 2)[0] == ["second"]
    assert output(config, cell, "x", 2)[2]["signal"] == signal.SIGUSR1
    run(config, lambda c: c.free(cell))


def test_stdout_stderr_env_cwd_and_uid(config: RuntimeConfig) -> None:
    cell = unique()
    script = 'echo "$CELLAR_CELL $CELLAR_EXECUTABLE $FOO"; pwd; id -u; id -g; echo oops >&2; printf partial'

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell))
        await c.start(
            ExecutableSpec(
                cell, "env", command=script, env=(("FOO", "bar"),), cwd="/tmp", uid=65534, gid=65534
            )
        )
        return await wait_exited(c, cell, "env")

    exe = run(config, body)
    assert exe.exit is not None and exe.exit.code == 0
    out, err, _ = output(config, cell, "env")
    assert out == [f"{cell} env bar", "/tmp", "65534", "65534", "partial"]
    assert err == ["oops"]
    run(config, lambda c: c.free(cell))


def test_start_errors_are_precise_and_leave_nothing_behind(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> None:
        with pytest.raises(NotFound, match="parent"):
            await c.allocate(CellSpec(f"{cell}/child"))
        await c.allocate(CellSpec(cell))
        with pytest.raises(AlreadyExists):
            await c.allocate(CellSpec(cell))
        with pytest.raises(InvalidArgument) as exc:
            await c.start(ExecutableSpec(cell, "nope", argv=("/no/such/binary", "x")))
        assert exc.value.field == "executable.argv" and "No such file or directory" in exc.value.rule
        with pytest.raises(InvalidArgument) as exc:
            await c.start(ExecutableSpec(cell, "nope", argv=("true",), cwd="/no/such/dir"))
        assert exc.value.field == "executable.cwd"
        with pytest.raises(InvalidArgument):
            await c.start(ExecutableSpec(cell, "../evil", argv=("true",)))
        with pytest.raises(NotFound):
            await c.start(ExecutableSpec(unique(), "x", argv=("true",)))
        with pytest.raises(NotFound):
            await c.stop(cell, "never-started")
        assert (await c.inspect(cell)).executables == []
        await c.allocate(CellSpec(f"{cell}/child"))
        with pytest.raises(FailedPrecondition, match="child"):
            await c.free(cell)
        await c.free(f"{cell}/child")
        await c.free(cell)
        with pytest.raises(NotFound):
            await c.inspect(cell)

    run(config, body)
    backend = detect(config.cgroup_root_name)
    assert not backend.exists(cell)
    assert not os.path.exists(os.path.join(config.log_dir, cell, "exe.nope"))


def test_fork_bomb_is_bounded_by_pids_max(config: RuntimeConfig) -> None:
    cell = unique()
    bomb = (
        "import os, time\nn = 0\nfor _ in range(200):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        continue\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\n"
        "print(n, flush=True)\ntime.sleep(60)"
    )

    async def body(c: RuntimeClient) -> tuple[int, int, ExitStatus]:
        await c.allocate(CellSpec(cell, CellLimits(pids_max=20)))
        await c.start(ExecutableSpec(cell, "bomb", argv=(sys.executable, "-c", bomb)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not output(config, cell, "bomb")[0]:
            await asyncio.sleep(0.05)
        stats = (await c.inspect(cell)).stats
        assert stats is not None
        forked = int(output(config, cell, "bomb")[0][0])
        return forked, stats.pids_current, await c.stop(cell, "bomb", grace_s=0)

    forked, pids, status = run(config, body)
    assert 10 <= forked <= 19  # 20 tasks in all, the bomb itself included
    assert forked < pids <= 20
    assert status.signal in (signal.SIGTERM, signal.SIGKILL)
    assert detect(config.cgroup_root_name).pids(cell) == []
    run(config, lambda c: c.free(cell))


def test_memory_hog_is_oom_killed_and_reported(config: RuntimeConfig) -> None:
    cell = unique()
    hog = "a = []\nwhile True: a.append(bytearray(1 << 20))"

    async def body(c: RuntimeClient) -> ExecutableInfo:
        await c.allocate(CellSpec(cell, CellLimits(memory_max=64 * 2**20)))
        await c.start(ExecutableSpec(cell, "hog", argv=(sys.executable, "-c", hog)))
        return await wait_exited(c, cell, "hog", timeout=30)

    exe = run(config, body)
    assert exe.exit is not None and exe.exit.signal == signal.SIGKILL and exe.exit.oom_killed
    assert output(config, cell, "hog")[2]["oom_killed"] is True
    run(config, lambda c: c.free(cell))


@pytest.mark.parametrize("isolate", [False, True], ids=["plain", "isolated"])
def test_a_start_under_a_memory_limit_too_small_to_exec_spares_the_supervisor(tmp_path: Path, isolate: bool) -> None:
    """Found by the fuzz suite: memory_max 13448 bytes. The child was cloned sharing the supervisor's
    memory (CLONE_VM); the cell's OOM kill of it, before its exec, took down every process sharing
    that memory: the supervisor too. Under a memory limit the child gets its own copy."""
    config = make_runtime_config(str(tmp_path))
    cell = unique()

    async def body(c: RuntimeClient) -> tuple[int, int]:
        before = (await c.info())["supervisor_pid"]
        await c.allocate(CellSpec(cell, CellLimits(memory_max=13448), isolate_process=isolate))
        with contextlib.suppress(ResourceExhausted, FailedPrecondition, InvalidArgument):
            await c.start(ExecutableSpec(cell, "t", argv=("/bin/true",)))
        after = (await c.info())["supervisor_pid"]
        await c.free(cell, grace_s=0)
        return before, after

    try:
        before, after = run(config, body)
    finally:
        destroy_runtime(config)
    assert before == after, "the supervisor died with the child"


def test_freeze_and_thaw(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        await c.start(ExecutableSpec(cell, "s", argv=("sleep", "100")))
        await c.freeze(cell)
        assert (await c.inspect(cell)).state is CellState.FROZEN
        with pytest.raises(FailedPrecondition, match="frozen"):
            await c.start(ExecutableSpec(cell, "t", argv=("true",)))
        with pytest.raises(FailedPrecondition, match="frozen"):
            await c.stop(cell, "s")
        await c.thaw(cell)
        assert (await c.inspect(cell)).state is CellState.ACTIVE
        assert (await c.stop(cell, "s", grace_s=5)).signal == signal.SIGTERM
        await c.freeze(cell)
        await c.free(cell, grace_s=0)  # Free thaws a frozen cell first

    run(config, body)


def test_events_list_and_find_pid(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> list[tuple[str, ExecutableState]]:
        events: list[tuple[str, ExecutableState]] = []

        async def watch() -> None:
            async for kind, info in c.events(cell):
                events.append((kind, info.state))
                if kind == "exited":
                    return

        await c.allocate(CellSpec(cell))
        await c.allocate(CellSpec(f"{cell}/kid"))
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.1)
        exe = await c.start(ExecutableSpec(f"{cell}/kid", "s", argv=("sleep", "100")))
        assert (await c.find_pid(exe.host_pid)).name == "s"
        with pytest.raises(NotFound):
            await c.find_pid(2**22 + 1)
        listed = await c.list(cell, stats=True)
        assert [i.name for i in listed] == [cell, f"{cell}/kid"]
        assert listed[1].executables[0].state is ExecutableState.RUNNING and listed[1].stats is not None
        assert [i.name for i in await c.list(cell + "x")] == []
        await c.stop(f"{cell}/kid", "s", grace_s=5)
        await asyncio.wait_for(watcher, 5)
        assert (await c.find_pid(exe.host_pid)).state is ExecutableState.EXITED  # still remembered
        await c.free(f"{cell}/kid")
        await c.free(cell)
        return events

    events = run(config, body)
    assert events == [
        ("started", ExecutableState.RUNNING),
        ("stopping", ExecutableState.STOPPING),
        ("exited", ExecutableState.EXITED),
    ]


def test_free_removes_cgroups_netns_state_and_processes(config: RuntimeConfig) -> None:
    cell = unique()

    async def body(c: RuntimeClient) -> tuple[Any, ...]:
        info = await c.allocate(
            CellSpec(cell, CellLimits(pids_max=10), isolate_process=True, isolate_network=True)
        )
        exe = await c.start(ExecutableSpec(cell, "s", command="trap '' TERM; sleep 3600 & wait"))
        await c.free(cell, grace_s=0.2)
        return info, exe

    info, exe = run(config, body)
    backend = detect(config.cgroup_root_name)
    assert not backend.exists(cell)
    assert not any(os.path.exists(os.path.join(p, cell)) for p in getattr(backend, "v1_roots", {}).values())
    assert not os.path.exists(f"/run/netns/{info.netns}")
    assert not [n for n in os.listdir(config.cells_dir) if n.startswith((f"{cell}@", f"{cell}.json"))]
    assert wait_gone(exe.host_pid) and wait_gone(info.holder_pid)


def test_start_in_a_cell_whose_holder_died_is_a_failed_precondition(config: RuntimeConfig) -> None:
    """Whether or not the supervisor has reaped the dead holder yet, Start says so precisely."""
    cell = unique()

    async def body(c: RuntimeClient) -> None:
        info = await c.allocate(CellSpec(cell, isolate_process=True))
        os.kill(info.holder_pid, signal.SIGKILL)
        # kill() returns before the holder is dead; until then a Start may still enter its namespaces.
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{info.holder_pid}/ns/pid") and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        for _ in range(2):  # at once (holder not reaped yet), then after the reaper saw it
            with pytest.raises(FailedPrecondition, match="namespace holder"):
                await c.start(ExecutableSpec(cell, "late", argv=("/bin/true",)))
            await asyncio.sleep(0.3)
        await c.free(cell, grace_s=0)

    run(config, body)
    assert not detect(config.cgroup_root_name).exists(cell)


def test_a_start_starved_by_the_cells_cpu_limit_is_resource_exhausted(tmp_path: Path) -> None:
    """A child that cannot reach exec under its cell's cpu.max is the caller's limit, not a broken
    host (INTERNAL): Start names the limit, and the failed run leaves no leaf and no log behind."""
    config = make_runtime_config(str(tmp_path), exec_timeout_s=0.05)
    cell = unique()
    backend = detect(config.cgroup_root_name)
    hog: subprocess.Popen[bytes] | None = None

    async def body(c: RuntimeClient) -> list[str]:
        nonlocal hog
        await c.allocate(CellSpec(cell, limits=CellLimits(cpu_max_quota_us=1000, cpu_max_period_us=1_000_000)))
        # A busy loop uses up the 1 ms per second at the start of every period: a new child born
        # in the cell waits for the next one (~0.5 s on average), far past exec_timeout_s.
        backend.create(f"{cell}/hog")
        hog = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        for procs in backend.procs_files(f"{cell}/hog"):
            with open(procs, "w") as f:
                f.write(str(hog.pid))
        refusals = []
        for attempt in range(10):
            try:
                await c.start(ExecutableSpec(cell, f"t{attempt}", argv=("/bin/true",)))
            except ResourceExhausted as exc:
                refusals.append(str(exc))
                assert not backend.exists(f"{cell}/{EXECUTABLE_CGROUP_PREFIX}t{attempt}")
                assert not executable_dir(Path(config.log_dir), cell, f"t{attempt}").exists()
                if len(refusals) == 2:
                    break
        await c.free(cell, grace_s=0)
        return refusals

    try:
        refusals = run(config, body)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        destroy_runtime(config)
    assert refusals, "no Start timed out behind a saturated 1 ms/s CPU quota in 10 attempts"
    assert f"cpu.max of {cell!r} is 1000/1000000 us" in refusals[0], refusals[0]
    assert "did not exec within 0.05s" in refusals[0]


def test_an_isolated_cell_under_a_tiny_cpu_limit_still_allocates(config: RuntimeConfig) -> None:
    """The namespace holder builds the cell's mount view before its exec, in Python: at 1 ms of CPU
    per second that took longer than exec_timeout_s (CI, the fuzz suite: INTERNAL). The cell's CPU
    bandwidth limit binds its workloads, so it is written once the holder has exec'd."""
    cell = unique()
    limits = CellLimits(cpu_max_quota_us=1000, cpu_max_period_us=1_000_000)
    info = run(config, lambda c: c.allocate(CellSpec(cell, limits, isolate_process=True)))
    try:
        files = detect(config.cgroup_root_name).limits(cell)
        if info.cgroup_v2_limits:
            assert files["cpu.max"].split() == ["1000", "1000000"]
        else:
            assert files["cpu.cfs_quota_us"].strip() == "1000"
        assert detect(config.cgroup_root_name).cpu_throttled(cell) == 0, "the holder's setup was throttled"
    finally:
        run(config, lambda c: c.free(cell))


def test_free_of_a_cell_starved_by_its_cpu_limit_lets_its_processes_die(tmp_path: Path) -> None:
    """Dying takes CPU: under a 1 ms/s cpu.max that a busy loop exhausts, 300 killed processes would
    need tens of periods to exit, past Free's wait. Free lifts the limit before cgroup.kill."""
    config = make_runtime_config(str(tmp_path))
    cell = unique()
    backend = detect(config.cgroup_root_name)
    procs: list[subprocess.Popen[bytes]] = []

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell, limits=CellLimits(cpu_max_quota_us=1000, cpu_max_period_us=1_000_000)))
        backend.create(f"{cell}/crowd")
        procs.append(subprocess.Popen(["sh", "-c", "while :; do :; done"]))
        procs.extend(subprocess.Popen(["sleep", "3600"]) for _ in range(300))
        for proc in procs:  # born outside, moved in: forking under the quota would take minutes
            for procs_file in backend.procs_files(f"{cell}/crowd"):
                with open(procs_file, "w") as f:
                    f.write(str(proc.pid))
        await c.free(cell, grace_s=0)

    try:
        run(config, body)
        assert not backend.exists(cell)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        destroy_runtime(config)


def test_a_start_stuck_before_exec_holds_up_no_other_request(tmp_path: Path) -> None:
    """The child's exec is awaited off the event loop: while one Start waits on a cell frozen behind
    cellar's back, another cell's Start, Inspect and Stop are answered; the stuck one then fails
    precisely and leaves nothing behind."""
    config = make_runtime_config(str(tmp_path), exec_timeout_s=scaled(3.0))
    stuck, other = unique("s"), unique("o")
    backend = detect(config.cgroup_root_name)

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(stuck))
        await c.allocate(CellSpec(other))
        with open(os.path.join(backend.unified_path(stuck), "cgroup.freeze"), "w") as f:
            f.write("1")  # not through cellar: its state still says ACTIVE
        waiting = asyncio.create_task(c.start(ExecutableSpec(stuck, "x", argv=("/bin/true",))))
        await asyncio.sleep(0.1)
        await c.start(ExecutableSpec(other, "y", argv=("sleep", "3600")))
        assert [e.name for e in (await c.inspect(other)).executables] == ["y"]
        assert (await c.stop(other, "y", grace_s=5)).signal == signal.SIGTERM
        assert not waiting.done(), "the frozen child's Start returned before the other cell's requests"
        with pytest.raises(FailedPrecondition, match="frozen .*outside cellar"):
            await waiting
        assert not backend.exists(f"{stuck}/{EXECUTABLE_CGROUP_PREFIX}x")
        assert not executable_dir(Path(config.log_dir), stuck, "x").exists()
        assert (await c.inspect(stuck)).executables == []
        with open(os.path.join(backend.unified_path(stuck), "cgroup.freeze"), "w") as f:
            f.write("0")
        info = await c.start(ExecutableSpec(stuck, "x", argv=("/bin/true",)))
        assert info.run == 1
        await c.free(stuck, grace_s=0)
        await c.free(other, grace_s=0)

    try:
        run(config, body)
    finally:
        destroy_runtime(config)


def test_concurrent_starts_of_short_lived_processes_all_report_their_exit(config: RuntimeConfig) -> None:
    """Children that exit before their Start is back on the event loop (reaped early) keep their status."""
    cell = unique()

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cell))
        clients = [await RuntimeClient.connect(config) for _ in range(3)]
        names = [f"t{i}" for i in range(24)]
        await asyncio.gather(*(
            clients[i % 3].start(ExecutableSpec(cell, name, argv=("sh", "-c", f"exit {i % 7}")))
            for i, name in enumerate(names)
        ))
        for i, name in enumerate(names):
            exe = await wait_exited(c, cell, name, timeout=scaled(10.0))
            assert exe.state is ExecutableState.EXITED and exe.exit is not None and exe.exit.code == i % 7, exe
        with pytest.raises(AlreadyExists):  # a name is taken from its Start on, before its process exists
            await asyncio.gather(
                c.start(ExecutableSpec(cell, "dup", argv=("sleep", "3600"))),
                clients[0].start(ExecutableSpec(cell, "dup", argv=("sleep", "3600"))),
            )
        await c.free(cell, grace_s=0)

    run(config, body)
