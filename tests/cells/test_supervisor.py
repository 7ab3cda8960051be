"""The supervisor as a process: protocol, persistence, client death, crash + reconcile, leaks, fuzzing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cells import errors, protocol
from cells.cgroup import detect
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.netns import list_netns
from cells.spec import CellLimits, CellSpec, ExecutableSpec
from cells.state import ExecutableState
from observe.logread import LogReader
from observe.logstore import run_dir
from observe.records import Stream
from tests.support import REPO
from tests.support.cleanup import fdstore_pids
from tests.support.timeouts import scaled


def supervisor_pids(config: RuntimeConfig) -> list[int]:
    """Supervisors running with this config (matched by its unique cgroup root name)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if b"cells.supervisor" in cmdline and config.cgroup_root_name.encode() in cmdline:
            pids.append(int(entry))
    return pids


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


async def connect(config: RuntimeConfig) -> RuntimeClient:
    return await RuntimeClient.connect(config)


def stdout_lines(config: RuntimeConfig, cell: str, name: str, run_no: int = 1) -> list[str]:
    reader = LogReader(run_dir(Path(config.log_dir), cell, name, run_no))
    return [r.data.decode() for r in reader.read() if r.stream is Stream.STDOUT]


def exit_record(config: RuntimeConfig, cell: str, name: str, run_no: int = 1) -> dict[str, Any]:
    reader = LogReader(run_dir(Path(config.log_dir), cell, name, run_no))
    return [r.exit_info() for r in reader.read() if r.stream is Stream.EXIT][0]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def zombie_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(entry))
    return out


# -- pure units ------------------------------------------------------------------------------------


def test_config_round_trips_and_ignores_unknown_keys() -> None:
    config = RuntimeConfig(state_dir="/x", max_cells=3)
    assert RuntimeConfig.from_json(config.to_json()) == config
    assert RuntimeConfig.from_dict({**config.to_dict(), "future": 1}) == config
    assert config.socket_path == "/run/cellar/supervisor.sock"


@pytest.mark.parametrize(
    "exc",
    [
        errors.InvalidArgument("cell.name", "bad"),
        errors.NotFound("x"),
        errors.AlreadyExists("x"),
        errors.FailedPrecondition("cell is frozen"),
        errors.ResourceExhausted("x"),
        errors.RuntimeFailure("x"),
    ],
)
def test_errors_cross_the_wire_as_the_same_class(exc: errors.CellError) -> None:
    with pytest.raises(type(exc)) as raised:
        protocol.unwrap(protocol.decode(protocol.failure(exc)))
    assert str(raised.value) == str(exc)
    if isinstance(exc, errors.InvalidArgument):
        assert raised.value.field == "cell.name"  # type: ignore[attr-defined]


def test_unexpected_exceptions_become_runtime_failure() -> None:
    with pytest.raises(errors.RuntimeFailure, match="internal error: KeyError"):
        protocol.unwrap(protocol.decode(protocol.failure(KeyError("k"))))


def test_specs_cross_the_wire_and_bad_types_are_invalid_argument() -> None:
    spec = CellSpec("a/b", CellLimits(pids_max=3), isolate_network=True)
    assert protocol.cell_spec_from_dict(json.loads(protocol.request("x", spec=spec))["args"]["spec"]) == spec
    exe = ExecutableSpec("a", "b", argv=("x", "y"), env=(("K", "V"),), uid=5)
    assert (
        protocol.executable_spec_from_dict(json.loads(protocol.request("x", spec=exe))["args"]["spec"]) == exe
    )
    for bad in ({"name": 3}, {"name": "a", "limits": {"pids_max": "3"}}, {"name": "a", "bogus": 1}, [1]):
        with pytest.raises(errors.InvalidArgument):
            protocol.cell_spec_from_dict(bad)
    for bad_exe in (
        {"cell_name": "a", "name": "b", "argv": [1]},
        {"cell_name": "a", "name": "b", "env": [["k"]]},
    ):
        with pytest.raises(errors.InvalidArgument):
            protocol.executable_spec_from_dict(bad_exe)


# -- the process -----------------------------------------------------------------------------------


