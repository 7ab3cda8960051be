"""runtime.CellService and cellar.v1.Cells through the real gRPC API of a real cellard.

One cellard per module (``module_cellard``); the restart test has its own. Every test frees what it
allocated (the ``api`` fixture frees every leftover cell, children first, also after a failure).
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from cells.spec import cpu_shares_to_weight, weight_to_cpu_shares
from proto.aurae import runtime_pb2
from proto.cellar.v1 import cells_pb2, logs_pb2, types_pb2
from tests.support.api import Api, code_of, restart
from tests.support.cgroups import host_mode, pure_v2, read_file, unified_dir
from tests.support.cleanup import CGROUP_MOUNT
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

RUNNING = types_pb2.EXECUTABLE_STATE_RUNNING
EXITED = types_pb2.EXECUTABLE_STATE_EXITED


def v1(api: Api, controller: str, cell: str, name: str) -> str:
    with open(os.path.join(CGROUP_MOUNT, controller, api.root, cell, name)) as f:
        return f.read().strip()


def unified(api: Api, cell: str, name: str) -> str:
    with open(os.path.join(unified_dir(api.root, cell), name)) as f:
        return f.read()


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def exe_info(api: Api, cell: str, name: str) -> types_pb2.ExecutableInfo:
    (info,) = [e for e in api.inspect(cell).executables if e.name == name]
    return info


def wait_exited(api: Api, cell: str, name: str, timeout: float = 10.0) -> types_pb2.ExecutableInfo:
    return wait_for(lambda: (e := exe_info(api, cell, name)).state == EXITED and e, timeout, f"{cell}/{name} exit")


def expect(code: grpc.StatusCode, call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    assert code_of(err.value) == code, (code_of(err.value), err.value.details())
    return str(err.value.details())


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def read_logs(api: Api, cell: str, name: str) -> list[logs_pb2.LogRecord]:
    req = logs_pb2.ReadLogsRequest(cell_name=cell, executable_name=name, channels=[logs_pb2.LOG_CHANNEL_STDOUT])
    try:
        return [r for batch in api.logs.Read(req, timeout=scaled(30)) for r in batch.records]
    except grpc.RpcError as exc:
        if code_of(exc) == grpc.StatusCode.NOT_FOUND:  # nothing written yet
            return []
        raise


# ---------------------------------------------------------------- 1. limits reach the kernel


def test_limits_are_written_to_the_hosts_controllers(api: Api) -> None:
    """Pure v2: the cell's own v2 files; hybrid: the v1 hierarchies (the unified cell holds membership)."""
    reply = api.allocate("lim", cpu_weight=500, cpu_max_quota_us=50_000, cpu_max_period_us=100_000,
                         pids_max=50, memory_max=64 * 1024**2, cpuset_cpus="0")
    assert reply.cell_name == "lim"
    assert reply.cgroup_v2 is pure_v2()
    cell = unified_dir(api.root, "lim")
    if pure_v2():
        assert read_file(cell, "cpu.weight") == "500"
        assert read_file(cell, "cpu.max") == "50000 100000"
        assert read_file(cell, "pids.max") == "50"
        assert read_file(cell, "memory.max") == str(64 * 1024**2)
        assert read_file(cell, "cpuset.cpus") == "0"
        assert not os.path.isdir(os.path.join(CGROUP_MOUNT, "unified"))
    else:
        assert v1(api, "cpu", "lim", "cpu.shares") == str(weight_to_cpu_shares(500))
        assert v1(api, "cpu", "lim", "cpu.cfs_quota_us") == "50000"
        assert v1(api, "cpu", "lim", "cpu.cfs_period_us") == "100000"
        assert v1(api, "pids", "lim", "pids.max") == "50"
        assert v1(api, "memory", "lim", "memory.limit_in_bytes") == str(64 * 1024**2)
        assert v1(api, "cpuset", "lim", "cpuset.cpus") == "0"
        assert os.path.isdir(cell)

    spec = api.inspect("lim").cell
    assert (spec.cpu_weight, spec.pids_max, spec.memory_max, spec.cpuset_cpus) == (500, 50, 64 * 1024**2, "0")

    # The seed's cpu_shares is converted once to a weight (and back to shares for v1).
    api.allocate("lim/shares", cpu_shares=2048)
    if pure_v2():
        assert read_file(unified_dir(api.root, "lim/shares"), "cpu.weight") == str(cpu_shares_to_weight(2048))
    else:
        expected = weight_to_cpu_shares(cpu_shares_to_weight(2048))
        assert v1(api, "cpu", "lim/shares", "cpu.shares") == str(expected)
    assert api.inspect("lim/shares").cell.cpu_weight == cpu_shares_to_weight(2048)


