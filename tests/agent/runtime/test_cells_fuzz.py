"""Hypothesis-generated runtime.Cell / runtime.Executable messages against a real cellard.

Every answer must be OK or a precise client-side status (never INTERNAL or UNKNOWN), cellard must stay
SERVING, and after each example (everything allocated is freed) nothing may be left on the host:
no cgroup directory under cellard's root, no netns with its prefix, no veth host link.
"""

from __future__ import annotations

import os
import shutil
import string
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proto.aurae import runtime_pb2
from proto.cellar.v1 import types_pb2
from tests.support.api import Api

pytestmark = pytest.mark.root

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
U32, U64 = 2**32 - 1, 2**64 - 1

dns_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z")
weird = st.sampled_from(["", ".", "..", "../x", "a/..", "/", "a//b", "a/", "/a", "a\0b", "\0", "A", "a_b",
                         "é", "\u202e", "a" * 64, "a" * 300, "-a", "a-", "exe.x", "_init"])
cell_names = st.one_of(
    dns_label,
    st.lists(dns_label, min_size=2, max_size=3).map("/".join),
    weird,
    st.text(max_size=40),
    st.text(alphabet="ab/.\0-", max_size=12),
)
exe_names = st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,10}\Z"), weird, st.text(max_size=70))


VALID = {"cpu_weight": (1, 10000), "cpu_max_quota_us": (1000, 10**6), "cpu_max_period_us": (1000, 10**6),
         "memory_min": (0, 2**30), "memory_low": (0, 2**30), "memory_high": (2**20, 2**30),
         "memory_max": (2**20, 2**30), "swap_max": (0, 2**30), "pids_max": (1, 1000)}


@st.composite
def limit(draw: Any, field: str, bits_max: int) -> int | None:
    """Mostly unset (so that many cells are valid), else valid, an edge value, or anything."""
    kind = draw(st.integers(0, 11))
    if kind <= 6:
        return None
    if kind <= 8:
        return draw(st.integers(*VALID[field]))
    if kind <= 10:
        edges = [v for v in (0, 1, 2, 999, 1000, 10000, 10001, 4_194_304, 2**53, 2**62, bits_max) if v <= bits_max]
        return draw(st.sampled_from(edges))
    return draw(st.integers(0, bits_max))


veths = st.builds(
    types_pb2.Veth,
    host_ifname=st.one_of(st.just(""), st.text(max_size=20), st.from_regex(r"\Acf[0-9a-f]{6}\Z")),
    cell_ifname=st.one_of(st.just(""), st.just("eth0"), st.text(max_size=20)),
    host_address=st.one_of(st.just(""), st.just("10.201.0.1/30"), st.just("not-an-ip"), st.text(max_size=20)),
    cell_address=st.one_of(st.just(""), st.just("10.201.0.2/30"), st.text(max_size=20)),
)


@st.composite
def cells(draw: Any) -> runtime_pb2.Cell:
    cell = runtime_pb2.Cell(name=draw(st.one_of(dns_label, cell_names)))
    if draw(st.integers(0, 3)) == 0:
        cell.cpu_shares = draw(st.one_of(st.sampled_from([1, 2, 1024, 262144, 262145, U64]), st.integers(0, U64)))
    for field, bits in (("cpu_weight", U32), ("cpu_max_quota_us", U64), ("cpu_max_period_us", U64),
                        ("memory_min", U64), ("memory_low", U64), ("memory_high", U64), ("memory_max", U64),
                        ("swap_max", U64), ("pids_max", U64)):
        value = draw(limit(field, bits))
        if value is not None:
            setattr(cell, field, value)
    cell.cpuset_cpus = draw(st.one_of(st.just(""), st.just(""), st.sampled_from(["0", "0-1", "0,1", "99", "1-0", "-"]),
                                      st.text(max_size=10)))
    cell.cpuset_mems = draw(st.one_of(st.just(""), st.sampled_from(["0", "5"]), st.text(max_size=5)))
    cell.isolate_process = draw(st.booleans())
    cell.isolate_network = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        cell.veth.CopyFrom(draw(veths))
    if draw(st.integers(0, 2)) == 0:
        add_containment(draw, cell)
    return cell


cap_names = st.lists(st.one_of(st.sampled_from(["NET_ADMIN", "cap_sys_admin", "all", "ALL", "chown", "CAP_FOO", "",
                                                "net_raw", "SYS_PTRACE"]), st.text(max_size=12)), max_size=4)
paths = st.one_of(st.sampled_from(["", "/", "/var/tmp", "/nonexistent", "rel", "/etc/passwd", "/tmp/../etc", "/proc/x",
                                   "/mnt", "/srv/new", "/tmp/in", "/a//b", "/\0", "/" + "a" * 1100]), st.text(max_size=12))
mounts = st.builds(types_pb2.Mount, source=paths, target=paths, read_only=st.booleans())


def add_containment(draw: Any, cell: runtime_pb2.Cell) -> None:
    """The containment fields (issue 12): capability names, privileged, grants, mounts, rootfs."""
    cell.privileged = draw(st.booleans())
    cell.cap_add.extend(draw(cap_names))
    cell.cap_drop.extend(draw(cap_names))
    cell.grant_role = draw(st.sampled_from(["", "", "observer", "admin", "root", "Admin"]))
    cell.mounts.extend(draw(st.lists(mounts, max_size=3)))
    cell.rootfs = draw(st.sampled_from(["", "", "/", "/nonexistent", "rel", "/var/tmp"]))
    cell.keep_data = draw(st.booleans())


