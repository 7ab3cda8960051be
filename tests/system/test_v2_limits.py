"""On a pure cgroup v2 host, a cell's limits land in the v2 files of its own cgroup.

Runs everywhere, but only means something on a pure v2 host (all controllers on ``/sys/fs/cgroup``):
``packaging/v2vm/run-tests.sh`` boots one. On hybrid hosts (the CI machine itself) it skips with
the reason; with ``CELLAR_EXPECT_CGROUP=v2`` (set by the VM runner) a non-v2 host is a failure,
so a VM that silently came up hybrid cannot turn the whole v2 run into skips.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proto.cellar.v1 import cells_pb2
from tests.support.api import Api, running_cellard
from tests.support.cgroups import pure_v2
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def v2_api() -> Iterator[Api]:
    if not pure_v2():
        if os.environ.get("CELLAR_EXPECT_CGROUP") == "v2":
            pytest.fail("CELLAR_EXPECT_CGROUP=v2 but /sys/fs/cgroup is not a cgroup2 mount")
        pytest.skip("hybrid/legacy cgroup host: limits live in v1 files (tests/agent/runtime covers them); "
                    "run packaging/v2vm/run-tests.sh for the pure v2 path")
    with running_cellard() as daemon:
        channel = daemon.channel()
        try:
            yield Api(daemon, channel)
        finally:
            channel.close()


def read(cgroup: str, name: str) -> str:
    with open(os.path.join(cgroup, name)) as f:
        return f.read().strip()


def test_limits_are_read_back_from_v2_files(v2_api: Api) -> None:
    info = v2_api.cells.Info(cells_pb2.InfoRequest(), timeout=scaled(10))
    assert info.cgroup_mode == "v2" and info.cgroup_v2_limits is True
    root = info.cgroup_root
    assert root.startswith("/sys/fs/cgroup/") and root.endswith(v2_api.root), root

    reply = v2_api.allocate("lim", cpu_weight=500, cpu_max_quota_us=50_000, cpu_max_period_us=100_000,
                            memory_max=64 * 1024**2, memory_high=48 * 1024**2, memory_low=8 * 1024**2,
                            pids_max=50, cpuset_cpus="0")
    assert reply.cgroup_v2 is True
    cell = os.path.join(root, "lim")
    assert read(cell, "cpu.weight") == "500"
    assert read(cell, "cpu.max") == "50000 100000"
    assert read(cell, "memory.max") == str(64 * 1024**2)
    assert read(cell, "memory.high") == str(48 * 1024**2)
    assert read(cell, "memory.low") == str(8 * 1024**2)
    assert read(cell, "pids.max") == "50"
    assert read(cell, "cpuset.cpus") == "0"
    # Nothing leaked into v1 hierarchies: on a pure v2 host there are none.
    assert not os.path.isdir("/sys/fs/cgroup/unified")

    # The seed's cpu_shares becomes a weight once (runc's linear map): 2048 shares -> 79.
    v2_api.allocate("lim/shares", cpu_shares=2048)
    assert read(os.path.join(cell, "shares"), "cpu.weight") == "79"

    # A workload runs in the cell's leaf and is charged there.
    started = v2_api.start("lim", "w", "/bin/sh", "-c", "head -c 4000000 /dev/zero | tail -c 1 >/dev/null; sleep 3600")
    pid = started.host_pid
    with open(f"/proc/{pid}/cgroup") as f:
        own = f.read().strip()
    assert own.startswith("0::") and own.endswith("/lim/exe.w"), own
    deadline = time.monotonic() + scaled(10)
    while int(read(os.path.join(cell, "exe.w"), "pids.current")) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(read(cell, "pids.current")) >= 1
    assert int(read(cell, "memory.current")) > 0
    stats: Any = v2_api.inspect("lim")
    assert stats.cell.pids_max == 50
    v2_api.free("lim/shares")
    v2_api.free("lim")
    assert not os.path.isdir(cell)


def test_memory_max_too_small_for_the_holder_is_resource_exhausted(v2_api: Api) -> None:
    """v2 charges a child cgroup's creation to the parent: memory.max=0 makes the holder's mkdir ENOMEM."""
    with pytest.raises(grpc.RpcError) as err:
        v2_api.allocate("tight", memory_max=0, isolate_process=True)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value  # type: ignore[attr-defined]
    assert "memory limit" in str(err.value.details())  # type: ignore[attr-defined]
    assert v2_api.list() == [] and v2_api.cgroup_dirs() == []
