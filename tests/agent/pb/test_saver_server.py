"""The worker saver as a real ``cellar-saver`` process, on SQLite and on a real PostgreSQL.

Every test runs against both backends (the ``database`` fixture is parametrized), so they provably
behave the same.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pb.saver.store import TooManyMachines, open_store
from agent.pb.saver.validation import InvalidReport, validate_machine
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc
from proto.pb import common_pb2, workerServer_pb2, workerServer_pb2_grpc

pb = workerServer_pb2


def machine(uuid: str = "m-1", port: int = 22, ip: str = "192.0.2.1") -> pb.Machine:
    return pb.Machine(uuid=uuid, ifaces=[
        pb.Iface(name="eth0", state="UP", address=[
            pb.Address(ip=ip, ports=[pb.Port(port=port, service="sshd", protocol="tcp", pid=42)]),
            pb.Address(ip="fd00::1"),
        ]),
        pb.Iface(name="lo", address=[pb.Address(ip="127.0.0.1", ports=[pb.Port(port=53, protocol="udp")])]),
    ])


def save(channel: grpc.Channel, m: pb.Machine) -> tuple[int, dict[str, str]]:
    stub = workerServer_pb2_grpc.WorkerSaverStub(channel)
    reply, call = stub.SaveMachine.with_call(pb.SaveMachineReq(machine=m), timeout=10)
    return reply.status, dict(call.trailing_metadata() or ())


def test_report_is_stored_listed_and_shown(saver_factory, database):
    saver = saver_factory(database, "--history", "3")
    with saver.channel() as ch:
        assert workerServer_pb2_grpc.WorkerSaverStub(ch).Check(common_pb2.HealthCheckReq(), timeout=5).status == \
            common_pb2.HealthCheckRes.SERVING
        for port in (22, 23, 24, 25, 26):
            assert save(ch, machine(port=port))[0] == pb.SaveMachineRes.ACCEPTED
        assert save(ch, machine("m-2"))[0] == pb.SaveMachineRes.ACCEPTED
        machines = inventory_pb2_grpc.MachinesStub(ch)
        listed = {m.uuid: m for m in machines.List(inventory_pb2.ListMachinesRequest(), timeout=5).machines}
        assert set(listed) == {"m-1", "m-2"}
        assert listed["m-1"].ports == 2 and listed["m-1"].ifaces == 2 and listed["m-1"].addresses == 3
        assert listed["m-1"].reports == 3  # bounded history
        assert listed["m-1"].peer.startswith("ipv4:127.0.0.1:")
        shown = machines.Show(inventory_pb2.ShowMachineRequest(uuid="m-1", history=10), timeout=5)
        assert shown.latest.machine == machine(port=26)  # stored losslessly, extension fields included
        assert [r.machine.ifaces[0].address[0].ports[0].port for r in shown.history] == [25, 24]
        with pytest.raises(grpc.RpcError) as err:
            machines.Show(inventory_pb2.ShowMachineRequest(uuid="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            machines.Show(inventory_pb2.ShowMachineRequest(uuid=""), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


BAD = [
    (pb.Machine(), "machine.uuid"),
    (pb.Machine(uuid="a b"), "machine.uuid"),
    (pb.Machine(uuid="x" * 129), "machine.uuid"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="")]), "ifaces[0].name"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e\n")]), "ifaces[0].name"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e", address=[pb.Address(ip="300.1.1.1")])]), "address[0].ip"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e", address=[pb.Address(ip="")])]), "address[0].ip"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e", address=[pb.Address(ip="::1", ports=[pb.Port(port=0)])])]),
     "ports[0].port"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e", address=[pb.Address(ip="::1", ports=[pb.Port(port=65536)])])]),
     "ports[0].port"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name="e", address=[pb.Address(ip="::1", ports=[pb.Port(port=1, protocol="sctp")])])]),
     "protocol"),
    (pb.Machine(uuid="u", ifaces=[pb.Iface(name=f"e{i}") for i in range(4097)]), "machine.ifaces"),
]


def test_malformed_reports_are_not_accepted_with_a_reason(saver_factory, database):
    saver = saver_factory(database)
    with saver.channel() as ch:
        for bad, field in BAD:
            status, trailing = save(ch, bad)
            assert status == pb.SaveMachineRes.NOT_ACCEPTED, bad
            assert field in trailing["reason"], trailing
        # no machine at all
        reply, call = workerServer_pb2_grpc.WorkerSaverStub(ch).SaveMachine.with_call(pb.SaveMachineReq(), timeout=5)
        assert reply.status == pb.SaveMachineRes.NOT_ACCEPTED
        assert "machine" in dict(call.trailing_metadata())["reason"]
        listed = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(), timeout=5)
        assert list(listed.machines) == []


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_ip = st.one_of(st.ip_addresses().map(str), _text)
_port = st.builds(pb.Port, port=st.integers(0, 70000), service=_text,
                  protocol=st.sampled_from(["", "tcp", "udp", "x"]), pid=st.integers(0, 2**32 - 1))
_address = st.builds(pb.Address, ip=_ip, ports=st.lists(_port, max_size=3))
_iface = st.builds(pb.Iface, name=_text, address=st.lists(_address, max_size=3), error=_text, state=_text)
_machine = st.builds(pb.Machine, uuid=_text, ifaces=st.lists(_iface, max_size=3), error=_text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=_machine)
def test_random_reports_get_the_validators_answer_and_never_crash_the_saver(saver_factory, database, m, request):
    cache = request.node.__dict__.setdefault("_saver", {})
    if "saver" not in cache:
        cache["saver"] = saver_factory(database)
        cache["channel"] = cache["saver"].channel()
        request.addfinalizer(cache["channel"].close)
    saver, ch = cache["saver"], cache["channel"]
    try:
        validate_machine(m)
        expected = pb.SaveMachineRes.ACCEPTED
    except InvalidReport:
        expected = pb.SaveMachineRes.NOT_ACCEPTED
    status, trailing = save(ch, m)
    assert status == expected
    assert (status == pb.SaveMachineRes.NOT_ACCEPTED) == bool(trailing.get("reason"))
    assert saver.proc.poll() is None


def test_store_bounds_machines(database):
    store = open_store(database, history=2, max_machines=2)
    try:
        store.save("a", b"1", 1, "p")
        store.save("b", b"2", 2, "p")
        store.save("a", b"3", 3, "p")  # a known machine is always accepted
        with pytest.raises(TooManyMachines):
            store.save("c", b"4", 4, "p")
        store.save("a", b"5", 5, "p")
        assert [(r.uuid, r.report, r.reports) for r in store.latest()] == [("a", b"5", 2), ("b", b"2", 1)]
        assert [r.report for r in store.history("a", 10)] == [b"5", b"3"]
        assert store.history("zz", 10) == []
        store.ping()
    finally:
        store.close()


def test_the_standalone_saver_serves_reflection_v1(saver_factory, tmp_path):
    """cellar-saver answers grpc.reflection.v1 (current grpcurl's first question) as cellard does."""
    from tests.agent.core.test_reflection import V1_METHOD, ask, v1alpha

    saver = saver_factory(str(tmp_path / "saver.sqlite"))
    with saver.channel() as ch:
        (listing,) = ask(ch, V1_METHOD, v1alpha.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listing.list_services_response.service}
    assert {"pb.WorkerSaver", "cellar.v1.Machines", "grpc.reflection.v1.ServerReflection"} <= names
