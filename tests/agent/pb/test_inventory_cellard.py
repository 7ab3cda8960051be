"""Inventory, dispatchers and the in-cellard saver through a REAL cellard."""

from __future__ import annotations

import os
import socket
import time

import grpc
import pytest

from agent.auth import pki as pki_lib
from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import (
    common_pb2,
    dispatcherFunction_pb2,
    dispatcherFunction_pb2_grpc,
    dispatcherServer_pb2,
    dispatcherServer_pb2_grpc,
    workerServer_pb2,
    workerServer_pb2_grpc,
)

pytestmark = pytest.mark.root

LISTEN = "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 7411)); s.listen(); print('up', flush=True); time.sleep(600)"


def test_listener_in_a_cell_is_attributed_to_cell_and_executable(cellard_factory):
    daemon = cellard_factory()
    with daemon.channel() as ch:
        rt = runtime_pb2_grpc.CellServiceStub(ch)
        rt.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="web", isolate_network=True)), timeout=30)
        rt.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
            cell_name="web", name="srv", argv=["python3", "-c", LISTEN])), timeout=30)
        inv = inventory_pb2_grpc.InventoryStub(ch)
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline and not found:
            machine = inv.Get(inventory_pb2.GetInventoryRequest(), timeout=10).machine
            found = [(i, a, p) for i in machine.ifaces for a in i.address for p in a.ports if p.port == 7411]
            time.sleep(0.2)
        assert found, machine
        netns = daemon.config["cells"]["netns_prefix"] + "web"
        for iface, addr, port in found:
            assert iface.netns == netns and iface.name == f"{netns}/lo" and addr.ip == "127.0.0.1"
            assert (port.cell, port.executable, port.service, port.protocol) == ("web", "srv", "web/exe.srv", "tcp")
            assert port.pid > 0
        assert machine.uuid
        # cellar's extension fields: host facts and a summary of every cell
        assert machine.hostname == socket.gethostname() and machine.kernel == os.uname().release
        assert machine.cpus == os.cpu_count() and machine.memory_bytes > 0 and machine.cellar_version
        assert machine.cgroup_mode in ("v2", "hybrid")
        (cell,) = [c for c in machine.cells if c.name == "web"]
        (exe,) = cell.executables
        assert (cell.state, exe.name, exe.state) == ("active", "srv", "running")
        assert exe.pid == found[0][2].pid
        assert not machine.HasField("usage")  # usage is sampled when a report is sent, never compared
        rt.Free(runtime_pb2.FreeCellRequest(cell_name="web"), timeout=30)


def test_saver_in_cellard_and_pb_checks(cellard_factory):
    daemon = cellard_factory({"saver": {"enabled": True}})
    with daemon.channel() as ch:
        saver = workerServer_pb2_grpc.WorkerSaverStub(ch)
        assert saver.Check(common_pb2.HealthCheckReq(), timeout=5).status == common_pb2.HealthCheckRes.SERVING
        m = inventory_pb2_grpc.InventoryStub(ch).Get(inventory_pb2.GetInventoryRequest(), timeout=10).machine
        reply = saver.SaveMachine(workerServer_pb2.SaveMachineReq(machine=m), timeout=10)
        assert reply.status == workerServer_pb2.SaveMachineRes.ACCEPTED
        listed = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(), timeout=5).machines
        assert [x.uuid for x in listed] == [m.uuid]
        bad, call = saver.SaveMachine.with_call(workerServer_pb2.SaveMachineReq(machine=workerServer_pb2.Machine()),
                                                timeout=5)
        assert bad.status == workerServer_pb2.SaveMachineRes.NOT_ACCEPTED
        assert "uuid" in dict(call.trailing_metadata())["reason"]


def test_dispatchers(cellard_factory, tmp_path):
    daemon = cellard_factory()
    pki_lib.init_ca(str(tmp_path))
    pki_lib.issue(str(tmp_path), "server", "fn-server", sans=("127.0.0.1",))
    cert = (tmp_path / "fn-server.pem").read_bytes()
    with daemon.channel() as ch:
        servers = dispatcherServer_pb2_grpc.ServerDispatcherStub(ch)
        functions = dispatcherFunction_pb2_grpc.FunctionDispatcherStub(ch)
        assert servers.Check(common_pb2.HealthCheckReq(), timeout=5).status == common_pb2.HealthCheckRes.SERVING
        # no server yet: the function dispatcher cannot serve, GetTarget is NOT_FOUND
        assert functions.Check(common_pb2.HealthCheckReq(), timeout=5).status == common_pb2.HealthCheckRes.NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            functions.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=b"f1"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        bad = servers.Register(dispatcherServer_pb2.RegisterReq(certificate=b"not a cert"), timeout=5)
        assert bad.status == dispatcherServer_pb2.RegisterRes.NOT_REGISTERED
        ok = servers.Register(dispatcherServer_pb2.RegisterReq(certificate=cert), timeout=5)
        assert ok.status == dispatcherServer_pb2.RegisterRes.REGISTERED
        ip = "127.0.0.1"  # a Unix-socket peer is this node
        res = dispatcherServer_pb2.GetNextServerRes
        assert servers.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip=ip, certificate=cert), timeout=5).status == res.ACCEPTED
        assert servers.GetNextServer(dispatcherServer_pb2.GetNextServerReq(ip="192.0.2.9"), timeout=5).status == res.NOT_ACCEPTED
        target = functions.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=b"f1"), timeout=5)
        assert (target.ip, target.certificate) == (ip, cert)
        assert functions.Check(common_pb2.HealthCheckReq(), timeout=5).status == common_pb2.HealthCheckRes.SERVING
        with pytest.raises(grpc.RpcError) as err:
            functions.GetTarget(dispatcherFunction_pb2.GetTargetReq(uuid=b""), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = inventory_pb2_grpc.DispatchStub(ch).List(inventory_pb2.ListDispatchRequest(), timeout=5).servers
        assert [(s.ip, s.healthy, s.functions) for s in listed] == [(ip, True, 1)]
        assert "fn-server" in listed[0].subject


def test_cli_inventory_machines_dispatch(cellard_factory):
    import json
    import subprocess
    import sys

    daemon = cellard_factory({"saver": {"enabled": True}})

    def cellar(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "agent.cli", "--addr", daemon.socket, *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    data = json.loads(cellar("-o", "json", "inventory"))
    uuid = data["machine"]["uuid"]
    assert any(i["name"] == "lo" for i in data["machine"]["ifaces"])
    assert "IFACE" in cellar("inventory")
    with daemon.channel() as ch:
        m = inventory_pb2_grpc.InventoryStub(ch).Get(inventory_pb2.GetInventoryRequest(), timeout=10).machine
        workerServer_pb2_grpc.WorkerSaverStub(ch).SaveMachine(workerServer_pb2.SaveMachineReq(machine=m), timeout=10)
    assert [x["uuid"] for x in json.loads(cellar("-o", "json", "machines", "ls"))] == [uuid]
    assert uuid in cellar("machines", "show", uuid)
    assert json.loads(cellar("-o", "json", "dispatch", "ls")) == []