@pytest.mark.root
def test_socket_is_private_and_a_second_supervisor_exits(runtime_config: RuntimeConfig) -> None:
    info = arun(_info(runtime_config))
    assert os.stat(runtime_config.socket_path).st_mode & 0o777 == 0o600
    assert info["supervisor_pid"] == int(Path(runtime_config.pid_path).read_text())
    assert info["mode"] in ("v2", "hybrid")
    second = subprocess.run(
        [sys.executable, "-m", "cells.supervisor", "--config-json", runtime_config.to_json()],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert second.returncode == 0 and "lock" in second.stderr
    assert supervisor_pids(runtime_config) == [info["supervisor_pid"]]


async def _info(config: RuntimeConfig) -> dict[str, Any]:
    return await (await connect(config)).info()


@pytest.mark.root
def test_garbage_on_the_socket_gets_an_error_and_the_supervisor_lives(runtime_config: RuntimeConfig) -> None:
    pid = arun(_info(runtime_config))["supervisor_pid"]
    for payload in (
        b"not json\n",
        b"[1,2]\n",
        b'{"op": "nope"}\n',
        b'{"op": "stop", "args": {"cell": 1}}\n',
        b'{"op": "free", "args": {"name": "../../etc"}}\n',
        b'{"op": "find_pid", "args": {"host_pid": true}}\n',
    ):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(runtime_config.socket_path)
            s.sendall(payload)
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"]["type"] in ("InvalidArgument", "RuntimeFailure"), (
            payload
        )
    with socket.socket(socket.AF_UNIX) as s:  # a client that connects and vanishes
        s.connect(runtime_config.socket_path)
    assert arun(_info(runtime_config))["supervisor_pid"] == pid


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    from cells.client import RuntimeClient
    from cells.config import RuntimeConfig
    from cells.spec import CellSpec, ExecutableSpec

    async def main():
        c = await RuntimeClient.connect(RuntimeConfig.from_json({config!r}))
        await c.allocate(CellSpec({cell!r}, isolate_process=True))
        exe = await c.start(ExecutableSpec({cell!r}, "counter", command="i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done"))
        print(exe.host_pid, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.mark.root
def test_killing_the_client_loses_neither_the_workload_nor_a_log_line(runtime_config: RuntimeConfig) -> None:
    cell = f"k{uuid.uuid4().hex[:8]}"
    script = CLIENT_SCRIPT.format(
        repo=str(REPO), config=runtime_config.to_json(), cell=cell
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    host_pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    assert alive(host_pid)

    async def body() -> Any:
        c = await connect(runtime_config)
        [info] = await c.list(cell)
        [exe] = info.executables
        assert exe.state is ExecutableState.RUNNING and exe.host_pid == host_pid
        # Lines written after the client died prove the pipes outlived it (counted, not timed).
        deadline = time.monotonic() + scaled(10)
        while len(stdout_lines(runtime_config, cell, "counter")) <= 20:
            assert time.monotonic() < deadline, "the counter stopped writing after its client died"
            await asyncio.sleep(0.05)
        return await c.stop(cell, "counter", grace_s=5)

    status = arun(body())
    assert status.signal == signal.SIGTERM
    lines = stdout_lines(runtime_config, cell, "counter")
    assert len(lines) > 20 and lines == [str(i) for i in range(1, len(lines) + 1)]  # no gap, no loss
    assert exit_record(runtime_config, cell, "counter")["signal"] == signal.SIGTERM
    arun(_free(runtime_config, cell))


async def _free(config: RuntimeConfig, cell: str) -> None:
    await (await connect(config)).free(cell, grace_s=0)


@pytest.mark.root
def test_sigkill_of_the_supervisor_then_restart_adopts_cells_and_removes_unclaimed(
    runtime_config: RuntimeConfig,
) -> None:
    cfg = runtime_config

    async def before() -> Any:
        c = await connect(cfg)
        await c.allocate(CellSpec("plain"))
        await c.allocate(CellSpec("iso", isolate_process=True, isolate_network=True))
        a = await c.start(ExecutableSpec("plain", "s", argv=("sleep", "1000")))
        b = await c.start(ExecutableSpec("iso", "s", argv=("sleep", "1000")))
        await c.start(ExecutableSpec("plain", "done", command="exit 4"))
        await asyncio.sleep(0.2)
        return (await c.info())["supervisor_pid"], a, b, await c.inspect("iso")

    old_pid, a, b, iso = arun(before())
    os.kill(old_pid, signal.SIGKILL)
    # Leftovers a crash could leave: a cgroup (with a process) and a netns nobody claims.
    backend = detect(cfg.cgroup_root_name)
    backend.create("stray")
    stray = subprocess.Popen(["sleep", "1000"])
    for path in backend.procs_files("stray"):
        Path(path).write_text(str(stray.pid))
    stray_ns = f"{cfg.netns_prefix}stray"
    subprocess.run(["ip", "netns", "add", stray_ns], check=True)
    assert alive(a.host_pid) and alive(b.host_pid)

    async def after() -> Any:
        c = await connect(cfg)
        cells = {i.name: i for i in await c.list()}
        assert (await c.info())["supervisor_pid"] != old_pid
        plain = {e.name: e for e in cells["plain"].executables}
        assert plain["s"].state is ExecutableState.RUNNING and plain["s"].host_pid == a.host_pid
        assert plain["done"].state is ExecutableState.EXITED and plain["done"].exit.code == 4
        assert cells["iso"].holder_pid == iso.holder_pid
        # An adopted process is not our child: its end is seen via pidfd, its status from the keeper.
        stopped = await c.stop("plain", "s", grace_s=5)
        assert stopped.code is None and stopped.signal == signal.SIGTERM
        assert (await c.inspect("plain")).executables[1].state is ExecutableState.EXITED
        # The isolated cell still works: new executables join the adopted holder's namespaces.
        new = await c.start(ExecutableSpec("iso", "t", argv=("sleep", "1000")))
        assert os.stat(f"/proc/{new.host_pid}/ns/pid").st_ino == os.stat(f"/proc/{b.host_pid}/ns/pid").st_ino
        await c.free("plain")
        await c.free("iso", grace_s=0)

    arun(after())
    stray.wait(timeout=scaled(5))
    assert stray.returncode == -signal.SIGKILL
    assert not backend.exists("stray") and stray_ns not in list_netns(cfg.netns_prefix)
    assert not alive(a.host_pid) and not alive(b.host_pid)
    assert exit_record(cfg, "plain", "s").get("lost") is None
    assert backend.list_tree() == [] and list_netns(cfg.netns_prefix) == []


@pytest.mark.root
def test_sigterm_leaves_workloads_running(runtime_config: RuntimeConfig) -> None:
    async def before() -> Any:
        c = await connect(runtime_config)
        await c.allocate(CellSpec("w"))
        exe = await c.start(ExecutableSpec("w", "s", argv=("sleep", "1000")))
        return (await c.info())["supervisor_pid"], exe

    pid, exe = arun(before())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while supervisor_pids(runtime_config) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not supervisor_pids(runtime_config) and alive(exe.host_pid)

    async def after() -> None:
        c = await connect(runtime_config)
        [info] = await c.list("w")
        assert info.executables[0].state is ExecutableState.RUNNING
        await c.shutdown_supervisor(kill_workloads=True)

    arun(after())
    assert not alive(exe.host_pid) and not supervisor_pids(runtime_config)
    # detect() would re-create the root: look at the directory itself.
    assert not any(
        Path(d, runtime_config.cgroup_root_name).exists() for d in Path("/sys/fs/cgroup").iterdir()
    )
    assert not Path("/sys/fs/cgroup/unified", runtime_config.cgroup_root_name).exists()


@pytest.mark.root
def test_200_cycles_of_isolated_cells_leak_nothing(runtime_config: RuntimeConfig) -> None:
    cfg = runtime_config

    async def body() -> tuple[int, int, int]:
        c = await connect(cfg)
        pid = (await c.info())["supervisor_pid"]
        await c.allocate(CellSpec("warm", isolate_process=True, isolate_network=True))
        await c.free("warm")
        before = fd_count(pid)
        for i in range(200):
            name = f"cycle{i}"
            await c.allocate(
                CellSpec(name, CellLimits(pids_max=50), isolate_process=True, isolate_network=(i % 2 == 0))
            )
            await c.start(ExecutableSpec(name, "true", argv=("/bin/true",)))
            await c.start(ExecutableSpec(name, "sleep", argv=("sleep", "100")))
            await c.stop(name, "sleep", grace_s=1)
            await c.free(name, grace_s=0)
        await asyncio.sleep(0.2)
        return pid, before, fd_count(pid)

    pid, before, after = arun(body())
    # A leak grows with the cycles; one fewer is a connection of the warm-up still closing at "before".
    assert after <= before, (before, after)
    assert zombie_children(pid) == []
    assert detect(cfg.cgroup_root_name).list_tree() == []
    assert list_netns(cfg.netns_prefix) == []
    assert os.listdir(cfg.cells_dir) == []
    children = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True
    ).stdout.split()
    assert [int(child) for child in children] == fdstore_pids(cfg)  # the fd store, started by it, only


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_names = st.one_of(_label, st.text(max_size=12), st.just("../x"), st.just("a/../b"))
_ints = st.one_of(st.none(), st.integers(min_value=-2, max_value=2**63))
_limits = st.builds(
    CellLimits,
    pids_max=_ints,
    memory_max=_ints,
    cpu_weight=_ints,
    cpuset_cpus=st.one_of(st.none(), st.sampled_from(["0", "0-1", "99", "x"])),
)
_argv = st.one_of(
    st.lists(st.text(max_size=20), max_size=4).map(tuple),
    st.sampled_from([("/bin/true",), ("sh", "-c", "exit 3"), ("/nonexistent",), ("sleep", "30"), ("",)]),
)
_env = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3).map(tuple)


