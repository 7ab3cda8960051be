"""cellar.v1.Cells/Apply (``cellar apply``/``diff``) against a REAL cellard: idempotence, limits in
place, restarts of what changed only, prune, malformed files, and a simulated reboot.

Processes are compared by host pid and run number: "no restart" means the same process is still there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

import grpc
import pytest

from cells.client import RuntimeClient
from proto.cellar.v1 import cells_pb2, types_pb2
from tests.support.api import Api, code_of, running_cellard
from tests.support.cellard import restart
from tests.support.cgroups import pure_v2, unified_dir
from tests.support.cleanup import CGROUP_MOUNT
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root
EXITED, RUNNING = types_pb2.EXECUTABLE_STATE_EXITED, types_pb2.EXECUTABLE_STATE_RUNNING

BASE = """
[cells.web]
limits = { memory_max = "64Mi", pids_max = 100 }

[cells.web.executables.server]
argv = ["sleep", "3600"]
restart = "on-failure"

[cells.web.executables.side]
argv = ["sleep", "3601"]

[cells.web.executables.once]
command = "echo done"

[cells.db]
[cells.db.executables.main]
argv = ["sleep", "3602"]
"""


def apply(api: Api, text: str, prune: bool = False, dry_run: bool = False, name: str = "node.toml") -> list[tuple[str, str, str]]:
    reply = api.cells.Apply(cells_pb2.ApplyRequest(manifest=text, file_name=name, prune=prune, dry_run=dry_run),
                            timeout=scaled(60))
    return [(c.action, c.cell_name, c.executable_name) for c in reply.changes]


def exes(api: Api, cell: str) -> dict[str, Any]:
    return {e.name: e for e in api.inspect(cell).executables}


def wait_exited(api: Api, cell: str, name: str) -> None:
    deadline = time.monotonic() + scaled(10)
    while exes(api, cell)[name].state != EXITED:
        assert time.monotonic() < deadline, exes(api, cell)[name]
        time.sleep(0.05)


def memory_max(api: Api, cell: str) -> int:
    if pure_v2():
        path = os.path.join(unified_dir(api.root, cell), "memory.max")
    else:
        path = os.path.join(CGROUP_MOUNT, "memory", api.root, cell, "memory.limit_in_bytes")
    with open(path) as f:
        return int(f.read())


def test_the_same_file_twice_changes_nothing(api: Api) -> None:
    first = apply(api, BASE)
    assert first == [("create", "db", ""), ("start", "db", "main"), ("create", "web", ""),
                     ("start", "web", "server"), ("start", "web", "side"), ("start", "web", "once")]
    wait_exited(api, "web", "once")
    before = {n: (e.host_pid, e.run) for n, e in exes(api, "web").items()}
    assert apply(api, BASE, dry_run=True) == []
    assert apply(api, BASE) == []
    assert {n: (e.host_pid, e.run) for n, e in exes(api, "web").items()} == before  # the one-shot stays done


def test_a_changed_memory_limit_is_written_in_place(api: Api) -> None:
    apply(api, BASE)
    pid = exes(api, "web")["server"].host_pid
    assert memory_max(api, "web") == 64 * 1024**2
    changed = BASE.replace('memory_max = "64Mi"', 'memory_max = "128Mi"')
    assert apply(api, changed, dry_run=True) == [("update", "web", "")]
    assert memory_max(api, "web") == 64 * 1024**2  # a dry run changes nothing
    assert apply(api, changed) == [("update", "web", "")]
    assert memory_max(api, "web") == 128 * 1024**2
    assert exes(api, "web")["server"].host_pid == pid
    assert api.inspect("web").cell.memory_max == 128 * 1024**2
    assert apply(api, changed) == []


def test_a_changed_argv_restarts_only_that_executable(api: Api) -> None:
    apply(api, BASE)
    before, db_pid = exes(api, "web"), exes(api, "db")["main"].host_pid
    changed = BASE.replace('argv = ["sleep", "3601"]', 'argv = ["sleep", "3611"]')
    reply = api.cells.Apply(cells_pb2.ApplyRequest(manifest=changed, file_name="node.toml"), timeout=scaled(60))
    assert [(c.action, c.cell_name, c.executable_name, c.detail) for c in reply.changes] == [
        ("restart", "web", "side", "changed: argv")]
    after = exes(api, "web")
    assert after["side"].host_pid != before["side"].host_pid and after["side"].run == before["side"].run + 1
    assert list(after["side"].argv) == ["sleep", "3611"]
    assert after["server"].host_pid == before["server"].host_pid
    assert exes(api, "db")["main"].host_pid == db_pid


def test_an_executable_dropped_from_the_file_is_stopped(api: Api) -> None:
    apply(api, BASE)
    dropped = BASE.replace('[cells.web.executables.side]\nargv = ["sleep", "3601"]\n', "")
    assert apply(api, dropped) == [("stop", "web", "side")]
    assert exes(api, "web")["side"].state == EXITED


def test_a_changed_isolation_recreates_the_cell(api: Api) -> None:
    apply(api, BASE)
    pid = exes(api, "db")["main"].host_pid
    changed = BASE.replace("[cells.db]\n", "[cells.db]\nisolate_process = true\n")
    assert apply(api, changed) == [("recreate", "db", ""), ("start", "db", "main")]
    info = api.inspect("db")
    assert info.isolate_process and info.executables[0].host_pid != pid


def test_prune_frees_only_applied_cells_the_file_no_longer_names(api: Api) -> None:
    apply(api, BASE)
    api.allocate("imperative")
    only_web = BASE.split("[cells.db]")[0]
    assert apply(api, only_web) == []  # without --prune nothing goes
    assert apply(api, only_web, prune=True, dry_run=True) == [("free", "db", "")]
    assert "db" in {c.name for c in api.list()}
    assert apply(api, only_web, prune=True) == [("free", "db", "")]
    assert {c.name for c in api.list()} == {"web", "imperative"}
    assert apply(api, only_web, prune=True) == []


def test_a_malformed_file_gets_one_error_with_file_line_and_key_and_changes_nothing(api: Api) -> None:
    apply(api, BASE)
    before = {c.name: [(e.name, e.host_pid, e.run) for e in c.executables] for c in api.list()}
    bad = BASE.replace("pids_max = 100", "pids_max = 100, memory_hgih = 5")
    with pytest.raises(grpc.RpcError) as info:
        apply(api, bad)
    assert code_of(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("node.toml:3: cells.web.limits.memory_hgih: is not a known key")
    broken = BASE.replace('argv = ["sleep", "3600"]', 'argv = ["sleep", "3600"')
    with pytest.raises(grpc.RpcError) as info:
        apply(api, broken)
    assert code_of(info.value) == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith("node.toml:7")
    assert {c.name: [(e.name, e.host_pid, e.run) for e in c.executables] for c in api.list()} == before


def test_a_failing_cell_is_put_back_and_named(api: Api) -> None:
    """The second cell's executable cannot start (no such program): that cell is removed again, the
    first stays applied, and the error names the cell."""
    text = BASE.split("[cells.db]")[0] + '[cells.zz]\n[cells.zz.executables.x]\nargv = ["/nonexistent/prog"]\n'
    with pytest.raises(grpc.RpcError) as info:
        apply(api, text)
    assert "cell 'zz'" in info.value.details(), info.value.details()
    assert {c.name for c in api.list()} == {"web"}


def test_get_prints_the_applied_manifest_and_applying_it_changes_nothing(api: Api) -> None:
    apply(api, BASE)
    reply = api.cells.GetManifest(cells_pb2.GetManifestRequest(cell_name="web"), timeout=scaled(30))
    assert reply.applied
    assert 'memory_max = 67108864' in reply.manifest and 'mode = "on-failure"' in reply.manifest
    assert apply(api, reply.manifest) == []
    api.allocate("plain")
    api.start("plain", "p", "sleep", "3600")
    reply = api.cells.GetManifest(cells_pb2.GetManifestRequest(cell_name="plain"), timeout=scaled(30))
    assert not reply.applied and 'argv = [\n    "sleep",\n    "3600",\n]' in reply.manifest


def test_a_simulated_reboot_brings_back_applied_cells_and_their_restartable_executables() -> None:
    """shutdown-runtime (workloads killed, cgroups removed), the run dir removed, cellard started: the
    applied cells and those allocated with persist are back; executables with a restart policy run again
    (fresh runs), one-offs and executables stopped by hand do not; imperative cells stay gone."""
    with running_cellard() as daemon:
        channel = daemon.channel()
        api = Api(daemon, channel)
        try:
            apply(api, BASE)
            old = exes(api, "web")["server"].host_pid
            api.allocate("kept", persist=True)
            always = types_pb2.RestartPolicy(mode=types_pb2.RESTART_MODE_ALWAYS)
            api.start("kept", "k", "sleep", "3600", restart=always)
            api.start("kept", "stopped", "sleep", "3600", restart=always)
            api.stop("kept", "stopped")
            api.start("kept", "plain", "sleep", "3600")
            api.allocate("imperative")
            api.start("imperative", "i", "sleep", "3600", restart=always)
            daemon.stop()
            runtime_config = daemon.runtime_config()

            async def shutdown() -> None:
                client = await RuntimeClient.connect(runtime_config, start=False)
                await client.shutdown_supervisor(kill_workloads=True)

            asyncio.run(shutdown())
            shutil.rmtree(daemon.run_dir)
            assert not os.path.exists(unified_dir(api.root, "web"))
            restart(daemon)
            channel.close()
            channel = api.channel = daemon.channel()
            api = Api(daemon, channel)
            assert {c.name for c in api.list()} == {"web", "db", "kept"}  # not the imperative cell
            assert set(exes(api, "kept")) == {"k"} and exes(api, "kept")["k"].state == RUNNING
            web = exes(api, "web")
            assert set(web) == {"server"}  # restart = on-failure; side and once had none
            assert web["server"].state == RUNNING and web["server"].host_pid != old
            assert exes(api, "db") == {}
            assert apply(api, BASE) == [("start", "db", "main"), ("start", "web", "side"), ("start", "web", "once")]
        finally:
            channel.close()
