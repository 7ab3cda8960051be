"""cgroup backends: pure parsing/formatting logic, then the real kernel (root, this host's mode).

The kernel tests read every effect back from the kernel's own files (/proc/PID/cgroup, cgroup.events,
the v1/v2 limit files) instead of trusting the backend's view of itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cells.cgroup import (
    CgroupBackend,
    _own_unified_cgroup,
    parse_mountinfo,
    parse_pressure,
    parse_proc_cgroup,
    validate_rel,
    wait_empty,
)
from cells.cgroup_hybrid import HybridBackend, v1_hierarchies
from cells.cgroup_v2 import format_cpu_max, limit_writes, parse_controllers, plan_root
from cells.errors import FailedPrecondition, InvalidArgument
from cells.spec import CellLimits, weight_to_cpu_shares
from tests.support.timeouts import scaled

MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Pure logic (no root needed)
# ---------------------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/name\\040x rw - cgroup cgroup rw,name=systemd
"""


def test_parse_mountinfo_keeps_cgroup_mounts_only() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mountpoint for m in mounts] == [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/name x",
    ]
    assert mounts[3].fstype == "cgroup2"
    hierarchies = v1_hierarchies(mounts)
    assert hierarchies == {
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
    }


def test_parse_proc_cgroup_and_own_unified_cgroup() -> None:
    text = "9:name=systemd:/\n4:memory:/a/b\n2:cpu,cpuacct:/\n0::/system.slice/cellard.service\n"
    assert parse_proc_cgroup(text) == {
        "name=systemd": "/",
        "memory": "/a/b",
        "cpu,cpuacct": "/",
        "": "/system.slice/cellard.service",
    }
    assert _own_unified_cgroup(text) == "/system.slice/cellard.service"
    with pytest.raises(FailedPrecondition):
        _own_unified_cgroup("4:memory:/\n")


def test_parse_pressure() -> None:
    text = (
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=99\n"
    )
    got = parse_pressure(text)
    assert got["some"]["avg10"] == 1.5 and got["some"]["total"] == 1234
    assert got["full"]["avg10"] == 0.25


def test_v2_controllers_and_cpu_max_formatting() -> None:
    assert parse_controllers("cpuset cpu io memory hugetlb pids rdma misc\n") == [
        "cpuset",
        "cpu",
        "io",
        "memory",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    ]
    assert parse_controllers("\n") == []
    assert format_cpu_max(50_000, None) == "50000 100000"
    assert format_cpu_max(20_000, 50_000) == "20000 50000"
    assert format_cpu_max(None, 10_000) == "max 10000"


def test_v2_limit_writes_map_every_field() -> None:
    limits = CellLimits(
        cpu_weight=200,
        cpu_max_quota_us=50_000,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        memory_min=1,
        memory_low=2,
        memory_high=3,
        memory_max=4,
        swap_max=5,
        pids_max=6,
    )
    assert limit_writes(limits) == [
        ("cpu.weight", "200", "cpu_weight"),
        ("cpu.max", "50000 100000", "cpu_max_quota_us"),
        ("cpuset.cpus", "0-1", "cpuset_cpus"),
        ("cpuset.mems", "0", "cpuset_mems"),
        ("memory.min", "1", "memory_min"),
        ("memory.low", "2", "memory_low"),
        ("memory.high", "3", "memory_high"),
        ("memory.max", "4", "memory_max"),
        ("memory.swap.max", "5", "swap_max"),
        ("pids.max", "6", "pids_max"),
    ]
    assert limit_writes(CellLimits()) == []


def test_v2_plan_root_top_and_delegated() -> None:
    top = ("/sys/fs/cgroup", "/sys/fs/cgroup/cellar", None)
    assert plan_root("/sys/fs/cgroup", "cellar", "/", delegated=False) == top
    unit = "/sys/fs/cgroup/system.slice/cellard.service"
    expected = (unit, unit + "/cellar", unit + "/_daemon")
    assert plan_root("/sys/fs/cgroup", "cellar", "/system.slice/cellard.service", delegated=True) == expected
    # Already moved into _daemon by an earlier detect(): delegate the unit again, not _daemon.
    assert plan_root("/sys/fs/cgroup", "cellar", "/system.slice/cellard.service/_daemon", delegated=True) == expected
    # Not delegated (more in test_cgroup_delegation.py): the unit's cgroup is not cellar's.
    assert plan_root("/sys/fs/cgroup", "cellar", "/system.slice/cellard.service", delegated=False) == top