@pytest.mark.root
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=_names,
    limits=_limits,
    isolate=st.booleans(),
    exe_name=_names,
    argv=_argv,
    env=_env,
    uid=st.one_of(st.none(), st.integers(-1, 2**32)),
)
def test_generated_specs_never_crash_the_supervisor_nor_leak(
    shared_runtime_config: RuntimeConfig,
    name: str,
    limits: CellLimits,
    isolate: bool,
    exe_name: str,
    argv: tuple[str, ...],
    env: tuple[tuple[str, str], ...],
    uid: int | None,
) -> None:
    cfg = shared_runtime_config

    async def body() -> None:
        c = await connect(cfg)
        pid = (await c.info())["supervisor_pid"]
        allocated = False
        try:
            await c.allocate(CellSpec(name, limits, isolate_process=isolate, isolate_network=isolate))
            allocated = True
            await c.start(ExecutableSpec(name, exe_name, argv=argv, env=env, uid=uid))
            await c.stop(name, exe_name, grace_s=0)
        except errors.CellError as exc:
            assert (
                not isinstance(exc, errors.RuntimeFailure) or "kernel" in str(exc) or "spawn" in str(exc)
            ), exc
        finally:
            if allocated:
                await c.free(name, grace_s=0)
        assert (await c.info())["supervisor_pid"] == pid
        assert await c.list() == []

    arun(body())
    assert detect(cfg.cgroup_root_name).list_tree() == []
    assert list_netns(cfg.netns_prefix) == []


