"""Hostile values in cellar's report fields are refused naming the field, before any storage.

The dashboard shows these fields; they are escaped there, and bounded here so one report cannot
fill a page or the database.
"""

from __future__ import annotations

import pytest

from agent.pb.saver.validation import MAX_CELLS, InvalidReport, validate_machine
from proto.cellar.v1 import report_pb2
from proto.pb import workerServer_pb2 as pb


def machine(**kw: object) -> pb.Machine:
    return pb.Machine(uuid="m-1", **kw)  # type: ignore[arg-type]


def _ports(*ports: pb.Port) -> list[pb.Iface]:
    good = [pb.Port(port=80, protocol="tcp", service="web")] * 20
    return [pb.Iface(name="eth0"), pb.Iface(name="eth1", address=[pb.Address(ip="10.0.0.1", ports=good),
                                                                   pb.Address(ip="10.0.0.2", ports=[*good, *ports])])]


@pytest.mark.parametrize(("m", "field"), [
    (machine(ifaces=_ports(pb.Port(port=0))), "machine.ifaces[1].address[1].ports[20].port"),
    (machine(ifaces=_ports(pb.Port(port=70000))), "machine.ifaces[1].address[1].ports[20].port"),
    (machine(ifaces=_ports(pb.Port(port=1, protocol="sctp"))), "machine.ifaces[1].address[1].ports[20].protocol"),
    (machine(ifaces=_ports(pb.Port(port=1, service="a\nb"))), "machine.ifaces[1].address[1].ports[20].service"),
    (machine(ifaces=_ports(pb.Port(port=1, process="p" * 300))), "machine.ifaces[1].address[1].ports[20].process"),
    (machine(ifaces=[pb.Iface(name="eth0"), pb.Iface(name="")]), "machine.ifaces[1].name"),
    (machine(ifaces=[pb.Iface(name="eth0", error="x\0")]), "machine.ifaces[0].error"),
    (machine(ifaces=[pb.Iface(name="eth0", address=[pb.Address(ip="10.0.0.1"), pb.Address(ip="10.0.0.256")])]),
     "machine.ifaces[0].address[1].ip"),
    (machine(ifaces=[pb.Iface(name="eth0", address=[pb.Address(ip="fe80::1%eth0; rm -rf")])]),
     "machine.ifaces[0].address[0].ip"),
    (machine(hostname="a\nb"), "machine.hostname"),
    (machine(hostname="h" * 300), "machine.hostname"),
    (machine(os="x\x1b[2J"), "machine.os"),
    (machine(api_address="evil host:1"), "machine.api_address"),
    (machine(cgroup_mode="v" * 17), "machine.cgroup_mode"),
    (machine(cells=[report_pb2.ReportCell(name="")]), "machine.cells[0].name"),
    (machine(cells=[report_pb2.ReportCell(name="c", executables=[report_pb2.ReportExecutable(name="e\x00")])]),
     "machine.cells[0].executables[0].name"),
    (machine(cells=[report_pb2.ReportCell(name=f"c{i}") for i in range(MAX_CELLS + 1)]), "machine.cells"),
    (machine(usage=report_pb2.ReportUsage(cpu_usage_us=2**64 - 1)), "machine.usage.cpu_usage_us"),
    (machine(usage=report_pb2.ReportUsage(at_ns=-1)), "machine.usage.at_ns"),
    (machine(usage=report_pb2.ReportUsage(cells=[report_pb2.ReportCellUsage(cell="")])), "machine.usage.cells[0].cell"),
])
def test_hostile_report_fields_are_refused_naming_the_field(m: pb.Machine, field: str) -> None:
    with pytest.raises(InvalidReport) as err:
        validate_machine(m)
    assert str(err.value).startswith(field + ":")


def test_markup_is_stored_as_text_not_refused() -> None:
    """<script> in a name is legal data (escaped when shown), not a reason to drop the report."""
    validate_machine(machine(hostname="<script>alert(1)</script>",
                             cells=[report_pb2.ReportCell(name="<img src=x onerror=alert(1)>")]))


def test_a_busy_but_well_formed_report_passes() -> None:
    validate_machine(machine(ifaces=_ports(pb.Port(port=65535, protocol="udp", cell="c", executable="e",
                                                   process="p")) + [pb.Iface(name="lo", address=[
        pb.Address(ip="::1"), pb.Address(ip="fe80::1%eth0")])], error="multi\nline is fine here"))