@st.composite
def valid_cells(draw: Any) -> runtime_pb2.Cell:
    """Cells that should allocate: the other half of the examples, so the success paths get exercised."""
    cell = runtime_pb2.Cell(name=draw(dns_label), isolate_process=draw(st.booleans()),
                            isolate_network=draw(st.booleans()))
    # memory_min/memory_low are refused on hybrid hosts (FAILED_PRECONDITION): left to cells().
    for field in ("cpu_weight", "cpu_max_quota_us", "memory_max", "pids_max"):
        if draw(st.booleans()):
            setattr(cell, field, draw(st.integers(*VALID[field])))
    if cell.HasField("cpu_max_quota_us") and draw(st.booleans()):
        cell.cpu_max_period_us = draw(st.integers(*VALID["cpu_max_period_us"]))
    if not cell.HasField("cpu_weight") and draw(st.booleans()):
        cell.cpu_shares = draw(st.integers(2, 262144))
    cell.cpuset_cpus = draw(st.sampled_from(["", "0"]))
    return cell


argvs = st.one_of(
    st.sampled_from([["/bin/true"], ["sh", "-c", "echo out; echo err >&2; exit 3"], ["sleep", "100"],
                     ["/nonexistent"], ["/"], ["/etc/passwd"], ["."], ["sh\0"], []]),
    st.lists(st.text(max_size=20), max_size=4),
)


@st.composite
def executables(draw: Any, cell_name: str) -> runtime_pb2.Executable:
    if draw(st.booleans()):  # a sane one: should start
        return runtime_pb2.Executable(
            name=draw(st.from_regex(r"\A[a-z][a-z0-9_.-]{0,8}\Z")), cell_name=cell_name,
            argv=draw(st.sampled_from([["/bin/true"], ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                       ["sleep", "3600"], ["sh", "-c", "trap '' TERM; sleep 3600"]])),
            cwd=draw(st.sampled_from(["", "/", "/tmp"])), env={"K": draw(st.text(max_size=5).filter(lambda t: "\0" not in t))},
        )
    exe = runtime_pb2.Executable(
        name=draw(exe_names),
        cell_name=draw(st.one_of(st.just(cell_name), st.just(cell_name), cell_names)),
        argv=draw(argvs),
        command=draw(st.one_of(st.just(""), st.just("echo hi"), st.text(max_size=20))),
        description=draw(st.text(max_size=30)),
        cwd=draw(st.one_of(st.just(""), st.sampled_from(["/", "/tmp", "rel/dir", "/nonexistent", "/etc/passwd",
                                                        "..", "\0"]), st.text(max_size=20))),
    )
    for key, value in draw(st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(["A=B", "=", "PATH", ""])),
                                           st.text(max_size=10), max_size=4)).items():
        exe.env[key] = value
    uid = draw(st.one_of(st.none(), st.sampled_from([0, 65534, U32]), st.integers(0, U32)))
    if uid is not None:
        exe.uid = uid
    gid = draw(st.one_of(st.none(), st.sampled_from([0, 65534, U32]), st.integers(0, U32)))
    if gid is not None:
        exe.gid = gid
    exe.privileged = draw(st.booleans())
    exe.cap_add.extend(draw(cap_names))
    exe.cap_drop.extend(draw(cap_names))
    return exe


def code(what: str, call: Any, request: Any, timeout: float) -> grpc.StatusCode:
    got = _code(call, request, timeout)
    event(f"{what} {got.name}")
    return got


def _code(call: Any, request: Any, timeout: float) -> grpc.StatusCode:
    try:
        call(request, timeout=timeout)
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        got = exc.code()
        assert got in ALLOWED, f"{call} -> {got.name}: {exc.details()}"
        event(f"{got.name}: {(exc.details() or '')[:40]}")
        return got  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@given(data=st.data())
@settings(max_examples=int(os.environ.get("CELLAR_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
def test_random_cells_and_executables(api: Api, data: st.DataObject) -> None:
    cell = data.draw(st.one_of(valid_cells(), cells()), "cell")
    exe = data.draw(executables(cell.name), "executable")
    grace = data.draw(st.one_of(st.none(), st.integers(0, 1000), st.just(U32)), "grace_ms")
    try:
        code("Allocate", api.runtime.Allocate, runtime_pb2.AllocateCellRequest(cell=cell), 30)
        code("Start", api.runtime.Start, runtime_pb2.StartCellRequest(executable=exe), 30)
        stop = runtime_pb2.StopCellRequest(cell_name=exe.cell_name, executable_name=exe.name)
        if grace is not None:
            stop.grace_period_ms = grace
        code("Stop", api.runtime.Stop, stop, 60)
        free = runtime_pb2.FreeCellRequest(cell_name=cell.name)
        if grace is not None:
            free.grace_period_ms = min(grace, 1000)
        code("Free", api.runtime.Free, free, 60)
        assert api.daemon.health() == "SERVING"
    finally:
        api.free_all()
    assert api.list() == []
    assert api.cgroup_dirs() == []
    assert api.netns() == []
    assert api.views() == []
    for name in api.data_dirs():  # only a cell allocated with keep_data may leave its data
        assert cell.keep_data and name == cell.name.split("/")[0], name
        shutil.rmtree(os.path.join(api.daemon.runtime_config().data_dir, name))
    if cell.HasField("veth") and cell.veth.host_ifname.isascii() and cell.veth.host_ifname.strip(
            string.ascii_letters + string.digits + "_.-") == "" and cell.veth.host_ifname:
        assert not os.path.exists(os.path.join("/sys/class/net", cell.veth.host_ifname))
