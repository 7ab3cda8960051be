"""agent.auth.grants and agent.auth.privilege without a daemon: the cell cache fails closed, and the rules.

The cache (CellPolicies) is fed by a fake runtime whose answers the tests control, and a fake clock;
what it must never do is answer "granted" for a cell the supervisor does not know, for a cell freed
since, or lose an edit that raced a reload. The whole path against a real cellard is in
tests/security/test_main_socket.py and test_privilege.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from agent.auth.grants import CellPolicies, MainSocketGate, Placement
from agent.auth.identity import CgroupResolver
from agent.auth.privilege import (
    PrivilegeDenied,
    beyond_default,
    cell_admin_only,
    check_cell,
    check_executable,
    under,
)
from agent.auth.unixpeer import PeerCred
from cells.spec import CellSpec, ExecutableSpec, Mount
from cells.state import CellInfo, CellState


def info(name: str, cgroup: str = "", **spec: Any) -> CellInfo:
    return CellInfo(name=name, state=CellState.ACTIVE, cgroup_path=cgroup, cgroup_v2_limits=True,
                    spec={"name": name, **spec})


class FakeRuntime:
    def __init__(self, cells: list[CellInfo]) -> None:
        self.cells = cells
        self.lists = 0
        self.gate: asyncio.Event | None = None  # set: list() waits for it (a slow supervisor)

    async def list(self, prefix: str = "", stats: bool = False) -> list[CellInfo]:
        self.lists += 1
        snapshot = list(self.cells)
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cgroup(tmp_path: Any) -> str:
    """A directory that stands for a cell's cgroup (its inode is what the cache remembers)."""
    path = tmp_path / "cell"
    path.mkdir()
    return str(path)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_granted_cell_and_its_descendants_get_the_nearest_grant(cgroup: str) -> None:
    rt = FakeRuntime([info("ctl", cgroup, grant_role="operator"), info("ctl/a", cgroup),
                      info("ctl/b", cgroup, grant_role="observer"), info("other", cgroup)])
    policies = CellPolicies(rt, "/v", clock=Clock())

    async def body() -> None:
        assert await policies.grant("ctl") == ("ctl", "operator")
        assert await policies.grant("ctl/a") == ("ctl", "operator")
        assert await policies.grant("ctl/b") == ("ctl/b", "observer")
        assert await policies.grant("other") is None
        assert await policies.grant("nowhere") is None  # unknown: denied
        assert await policies.grant("ctl/nowhere") is None  # unknown even below a granted cell

    run(body())


def test_unknown_cells_reload_at_most_every_quarter_second(cgroup: str) -> None:
    rt = FakeRuntime([info("a", cgroup)])
    clock = Clock()
    policies = CellPolicies(rt, "/v", clock=clock)

    async def body() -> None:
        for _ in range(50):
            assert await policies.grant("stray") is None
        assert rt.lists == 1
        clock.now += 0.3
        assert await policies.grant("stray") is None
        assert rt.lists == 2
        rt.cells.append(info("late", cgroup, grant_role="admin"))
        clock.now += 0.3
        assert await policies.grant("late") == ("late", "admin")  # a new cell is found by the reload

    run(body())


def test_a_grant_whose_cgroup_is_not_the_one_learned_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "g"
    path.mkdir()
    rt = FakeRuntime([info("g", str(path), grant_role="admin")])
    policies = CellPolicies(rt, "/v", clock=Clock())

    async def body() -> None:
        assert await policies.grant("g") == ("g", "admin")
        os.rmdir(path)  # freed and made again behind the cache's back (same name, another directory)
        (tmp_path / "filler").mkdir()  # so the new directory gets another inode
        path.mkdir()
        rt.cells = [info("g", str(path))]  # ... without a grant this time
        assert await policies.grant("g") is None

    run(body())


def test_free_and_allocate_edit_the_cache_at_once(cgroup: str) -> None:
    rt = FakeRuntime([info("g", cgroup, grant_role="admin"), info("g/sub", cgroup)])
    policies = CellPolicies(rt, "/v", clock=Clock())

    async def body() -> None:
        assert await policies.grant("g/sub") == ("g", "admin")
        policies.freed("g")
        assert await policies.admin_only("g") is None
        assert await policies.grant("g/sub") is None  # no TTL wait: gone with its parent
        policies.allocated(info("g", cgroup, privileged=True))
        assert await policies.admin_only("g/x") == ("g", "privileged")

    run(body())


def test_an_edit_during_a_reload_survives_it(cgroup: str) -> None:
    rt = FakeRuntime([info("old", cgroup, grant_role="admin")])
    policies = CellPolicies(rt, "/v", clock=Clock())

    async def body() -> None:
        rt.gate = asyncio.Event()
        reload = asyncio.create_task(policies.reload())
        await asyncio.sleep(0)  # the reload has its (stale) snapshot and waits
        policies.freed("old")
        policies.allocated(info("new", cgroup, grant_role="observer"))
        rt.gate.set()
        await reload
        rt.gate = None
        assert await policies.grant("old") is None
        assert await policies.grant("new") == ("new", "observer")

    run(body())


