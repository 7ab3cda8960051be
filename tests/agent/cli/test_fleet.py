"""``cellar fleet ls|ps``, ``--node`` and named contexts against two REAL cellards reporting to one
REAL cellar-saver (one saver, two daemons for the module)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import workerServer_pb2 as pb
from proto.pb import workerServer_pb2_grpc
from tests.agent.pb.conftest import Saver, free_port
from tests.support import REPO
from tests.support.cellard import Cellard, start_cellard, teardown
from tests.support.cli import CELLAR, cli_env
from tests.support.timeouts import scaled, wait_for

pytestmark = pytest.mark.root


@dataclass
class Fleet:
    saver: Saver
    nodes: dict[str, Cellard]
    tcp: dict[str, str]
    home: Path


def run(fleet: Fleet, *args: str, ok: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**cli_env(), "CELLAR_INSECURE_TCP_DEV": "1", "CELLAR_CONFIG": str(fleet.home / "config.toml"),
            **(env or {})}
    proc = subprocess.run([*CELLAR, *args], capture_output=True, text=True, timeout=scaled(60), env=full, cwd=REPO,
                          stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def run_json(fleet: Fleet, *args: str, **kw: Any) -> Any:
    return json.loads(run(fleet, "-o", "json", *args, **kw).stdout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    saver = Saver(str(tmp / "saver.sqlite"), free_port(), tmp / "saver.log").start()
    nodes: dict[str, Cellard] = {}
    tcp: dict[str, str] = {}
    try:
        specs = (("node-a", "alpha", ["sleep", "600"]), ("node-b", "beta", ["sh", "-c", "exit 3"]))
        for name, _, _ in specs:  # both start at once, then each is waited for
            tcp[name] = f"127.0.0.1:{free_port()}"
            nodes[name] = start_cellard({
                "server": {"tcp_listen": tcp[name], "insecure_tcp_dev": True},
                "reporter": {"savers": [saver.address], "insecure": True, "poll_s": 0.5, "hostname": name,
                             "machine_id": f"{name}-{free_port()}"}}, wait=False)
        for name, cell, argv in specs:
            nodes[name].wait_serving()
            with nodes[name].channel() as ch:
                rt = runtime_pb2_grpc.CellServiceStub(ch)
                rt.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name=cell)), timeout=30)
                rt.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
                    cell_name=cell, name="main", argv=argv)), timeout=30)
        yield Fleet(saver, nodes, tcp, tmp)
    finally:
        for daemon in nodes.values():
            teardown(daemon)
        saver.stop()


def _ps(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    return run_json(fleet, "--saver", fleet.saver.address, "fleet", "ps", *args)  # type: ignore[no-any-return]


def _reported(fleet: Fleet) -> None:
    """Both nodes' cells in the saver (read over gRPC: polling through the CLI would cost a process a try)."""
    def ready() -> bool:
        with fleet.saver.channel() as ch:
            machines = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(full=True),
                                                                timeout=5).machines
        states = {(m.hostname, c.name, e.name): e.state for m in machines for c in m.machine.cells
                  for e in c.executables}
        return states.get(("node-a", "alpha", "main")) == "running" and \
            states.get(("node-b", "beta", "main")) == "exited"

    wait_for(ready, "both nodes' cells in the saver", timeout=60)