def test_info_names_the_hosts_cgroup_mode(api: Api) -> None:
    info = api.cells.Info(cells_pb2.InfoRequest(), timeout=scaled(10))
    assert info.cgroup_mode == host_mode()
    assert info.cgroup_v2_limits is pure_v2()
    assert info.cgroup_root == unified_dir(api.root)
    assert info.version and info.hostname


# ---------------------------------------------------------------- 2. status codes


def test_duplicate_cell_is_already_exists(api: Api) -> None:
    api.allocate("dup")
    details = expect(grpc.StatusCode.ALREADY_EXISTS, api.allocate, "dup")
    assert "dup" in details


@pytest.mark.parametrize("rpc", ["free", "start", "stop", "inspect", "freeze", "thaw"])
def test_unknown_cell_is_not_found(api: Api, rpc: str) -> None:
    calls = {
        "free": lambda: api.free("nope"),
        "start": lambda: api.start("nope", "x", "/bin/true"),
        "stop": lambda: api.stop("nope", "x"),
        "inspect": lambda: api.inspect("nope"),
        "freeze": lambda: api.cells.Freeze(cells_pb2.FreezeCellRequest(cell_name="nope"), timeout=scaled(10)),
        "thaw": lambda: api.cells.Thaw(cells_pb2.ThawCellRequest(cell_name="nope"), timeout=scaled(10)),
    }
    details = expect(grpc.StatusCode.NOT_FOUND, calls[rpc])
    assert "nope" in details


def test_unknown_executable_is_not_found(api: Api) -> None:
    api.allocate("noexe")
    assert "ghost" in expect(grpc.StatusCode.NOT_FOUND, api.stop, "noexe", "ghost")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "ok", "cpu_weight": 0}, "cell.cpu_weight"),
        ({"name": "ok", "cpu_weight": 20000}, "cell.cpu_weight"),
        ({"name": "ok", "pids_max": 0}, "cell.pids_max"),
        ({"name": "ok", "cpu_max_period_us": 100_000}, "cell.cpu_max_period_us"),
        ({"name": "ok", "cpuset_cpus": "zero"}, "cell.cpuset_cpus"),
        ({"name": "ok", "cpu_shares": 1}, "cell.cpu_shares"),
        ({"name": "../x"}, "cell.name"),
        ({"name": "A"}, "cell.name"),
        ({"name": "a//b"}, "cell.name"),
        ({"name": "a" * 64}, "cell.name"),
        ({"name": "a\0b"}, "cell.name"),
        ({"name": ""}, "cell.name"),
    ],
)
def test_bad_cell_is_invalid_argument_naming_the_field(api: Api, fields: dict[str, Any], field: str) -> None:
    name = fields.pop("name")
    details = expect(grpc.StatusCode.INVALID_ARGUMENT, api.allocate, name, **fields)
    assert details.startswith(field + ":"), details
    assert api.cgroup_dirs() == []


@pytest.mark.parametrize(
    ("exe", "field"),
    [
        ({"name": "../x", "argv": ["/bin/true"]}, "executable.name"),
        ({"name": "a\0", "argv": ["/bin/true"]}, "executable.name"),
        ({"name": "x", "argv": [], "command": ""}, "executable"),
    ],
)
def test_bad_executable_is_invalid_argument(api: Api, exe: dict[str, Any], field: str) -> None:
    api.allocate("badexe")
    msg = runtime_pb2.Executable(cell_name="badexe", **exe)
    details = expect(grpc.StatusCode.INVALID_ARGUMENT, api.runtime.Start,
                     runtime_pb2.StartCellRequest(executable=msg), timeout=scaled(10))
    assert details.startswith(field), details


def test_free_with_children_is_failed_precondition(api: Api) -> None:
    api.allocate("par")
    api.allocate("par/kid")
    details = expect(grpc.StatusCode.FAILED_PRECONDITION, api.free, "par")
    assert "par/kid" in details
    api.free("par/kid")
    api.free("par")
    assert api.cgroup_dirs() == []


def test_nested_cell_without_parent_is_not_found(api: Api) -> None:
    assert "orphan" in expect(grpc.StatusCode.NOT_FOUND, api.allocate, "orphan/kid")
    assert api.cgroup_dirs() == []


def test_start_of_missing_program_leaves_nothing(api: Api) -> None:
    api.allocate("noprog")
    before = api.cgroup_dirs()
    details = expect(grpc.StatusCode.INVALID_ARGUMENT, api.start, "noprog", "x", "/nonexistent/program")
    assert "/nonexistent/program" in details or "argv" in details, details
    assert api.cgroup_dirs() == before  # no exe.* leaf left behind
    assert not [e for e in api.inspect("noprog").executables if e.state == RUNNING]