@pytest.mark.root
def test_max_cells_is_enforced(runtime_config: RuntimeConfig) -> None:
    cfg = dataclasses.replace(runtime_config, max_cells=2)

    async def body() -> None:
        c = await connect(cfg)
        await c.allocate(CellSpec("a"))
        await c.allocate(CellSpec("a/b"))
        with pytest.raises(errors.ResourceExhausted):
            await c.allocate(CellSpec("c"))
        await c.free("a/b")
        await c.allocate(CellSpec("c"))
        await c.shutdown_supervisor(kill_workloads=True)

    arun(body())


def test_an_error_subclass_travels_as_its_nearest_known_class() -> None:
    """ExecTimeout is a RuntimeFailure for cellard (INTERNAL), with its message, not 'internal error: ...'."""
    exc = protocol.error_from_dict(protocol.error_to_dict(errors.ExecTimeout("spawn failed at setup: late")))
    assert type(exc) is errors.RuntimeFailure and str(exc) == "spawn failed at setup: late"


@pytest.mark.root
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_workload_writing_through_a_supervisor_restart_lives_on_and_keeps_its_output(
    runtime_config: RuntimeConfig, how: signal.Signals
) -> None:
    """The fd store holds copies of the pipes' read ends: the workload's writes after the supervisor's
    death neither kill it (SIGPIPE) nor get lost; the successor appends them to the same run's log.
    SIGTERM loses nothing; SIGKILL at most what the dead supervisor had read and not yet written."""
    cfg = runtime_config
    from cells.fdstore import FdStore

    async def before() -> Any:
        c = await connect(cfg)
        await c.allocate(CellSpec("w"))
        exe = await c.start(ExecutableSpec("w", "count", command="i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done"))
        await asyncio.sleep(0.3)
        return (await c.info())["supervisor_pid"], exe

    old_pid, exe = arun(before())
    os.kill(old_pid, how)
    deadline = time.monotonic() + scaled(10)
    while old_pid in supervisor_pids(cfg) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert old_pid not in supervisor_pids(cfg)  # its keeper restarts it (2.5 s later, or at a call)
    time.sleep(0.5)  # the workload writes on, into the pipe only the store still reads from
    assert alive(exe.host_pid), "the workload died with its supervisor (SIGPIPE)"
    written_before_restart = len(stdout_lines(cfg, "w", "count"))

    async def after() -> None:
        c = await connect(cfg)
        [info] = (await c.inspect("w")).executables
        assert info.state is ExecutableState.RUNNING and info.host_pid == exe.host_pid
        await asyncio.sleep(0.3)
        await c.stop("w", "count", grace_s=5)
        await c.free("w")

    arun(after())
    numbers = [int(line) for line in stdout_lines(cfg, "w", "count")]
    assert numbers == sorted(numbers) and numbers[0] == 1
    missing = set(range(1, numbers[-1] + 1)) - set(numbers)
    assert len(numbers) > written_before_restart + 20, "nothing captured after the restart"
    if how == signal.SIGTERM:
        assert not missing
    else:
        assert len(missing) <= 1, sorted(missing)[:10]
    # An adopted process: its status is the keeper's record; after SIGTERM the keeper exited with
    # its supervisor, so nobody saw it end.
    assert exit_record(cfg, "w", "count").get("lost") is (True if how == signal.SIGTERM else None)
    store = FdStore(os.path.join(cfg.run_dir, "fdstore.sock"), start_timeout_s=1, stderr_path=os.devnull)
    try:
        assert store.held_keys() == []  # the ended run's pipes were dropped
    finally:
        store.close()