def test_an_admin_only_allocate_counts_before_it_exists() -> None:
    policies = CellPolicies(FakeRuntime([]), "/v", clock=Clock())

    async def body() -> None:
        with policies.allocating("p", admin_only=True):
            assert await policies.admin_only("p") == ("p", "being allocated with admin-only settings")
            assert await policies.admin_only("p/child") is not None
        assert await policies.admin_only("p") is None
        with policies.allocating("q", admin_only=False):
            assert await policies.admin_only("q") is None

    run(body())


def test_admin_only_names_every_reason(tmp_path: Any) -> None:
    vol = str(tmp_path / "volumes")
    os.makedirs(vol + "/ok")
    assert cell_admin_only({"name": "x"}, vol) == []
    assert cell_admin_only({"cap_drop": ["ALL"], "cap_add": ["CHOWN"], "mounts": [{"source": vol + "/ok"}],
                            "rootfs": vol + "/ok"}, vol) == []
    assert cell_admin_only({"privileged": True, "grant_role": "observer", "cap_add": ["BPF"],
                            "mounts": [{"source": "/etc"}], "rootfs": "/"}, vol) == [
        "privileged", "granted role observer", "cap_add BPF", "mounts host paths", "rootfs outside the volumes directory"]


def test_the_volumes_rule(tmp_path: Any) -> None:
    vol = tmp_path / "volumes"
    (vol / "data").mkdir(parents=True)
    (vol / "out").symlink_to("/etc")
    assert under(str(vol / "data"), str(vol))
    assert under(str(vol / "not-yet"), str(vol))
    assert not under(str(vol), str(vol))  # the directory itself holds everybody's volumes
    assert not under(str(vol / "out"), str(vol))  # a symlink out of it
    assert not under(str(vol / "out" / "passwd"), str(vol))
    assert not under(str(vol) + "-sibling", str(vol))
    assert not under("/etc", str(vol))


def test_request_rules_by_role(tmp_path: Any) -> None:
    vol = str(tmp_path)
    assert beyond_default(["CHOWN", "SYS_ADMIN", "ALL"]) == ["SYS_ADMIN", "ALL"]
    for spec in (CellSpec("c", privileged=True), CellSpec("c", grant_role="observer"),
                 CellSpec("c", cap_add=("SYS_ADMIN",)),
                 CellSpec("c", isolate_process=True, mounts=(Mount("/etc", "/mnt"),)),
                 CellSpec("c", isolate_process=True, rootfs="/")):
        for role in ("operator", "observer", None):
            with pytest.raises(PrivilegeDenied):
                check_cell(spec.validate(), role, vol)
        check_cell(spec.validate(), "admin", vol)
    check_cell(CellSpec("c", cap_drop=("ALL",), cap_add=("NET_BIND_SERVICE",)).validate(), "operator", vol)
    with pytest.raises(PrivilegeDenied, match=r"^executable.privileged: .* caller has role operator$"):
        check_executable(ExecutableSpec("c", "e", argv=("true",), privileged=True).validate(), "operator")
    with pytest.raises(PrivilegeDenied, match=r"^executable.cap_add: SYS_PTRACE "):
        check_executable(ExecutableSpec("c", "e", argv=("true",), cap_add=("sys_ptrace",)).validate(), "operator")
    check_executable(ExecutableSpec("c", "e", argv=("true",), cap_drop=("ALL",)).validate(), "operator")


# ---------------------------------------------------------------- the gate's placement


def test_a_process_outside_the_tree_is_the_host(tmp_path: Any) -> None:
    gate = MainSocketGate(CgroupResolver(str(tmp_path / "not-a-cgroup-root")), CellPolicies(FakeRuntime([]), "/v"))
    a, b = socket.socketpair()
    with a, b:
        assert gate.place(os.getpid(), a) == Placement(None)
        cred = PeerCred(os.getpid(), os.getuid(), os.getgid())
        gate.bind("unix:k", a, cred)
        verdict = asyncio.run(gate.decide("unix:k", cred))
        assert verdict.cell is None


def test_a_process_that_is_gone_is_an_unknown_workload(tmp_path: Any) -> None:
    import subprocess

    gate = MainSocketGate(CgroupResolver(str(tmp_path)), CellPolicies(FakeRuntime([]), "/v"))
    proc = subprocess.Popen(["true"])
    proc.wait()
    placed = gate.place(proc.pid)
    assert not placed.known
    verdict = asyncio.run(gate.decide("unix:gone", PeerCred(proc.pid, 0, 0)))
    assert verdict.cell is not None and verdict.role is None