@pytest.mark.parametrize("bad", ["..", "a/../b", "/abs", "a//b", "a/", ".", "a/./b", "x\0y", "a b"])
def test_validate_rel_rejects_escapes(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_rel(bad)


def test_validate_rel_accepts_cell_and_leaf_names() -> None:
    for good in ("", "web", "web/api", "web/api/exe.nginx", "web/_init"):
        assert validate_rel(good) == good


# ---------------------------------------------------------------------------------------------
# Real kernel
# ---------------------------------------------------------------------------------------------


def spawn_in(backend: CgroupBackend, rel: str, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``rel`` the way the supervisor does: join every hierarchy before exec."""
    files = backend.procs_files(rel)

    def join() -> None:
        pid = str(os.getpid()).encode()
        for path in files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    return subprocess.Popen(argv, preexec_fn=join, **kwargs)  # type: ignore[call-overload, no-any-return]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def leftovers(backend: CgroupBackend, rel: str) -> list[str]:
    return [p for p in (backend.unified_path(rel), *backend._v1_paths(rel)) if os.path.exists(p)]


@pytest.mark.root
def test_detect_picks_this_hosts_mode_and_creates_root(backend: CgroupBackend, cgroup_root_name: str) -> None:
    hybrid = os.path.ismount("/sys/fs/cgroup/unified")
    assert backend.mode == ("hybrid" if hybrid else "v2")
    assert backend.limits_v2 is (not hybrid)
    assert backend.root.endswith("/" + cgroup_root_name)
    assert os.path.isdir(backend.root)
    for directory in backend._v1_paths(""):
        assert os.path.isdir(directory)
    assert backend.list_tree() == []


@pytest.mark.root
def test_limits_are_written_to_the_kernel_files(backend: CgroupBackend) -> None:
    limits = CellLimits(
        cpu_weight=100,
        cpu_max_quota_us=50_000,
        cpu_max_period_us=200_000,
        cpuset_cpus="0",
        cpuset_mems="0",
        memory_max=64 * MiB,
        swap_max=0,
        pids_max=17,
    )
    backend.create("web", limits)
    got = backend.limits("web")
    if backend.mode == "hybrid":
        v1 = backend.v1_roots  # type: ignore[attr-defined]

        def raw(ctrl: str, name: str) -> str:
            with open(os.path.join(v1[ctrl], "web", name)) as f:
                return f.read().strip()

        assert raw("cpu", "cpu.shares") == str(weight_to_cpu_shares(100)) == got["cpu.shares"]
        assert raw("cpu", "cpu.cfs_quota_us") == "50000"
        assert raw("cpu", "cpu.cfs_period_us") == "200000"
        assert raw("cpuset", "cpuset.cpus") == "0"
        assert raw("cpuset", "cpuset.mems") == "0"
        assert raw("memory", "memory.limit_in_bytes") == str(64 * MiB)
        if os.path.exists(os.path.join(v1["memory"], "web", "memory.memsw.limit_in_bytes")):
            assert raw("memory", "memory.memsw.limit_in_bytes") == str(64 * MiB)
        assert raw("pids", "pids.max") == "17"
    else:
        assert got["cpu.weight"] == "100"
        assert got["cpu.max"] == "50000 200000"
        assert got["cpuset.cpus"] == "0"
        assert got["memory.max"] == str(64 * MiB)
        assert got["memory.swap.max"] == "0"
        assert got["pids.max"] == "17"
    # An update changes only the fields it names.
    backend.set_limits("web", CellLimits(pids_max=33))
    after = backend.limits("web")
    assert after["pids.max"] == "33"
    assert {k: v for k, v in after.items() if k != "pids.max"} == {
        k: v for k, v in got.items() if k != "pids.max"
    }


@pytest.mark.root
def test_nested_cells_inherit_cpuset_and_accept_processes(backend: CgroupBackend) -> None:
    backend.create("a", CellLimits(cpuset_cpus="0"))
    backend.create("a/b")
    backend.create("a/b/exe.x")
    assert backend.list_tree() == ["a", "a/b", "a/b/exe.x"]
    proc = spawn_in(backend, "a/b/exe.x", ["sleep", "30"])
    try:
        assert wait_for(lambda: proc.pid in backend.pids("a"))
        with open(f"/proc/{proc.pid}/status") as f:
            allowed = next(line for line in f if line.startswith("Cpus_allowed_list:"))
        assert allowed.split()[-1] == "0"
    finally:
        reap(proc)


@pytest.mark.root
def test_kernel_rejected_value_names_field_and_leaves_nothing(backend: CgroupBackend) -> None:
    with pytest.raises(InvalidArgument) as info:
        backend.create("web", CellLimits(pids_max=5, cpuset_cpus="4000"))
    assert info.value.field == "cell.cpuset_cpus"
    assert not backend.exists("web")
    assert leftovers(backend, "web") == []
    assert backend.list_tree() == []


@pytest.mark.root
def test_validation_happens_before_anything_is_created(backend: CgroupBackend) -> None:
    with pytest.raises(InvalidArgument) as info:
        backend.create("web", CellLimits(cpu_weight=0))
    assert info.value.field == "cell.cpu_weight"
    assert leftovers(backend, "web") == []
    with pytest.raises(FailedPrecondition):
        backend.create("missing/child")
    with pytest.raises(InvalidArgument):
        backend.create("../escape")


@pytest.mark.root
@pytest.mark.parametrize("field", ["memory_min", "memory_low", "memory_high"])
def test_hybrid_refuses_limits_without_v1_equivalent(backend: CgroupBackend, field: str) -> None:
    if not isinstance(backend, HybridBackend):
        pytest.skip("v2 host: the limit exists")
    with pytest.raises(FailedPrecondition, match=f"cell.{field}.*has no"):
        backend.create("web", CellLimits(**{field: 64 * MiB}))  # type: ignore[arg-type]
    assert leftovers(backend, "web") == []


@pytest.mark.root
def test_v2_writes_memory_protection_and_throttle(backend: CgroupBackend) -> None:
    if backend.limits_v2 is False:
        pytest.skip("hybrid host: refused, see test_hybrid_refuses_limits_without_v1_equivalent")
    backend.create("web", CellLimits(memory_min=8 * MiB, memory_low=16 * MiB, memory_high=32 * MiB))
    got = backend.limits("web")
    assert (got["memory.min"], got["memory.low"], got["memory.high"]) == (
        str(8 * MiB),
        str(16 * MiB),
        str(32 * MiB),
    )
    # A nested cell gets limit files too: its parent's subtree_control was enabled on demand.
    backend.create("web/api", CellLimits(pids_max=9))
    assert backend.limits("web/api")["pids.max"] == "9"
    with open(os.path.join(backend.unified_path("web"), "cgroup.subtree_control")) as f:
        assert "memory" in f.read().split()


@pytest.mark.root
def test_hybrid_swap_needs_memory_max(backend: CgroupBackend) -> None:
    if not isinstance(backend, HybridBackend):
        pytest.skip("v2 host: swap_max stands alone")
    with pytest.raises(FailedPrecondition, match="swap_max needs memory_max"):
        backend.create("web", CellLimits(swap_max=MiB))
    backend.create("web", CellLimits(memory_max=32 * MiB, swap_max=16 * MiB))
    assert backend.limits("web")["memory.memsw.limit_in_bytes"] == str(48 * MiB)
    # Lowering both keeps memsw >= limit at every step.
    backend.set_limits("web", CellLimits(memory_max=8 * MiB, swap_max=0))
    assert backend.limits("web")["memory.limit_in_bytes"] == str(8 * MiB)
    assert backend.limits("web")["memory.memsw.limit_in_bytes"] == str(8 * MiB)


@pytest.mark.root
def test_process_joins_every_hierarchy(backend: CgroupBackend, cgroup_root_name: str) -> None:
    backend.create("web")
    backend.create("web/exe.a")
    proc = spawn_in(backend, "web/exe.a", ["sleep", "30"])
    try:
        assert wait_for(lambda: backend.populated("web"))
        with open(f"/proc/{proc.pid}/cgroup") as f:
            membership = parse_proc_cgroup(f.read())
        expected = f"/{cgroup_root_name}/web/exe.a"
        if backend.mode == "hybrid":
            assert membership[""] == expected
            for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
                line = next(v for k, v in membership.items() if controller in k.split(","))
                assert line == expected, controller
        else:
            assert membership[""].endswith(expected)
        assert backend.pids("web") == [proc.pid]
        assert backend.cgroup_id("web/exe.a") == os.stat(backend.unified_path("web/exe.a")).st_ino
        with pytest.raises(FailedPrecondition):
            backend.remove("web")
    finally:
        reap(proc)
    assert wait_for(lambda: not backend.populated("web"))
    backend.remove("web")
    backend.remove("web")  # idempotent
    assert leftovers(backend, "web") == [] and leftovers(backend, "web/exe.a") == []


@pytest.mark.root
def test_kill_ends_a_process_tree_and_wait_empty_sees_it(backend: CgroupBackend) -> None:
    backend.create("job")
    backend.create("job/exe.tree")
    proc = spawn_in(backend, "job/exe.tree", ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        assert wait_for(lambda: len(backend.pids("job")) == 3)

        async def kill_and_wait() -> tuple[bool, float]:
            start = time.monotonic()
            backend.kill("job")
            empty = await wait_empty(backend, "job", timeout=scaled(5))
            return empty, time.monotonic() - start

        empty, elapsed = asyncio.run(kill_and_wait())
        assert empty
        print(f"kill -> populated 0 in {elapsed * 1000:.2f} ms")
        assert backend.pids("job") == []
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.root
def test_wait_empty_times_out_while_populated(backend: CgroupBackend) -> None:
    backend.create("idle")
    proc = spawn_in(backend, "idle", ["sleep", "30"])
    try:
        assert wait_for(lambda: backend.populated("idle"))
        assert asyncio.run(wait_empty(backend, "idle", timeout=0.2)) is False
    finally:
        reap(proc)
    assert asyncio.run(wait_empty(backend, "idle", timeout=scaled(5))) is True


@pytest.mark.root
def test_freeze_and_thaw_show_in_cgroup_events(backend: CgroupBackend) -> None:
    backend.create("ice")
    proc = spawn_in(backend, "ice", ["sleep", "30"])
    try:
        assert wait_for(lambda: backend.populated("ice"))
        backend.freeze("ice")
        assert wait_for(lambda: backend.frozen("ice"))
        with open(backend.events_path("ice")) as f:
            assert "frozen 1" in f.read()
        with open(f"/proc/{proc.pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
        assert state.split()[1] in ("S", "D")  # v2 freezer parks tasks in the kernel
        backend.thaw("ice")
        assert wait_for(lambda: not backend.frozen("ice"))
    finally:
        reap(proc)


@pytest.mark.root
def test_stats_show_memory_and_cpu_of_a_running_process(backend: CgroupBackend) -> None:
    backend.create("mem")
    backend.create("mem/exe.alloc")
    code = "import sys,time\nb=bytearray(b'\\x01')*(48<<20)\nsum(range(10**6))\nprint('ready',flush=True)\ntime.sleep(30)"
    proc = spawn_in(backend, "mem/exe.alloc", [sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        stats = backend.stats("mem")
        assert stats.memory_current > 40 * MiB, stats
        assert stats.memory_peak >= stats.memory_current
        assert stats.cpu_usage_us > 0 and stats.cpu_user_us > 0
        assert stats.pids_current == 1
        assert stats.oom_kills == 0
        assert stats.pressure is not None
    finally:
        reap(proc)


@pytest.mark.root
def test_memory_hog_is_oom_killed_and_counted(backend: CgroupBackend) -> None:
    backend.create("hog", CellLimits(memory_max=32 * MiB, swap_max=0))
    backend.create("hog/exe.eat")
    code = "b=[]\nwhile True: b.append(bytearray(b'\\x01')*(1<<20))"
    proc = spawn_in(backend, "hog/exe.eat", [sys.executable, "-c", code])
    try:
        proc.wait(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == -signal.SIGKILL
    assert backend.stats("hog").oom_kills >= 1


@pytest.mark.root
def test_pids_max_bounds_a_fork_loop(backend: CgroupBackend, tmp_path: Path) -> None:
    backend.create("bomb", CellLimits(pids_max=5))
    backend.create("bomb/exe.loop")
    # A bounded loop: 30 background forks against a limit of 5 (the shell itself is one). The
    # shell gives up ("Cannot fork") at the limit; the sleeps it did start stay in the cell.
    script = "i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done; wait"
    log = tmp_path / "stderr"
    with open(log, "wb") as stderr:
        proc = spawn_in(
            backend, "bomb/exe.loop", ["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        proc.wait(timeout=20)  # the sleeps keep running; only the shell has to end
        assert b"fork" in log.read_bytes().lower()
        assert 1 <= len(backend.pids("bomb")) <= 5
        assert backend.stats("bomb").pids_current <= 5
        backend.kill("bomb")
        assert asyncio.run(wait_empty(backend, "bomb", timeout=scaled(5)))
    finally:
        reap(proc)


@pytest.mark.root
def test_remove_root_kills_and_removes_everything(backend: CgroupBackend) -> None:
    backend.create("a")
    backend.create("a/exe.x")
    proc = spawn_in(backend, "a/exe.x", ["sleep", "30"])
    assert wait_for(lambda: backend.populated("a"))
    backend.remove_root()
    reap(proc)
    assert not os.path.exists(backend.root)
    assert [p for p in backend._v1_paths("") if os.path.exists(p)] == []