@pytest.mark.root
def test_sigterm_with_a_workload_writing_flat_out_still_exits(runtime_config: RuntimeConfig) -> None:
    """Closing drains what the pipes hold when it starts, not what a writer that never pauses adds."""
    cfg = runtime_config

    async def before() -> Any:
        c = await connect(cfg)
        await c.allocate(CellSpec("w"))
        exe = await c.start(ExecutableSpec("w", "yes", argv=("yes", "a line that never ends")))
        await asyncio.sleep(0.3)
        return (await c.info())["supervisor_pid"], exe

    pid, exe = arun(before())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + scaled(10)
    while supervisor_pids(cfg) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not supervisor_pids(cfg), "the supervisor did not exit while a workload kept writing"
    assert alive(exe.host_pid)

    async def after() -> None:
        c = await connect(cfg)
        [info] = (await c.inspect("w")).executables
        assert info.state is ExecutableState.RUNNING
        await c.free("w", grace_s=0)

    arun(after())
    assert "a line that never ends" in stdout_lines(cfg, "w", "yes")[-100:]  # captured after the restart too


@pytest.mark.root
def test_output_of_a_workload_that_ended_while_no_supervisor_ran_is_kept(runtime_config: RuntimeConfig) -> None:
    """Its last lines wait in the pipe (held by the fd store); the successor drains them into the run."""
    cfg = runtime_config

    async def before() -> Any:
        c = await connect(cfg)
        await c.allocate(CellSpec("w"))
        exe = await c.start(ExecutableSpec("w", "last", command="sleep 0.5; seq 1 50"))
        return (await c.info())["supervisor_pid"], exe

    pid, exe = arun(before())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + scaled(10)
    while (pid in supervisor_pids(cfg) or alive(exe.host_pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(exe.host_pid)

    async def after() -> None:
        c = await connect(cfg)
        deadline = time.monotonic() + scaled(10)
        while (await c.inspect("w")).executables[0].state is ExecutableState.RUNNING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await c.free("w")

    arun(after())
    assert stdout_lines(cfg, "w", "last") == [str(i) for i in range(1, 51)]
    record = exit_record(cfg, "w", "last")  # its keeper recorded how it ended
    assert record.get("lost") is None and record["code"] == 0