# ---------------------------------------------------------------- 3. executables


def test_start_stop_exit_code_and_signal(api: Api) -> None:
    api.allocate("run")
    started = api.start("run", "seven", "sh", "-c", "exit 7")
    assert started.host_pid > 0 and started.cell_pid == started.host_pid and started.run == 1
    wait_exited(api, "run", "seven")
    status = api.stop("run", "seven").exit
    assert status.HasField("code") and status.code == 7 and not status.HasField("signal")

    sleeper = api.start("run", "sleeper", "sleep", "100")
    assert pid_alive(sleeper.host_pid)
    status = api.stop("run", "sleeper").exit
    assert status.HasField("signal") and status.signal == signal.SIGTERM
    assert not pid_alive(sleeper.host_pid)


def test_grace_period_then_sigkill(api: Api) -> None:
    api.allocate("grace")
    api.start("grace", "stubborn", "sh", "-c", "trap '' TERM; echo ready; sleep 3600")
    wait_for(lambda: read_logs(api, "grace", "stubborn"), what="the trap to be installed")
    t0 = time.monotonic()
    status = api.stop("grace", "stubborn", grace_ms=500).exit
    elapsed = time.monotonic() - t0
    assert status.signal == signal.SIGKILL
    assert 0.45 <= elapsed < 5.0, elapsed


def test_isolated_cell_has_its_own_pid_namespace(api: Api) -> None:
    api.allocate("iso", isolate_process=True)
    started = api.start("iso", "s", "sleep", "100")
    assert started.host_pid != started.cell_pid and started.cell_pid > 1
    assert api.stop("iso", "s", grace_ms=1000).exit.signal == signal.SIGTERM


def test_list_is_parents_first_with_executables(api: Api) -> None:
    api.allocate("tree")
    api.allocate("tree/b")
    api.allocate("tree/a")
    api.allocate("tree/a/x")
    api.start("tree/a", "done", "sh", "-c", "exit 3")
    api.start("tree/b", "live", "sleep", "100")
    wait_exited(api, "tree/a", "done")
    cells = api.list("tree")
    names = [c.name for c in cells]
    assert set(names) == {"tree", "tree/a", "tree/b", "tree/a/x"}
    for i, name in enumerate(names):
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < i, names
    by_name = {c.name: c for c in cells}
    (done,) = by_name["tree/a"].executables
    assert (done.name, done.state, done.exit.code, list(done.argv)) == ("done", EXITED, 3, ["sh", "-c", "exit 3"])
    (live,) = by_name["tree/b"].executables
    assert live.state == RUNNING and live.host_pid > 0
    assert [c.name for c in api.list("tree/a")] == ["tree/a", "tree/a/x"]


def test_inspect_has_stats_while_running(api: Api) -> None:
    api.allocate("stats", memory_max=256 * 1024**2)
    api.start("stats", "w", "sh", "-c", "x=$(head -c 2000000 /dev/zero | tr '\\0' a); sleep 3600")
    info = wait_for(lambda: (i := api.inspect("stats")).stats.memory_current > 0 and i, what="memory_current > 0")
    assert info.stats.pids_current >= 1
    assert info.cgroup_v2_limits is pure_v2() and info.state == cells_pb2.CELL_STATE_ACTIVE


def test_freeze_and_thaw(api: Api) -> None:
    api.allocate("ice")
    api.start("ice", "w", "sleep", "100")
    api.cells.Freeze(cells_pb2.FreezeCellRequest(cell_name="ice"), timeout=scaled(10))
    assert api.inspect("ice").state == cells_pb2.CELL_STATE_FROZEN
    assert unified(api, "ice", "cgroup.freeze").strip() == "1"
    wait_for(lambda: "frozen 1" in unified(api, "ice", "cgroup.events"), what="frozen 1")
    # A frozen cell refuses Stop and Start rather than thawing behind the caller's back.
    expect(grpc.StatusCode.FAILED_PRECONDITION, api.stop, "ice", "w")
    api.cells.Thaw(cells_pb2.ThawCellRequest(cell_name="ice"), timeout=scaled(10))
    assert api.inspect("ice").state == cells_pb2.CELL_STATE_ACTIVE
    assert unified(api, "ice", "cgroup.freeze").strip() == "0"
    wait_for(lambda: "frozen 0" in unified(api, "ice", "cgroup.events"), what="frozen 0")
    assert api.stop("ice", "w").exit.signal == signal.SIGTERM