def test_fleet_ls_and_ps_show_both_nodes_from_the_saver(fleet: Fleet) -> None:
    _reported(fleet)
    rows = _ps(fleet)
    assert [(r["machine"], r["cell"], r["executable"], r["state"]) for r in rows] == [
        ("node-a", "alpha", "main", "running"), ("node-b", "beta", "main", "exited")]
    assert rows[0]["pid"] > 0 and (rows[1]["exit"], rows[1]["pid"]) == ("code 3", None)
    listed = run_json(fleet, "--saver", fleet.saver.address, "fleet", "ls")
    by_host = {r["hostname"]: r for r in listed if r["uuid"] != "liar-1"}  # (the liar test may run first)
    assert set(by_host) == {"node-a", "node-b"}
    for name, row in by_host.items():
        assert (row["address"], row["state"], row["cells"], row["executables"]) == (fleet.tcp[name], "online", 1, 1)
    assert [r["cell"] for r in _ps(fleet, "--machine", "node-b")] == ["beta"]
    assert [r["machine"] for r in _ps(fleet, "--state", "running")] == ["node-a"]
    table = run(fleet, "--saver", fleet.saver.address, "fleet", "ls").stdout
    assert table.splitlines()[0].split()[:3] == ["HOSTNAME", "UUID", "ADDRESS"]
    as_yaml = yaml.safe_load(run(fleet, "--saver", fleet.saver.address, "fleet", "ls", "-o", "yaml").stdout)
    assert {r["uuid"] for r in as_yaml} == {r["uuid"] for r in listed}  # -o yaml: the data of -o json, not the table's ages
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["last_seen"]) for r in as_yaml), as_yaml


def test_node_flag_reaches_the_node_through_the_saver(fleet: Fleet) -> None:
    _reported(fleet)
    cells = run_json(fleet, "--saver", fleet.saver.address, "--node", "node-b", "ps", "-a")
    assert {c.get("cell") or c.get("cell_name") for c in cells} == {"beta"}, cells
    unknown = run(fleet, "--saver", fleet.saver.address, "--node", "node-z", "ps", ok=False)
    assert unknown.returncode == 2 and "node-z" in unknown.stderr
    no_saver = run(fleet, "--node", "node-a", "ps", ok=False)
    assert no_saver.returncode == 2 and "--saver" in no_saver.stderr


def test_node_refuses_a_hostname_two_machines_claim(fleet: Fleet) -> None:
    """A machine that lies about its hostname cannot capture `--node`: the name is ambiguous, refused."""
    liar = pb.Machine(uuid="liar-1", hostname="node-a", api_address=f"127.0.0.1:{free_port()}")
    with fleet.saver.channel() as ch:
        reply = workerServer_pb2_grpc.WorkerSaverStub(ch).SaveMachine(pb.SaveMachineReq(machine=liar), timeout=5)
    assert reply.status == pb.SaveMachineRes.ACCEPTED
    proc = run(fleet, "--saver", fleet.saver.address, "--node", "node-a", "ps", ok=False)
    assert proc.returncode == 2 and "liar-1" in proc.stderr and "uuid" in proc.stderr


def test_contexts_choose_the_saver_and_address(fleet: Fleet) -> None:
    _reported(fleet)
    config = fleet.home / "config.toml"
    config.write_text(
        f'[contexts.prod]\nsaver = "{fleet.saver.address}"\naddr = "/nonexistent/cellar.sock"\n'
        f'[contexts.empty]\naddr = "/nonexistent/cellar.sock"\n')
    config.chmod(0o600)
    assert "prod" in run(fleet, "config", "use-context", "prod").stdout
    assert "current-context = \"prod\"" in config.read_text() and config.stat().st_mode & 0o777 == 0o600
    assert run(fleet, "config", "current-context").stdout.strip() == "prod"
    contexts = run_json(fleet, "config", "get-contexts")
    assert [(c["current"], c["name"]) for c in contexts] == [("", "empty"), ("*", "prod")]
    assert {r["hostname"] for r in run_json(fleet, "fleet", "ls")} >= {"node-a", "node-b"}  # the context's saver
    cells = run_json(fleet, "--node", "node-b", "ps", "-a")  # the saver from the context, the node from it
    assert {c.get("cell") or c.get("cell_name") for c in cells} == {"beta"}
    for bad in (["--context", "nope", "ps"], ["config", "use-context", "nope"]):
        proc = run(fleet, *bad, ok=False)
        assert proc.returncode == 2 and "nope" in proc.stderr, proc.stderr
    assert "current-context = \"prod\"" in config.read_text()