def test_watch_events_in_order(api: Api) -> None:
    api.allocate("watch")
    events: queue.Queue[Any] = queue.Queue()
    call = api.cells.WatchEvents(cells_pb2.WatchEventsRequest(cell_prefix="watch"))

    def pump() -> None:
        try:
            for ev in call:
                events.put(ev)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        # A probe proves the subscription is live before the real workload starts.
        deadline = time.monotonic() + 10
        probe_seen = False
        while not probe_seen and time.monotonic() < deadline:
            api.start("watch", "probe", "/bin/true")
            try:
                while True:
                    ev = events.get(timeout=0.5)
                    if ev.executable.name == "probe" and ev.kind == "exited":
                        probe_seen = True
                        break
            except queue.Empty:
                pass
        assert probe_seen
        started = api.start("watch", "w", "sleep", "100")
        assert api.stop("watch", "w").exit.signal == signal.SIGTERM
        kinds = []
        while len(kinds) < 3:
            ev = events.get(timeout=scaled(10))
            if ev.executable.name == "w":
                kinds.append(ev.kind)
                assert ev.executable.host_pid == started.host_pid and ev.timestamp_ns > 0
        assert kinds == ["started", "stopping", "exited"]
    finally:
        call.cancel()
        thread.join(5)


# ---------------------------------------------------------------- 4. SIGKILL of cellard


COUNTER = "i=0; while [ $i -lt 300 ]; do echo $i; i=$((i+1)); sleep 0.01; done; exec sleep 3600"


def test_sigkill_of_cellard_keeps_workload_and_logs(fresh_cellard: Any) -> None:
    daemon = fresh_cellard
    channel = daemon.channel()
    api = Api(daemon, channel)
    try:
        api.allocate("surv")
        started = api.start("surv", "count", "sh", "-c", COUNTER)
        supervisor = api.supervisor_pid()
        wait_for(lambda: len(read_logs(api, "surv", "count")) >= 30, what="30 lines before the kill")
        channel.close()
        before_kill = len(read_logs(Api(daemon, channel := daemon.channel()), "surv", "count"))
        channel.close()
        assert before_kill < 300, "the workload finished before the kill: the test proves nothing"

        daemon.proc.kill()
        daemon.proc.wait(10)
        assert pid_alive(started.host_pid), "the workload died with cellard"
        restart(daemon)
        assert pid_alive(started.host_pid)
        assert api.supervisor_pid() == supervisor

        channel = daemon.channel()
        api = Api(daemon, channel)
        (cell,) = api.list("surv")
        (exe,) = cell.executables
        assert (exe.state, exe.host_pid) == (RUNNING, started.host_pid)

        records = wait_for(lambda: (r := read_logs(api, "surv", "count")) and len(r) >= 300 and r,
                           timeout=30, what="300 lines")
        status = api.stop("surv", "count", grace_ms=2000).exit
        assert status.signal == signal.SIGTERM
        assert not pid_alive(started.host_pid)

        records = read_logs(api, "surv", "count")
        assert [r.seq for r in records] == list(range(1, 301))
        assert [r.data for r in records] == [str(i).encode() for i in range(300)]
        api.free("surv")
        assert api.cgroup_dirs() == []
    finally:
        channel.close()


# ---------------------------------------------------------------- 5. churn leaves nothing behind


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def zombie_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def one_cycle(api: Api, name: str) -> None:
    api.allocate(name, isolate_process=True, isolate_network=True)
    api.start(name, "w", "sh", "-c", "exit 0")
    status = api.stop(name, "w", grace_ms=1000).exit
    assert status.code == 0, status
    api.free(name, grace_ms=1000)


CYCLES, CLIENTS = 200, 4


def test_churn_of_isolated_cells_leaks_nothing(api: Api) -> None:
    supervisor = api.supervisor_pid()
    cellard = api.daemon.proc.pid
    for i in range(4):  # warm up: pyroute2 import, grpc threads, the supervisor's caches
        one_cycle(api, f"warm{i}")
    fds_before = (fd_count(cellard), fd_count(supervisor))

    def client(k: int) -> None:
        with api.daemon.channel() as channel:
            mine = Api(api.daemon, channel)
            for i in range(CYCLES // CLIENTS):
                one_cycle(mine, f"churn{k}-{i}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for fut in [pool.submit(client, k) for k in range(CLIENTS)]:
            fut.result()
    elapsed = time.monotonic() - t0
    print(f"\n{CYCLES} isolated allocate/start/stop/free cycles, {CLIENTS} clients: {elapsed:.1f}s")

    assert api.list() == []
    assert api.cgroup_dirs() == []
    assert api.netns() == []
    assert zombie_children(supervisor) == []
    fds_after = (fd_count(cellard), fd_count(supervisor))
    # Slack for grpc internals; a leak per cycle would be >= 200.
    assert fds_after[0] <= fds_before[0] + 10, (fds_before, fds_after)
    assert fds_after[1] <= fds_before[1] + 5, (fds_before, fds_after)
