"""Attacks by an operator on containment, through the API (issue 12): asking for what only an admin may.

DESIGN.md: "``privileged`` restores the host's view and full capabilities, and only an admin may ask
for it". An operator (mTLS client ``op-user``) asks a REAL cellard for a privileged cell or
executable, a grant on the main socket, capabilities beyond the default set, a host path as a mount
or as the root: PERMISSION_DENIED naming the field, and nothing is allocated or started. The same
requests from an admin (``admin-user``) are accepted (what a privileged workload can then do is the
containment suite's business: tests/security/test_containment.py). An operator also may not reach
an admin's privileged or granted cell by starting an executable in it or nesting a cell below it, and
a job submitted by a workload never lands in such a cell.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, types_pb2
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.sky import AgentService_pb2_grpc, Common_pb2, RunJob_pb2
from tests.support.api import running_cellard
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

PDENIED = grpc.StatusCode.PERMISSION_DENIED


class Client:
    """The cells API as one identity."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.runtime = runtime_pb2_grpc.CellServiceStub(channel)
        self.cells = cells_pb2_grpc.CellsStub(channel)

    def allocate(self, name: str, **fields: Any) -> runtime_pb2.AllocateCellResponse:
        cell = runtime_pb2.Cell(name=name, **fields)
        return self.runtime.Allocate(runtime_pb2.AllocateCellRequest(cell=cell), timeout=scaled(30))

    def start(self, cell: str, name: str, *argv: str, **fields: Any) -> runtime_pb2.StartCellResponse:
        exe = runtime_pb2.Executable(cell_name=cell, name=name, argv=list(argv), **fields)
        return self.runtime.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=scaled(30))

    def names(self) -> list[str]:
        return [c.name for c in self.cells.List(cells_pb2.ListCellsRequest(), timeout=scaled(30)).cells]

    def inspect(self, name: str) -> cells_pb2.CellInfo:
        return self.cells.Inspect(cells_pb2.InspectCellRequest(cell_name=name), timeout=scaled(30))


@pytest.fixture(scope="module")
def daemon(pki: Any) -> Iterator[Any]:
    """One cellard with mTLS on TCP (op-user: operator, admin-user: admin) and its Unix socket (root: admin)."""
    from tests.support.cellard import TLS_IDENTITIES

    cert, key = pki.cert("cellard-test")
    config = {"server": {"tcp_listen": "127.0.0.1:0"},
              "tls": {"ca": str(pki.ca), "cert": str(cert), "key": str(key)},
              "auth": {"identities": TLS_IDENTITIES}}
    with running_cellard(config) as d:
        d.pki = pki
        yield d


@pytest.fixture
def admin(daemon: Any) -> Iterator[Client]:
    channel = daemon.tls_channel("admin-user")
    client = Client(channel)
    try:
        yield client
    finally:
        for name in sorted(client.names(), key=lambda n: -n.count("/")):
            client.runtime.Free(runtime_pb2.FreeCellRequest(cell_name=name, grace_period_ms=0), timeout=scaled(60))
        channel.close()


@pytest.fixture
def operator(daemon: Any, admin: Client) -> Iterator[Client]:
    with daemon.tls_channel("op-user") as channel:
        yield Client(channel)


@pytest.fixture
def volumes(daemon: Any) -> str:
    """cellar's volumes directory (<state_dir>/volumes), which cellard creates."""
    path = os.path.join(daemon.config["paths"]["state_dir"], "volumes")
    assert os.path.isdir(path)
    return path


def denied(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    assert err.value.code() == PDENIED, (err.value.code(), err.value.details())
    return str(err.value.details())


# ---------------------------------------------------------------- an operator's requests


@pytest.mark.parametrize(("fields", "field"), [
    ({"privileged": True}, "cell.privileged"),
    ({"grant_role": "observer"}, "cell.grant_role"),
    ({"grant_role": "admin"}, "cell.grant_role"),
    ({"cap_add": ["SYS_ADMIN"]}, "cell.cap_add"),
    ({"cap_add": ["cap_net_admin"]}, "cell.cap_add"),
    ({"cap_add": ["ALL"]}, "cell.cap_add"),
    ({"isolate_process": True, "mounts": [types_pb2.Mount(source="/etc", target="/mnt")]}, "cell.mounts[0].source"),
    ({"isolate_process": True, "mounts": [types_pb2.Mount(source="/", target="/mnt", read_only=True)]},
     "cell.mounts[0].source"),
    ({"isolate_process": True, "rootfs": "/"}, "cell.rootfs"),
], ids=["privileged", "grant-observer", "grant-admin", "cap-sys-admin", "cap-lowercase", "cap-all", "mount-etc",
        "mount-root-ro", "rootfs-host"])
def test_an_operator_may_not_ask_for_privilege(daemon: Any, operator: Client, fields: dict[str, Any],
                                                field: str) -> None:
    details = denied(operator.allocate, "evil", **fields)
    assert details.startswith(field + ":") and "role operator" in details, details
    assert "evil" not in operator.names(), "a refused Allocate must allocate nothing"
    assert any(e.get("field") == field for e in daemon.events("authz.privilege_denied")), "denial not logged"


def test_a_mount_of_a_symlink_out_of_the_volumes_directory_is_a_host_path(operator: Client, volumes: str) -> None:
    link = os.path.join(volumes, "to-etc")
    os.symlink("/etc", link)
    try:
        denied(operator.allocate, "evil", isolate_process=True, mounts=[types_pb2.Mount(source=link, target="/mnt")])
        with pytest.raises(grpc.RpcError) as err:  # '..' never gets as far as the role check
            operator.allocate("evil", isolate_process=True,
                              mounts=[types_pb2.Mount(source=volumes + "/../../../etc", target="/mnt")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        os.unlink(link)
    assert "evil" not in operator.names()


def test_an_operator_may_not_start_a_privileged_executable(operator: Client) -> None:
    operator.allocate("plain")
    for fields, field in (({"privileged": True}, "executable.privileged"),
                          ({"cap_add": ["SYS_PTRACE"]}, "executable.cap_add")):
        details = denied(operator.start, "plain", "evil", "sleep", "60", **fields)
        assert details.startswith(field + ":"), details
    assert list(operator.inspect("plain").executables) == [], "a refused Start must start nothing"


def test_an_operator_may_drop_capabilities_and_use_the_volumes_directory(operator: Client, volumes: str) -> None:
    """What stays an operator's: any cap_drop, adding back a default capability (Docker's
    ``--cap-drop ALL --cap-add NET_BIND_SERVICE``), mounts and a rootfs below the volumes directory."""
    data = os.path.join(volumes, "data")
    os.makedirs(data, exist_ok=True)
    operator.allocate("lean", cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"])
    info = operator.inspect("lean")
    assert list(info.capabilities) == ["NET_BIND_SERVICE"] and not info.privileged
    assert list(info.cell.cap_drop) == ["ALL"] and list(info.cell.cap_add) == ["NET_BIND_SERVICE"]
    operator.start("lean", "exe", "true", cap_drop=["NET_RAW"], cap_add=["CHOWN"])
    operator.allocate("vol", isolate_process=True, mounts=[types_pb2.Mount(source=data, target="/mnt", read_only=True)])
    assert [(m.source, m.target, m.read_only) for m in operator.inspect("vol").cell.mounts] == [(data, "/mnt", True)]


def test_an_operator_may_not_reach_an_admins_privileged_or_granted_cell(admin: Client, operator: Client) -> None:
    admin.allocate("root-tools", privileged=True)
    admin.allocate("ctl", grant_role="admin")
    for cell in ("root-tools", "ctl"):
        details = denied(operator.start, cell, "evil", "sleep", "60")
        assert details.startswith("executable.cell_name:") and repr(cell) in details, details
        assert list(operator.inspect(cell).executables) == []
        denied(operator.allocate, f"{cell}/below")
    assert not [n for n in operator.names() if n.endswith("/below")]


# ---------------------------------------------------------------- an admin's requests


def test_an_admin_may_ask_for_all_of_it(admin: Client) -> None:
    admin.allocate("priv", privileged=True, cap_add=["SYS_ADMIN"], grant_role="observer")
    admin.allocate("hostview", isolate_process=True, mounts=[types_pb2.Mount(source="/etc", target="/mnt", read_only=True)])
    admin.allocate("caps", cap_add=["SYS_PTRACE"])
    admin.start("caps", "exe", "sleep", "60", privileged=True, cap_add=["SYS_ADMIN"])
    info = admin.inspect("priv")
    assert info.privileged and info.cell.privileged and info.cell.grant_role == "observer"
    assert "SYS_ADMIN" in info.capabilities and len(info.capabilities) > 14
    assert admin.inspect("hostview").cell.mounts[0].source == "/etc"
    (exe,) = admin.inspect("caps").executables
    assert exe.name == "exe"


def test_an_observer_may_allocate_nothing(daemon: Any, admin: Client) -> None:
    with daemon.tls_channel("obs-user") as channel:
        denied(Client(channel).allocate, "plain")
    assert admin.names() == []


# ---------------------------------------------------------------- jobs


def test_a_job_never_lands_in_an_admins_cell(daemon: Any, admin: Client) -> None:
    """A job's cell is jobs/<label>, and a DNS-label job id is its own label: a workload could name a
    cell an admin made. The job fails instead of running there."""
    admin.allocate("jobs")
    admin.allocate("jobs/squat", privileged=True)
    with daemon.channel() as ch:
        files = file_pb2_grpc.FileStub(ch)
        created = files.Create(file_pb2.CreateRequest(path="/parigot/app/p/run.sh"), timeout=10)
        files.Write(file_pb2.WriteRequest(id=created.id, buf=b"echo hi\n"), timeout=10)
        files.Close(file_pb2.CloseRequest(id=created.id), timeout=10)
        from agent.local.jobs.ids import format_file_id

        file_id = Common_pb2.FileId(uuid=format_file_id(created.id.high, created.id.low))
    with grpc.insecure_channel("unix:" + str(daemon.run_dir / "local.sock")) as local:
        agent = AgentService_pb2_grpc.AgentStub(local)
        request = RunJob_pb2.RunJobRequest(job=Common_pb2.JobId(uuid="squat"), files=[file_id])
        reply = agent.RunJob(request, timeout=30)
        deadline = time.monotonic() + scaled(30)
        while reply.code != RunJob_pb2.DONE:
            assert time.monotonic() < deadline, reply
            time.sleep(0.1)
            reply = agent.RunJob(RunJob_pb2.RunJobRequest(job=Common_pb2.JobId(uuid="squat")), timeout=30)
    assert reply.phase == "failed" and "admin-only" in reply.error, reply
    assert list(admin.inspect("jobs/squat").executables) == []


# ---------------------------------------------------------------- the same through `cellar apply`


def apply(client: Client, text: str, dry_run: bool = False) -> cells_pb2.ApplyResponse:
    return client.cells.Apply(cells_pb2.ApplyRequest(manifest=text, file_name="node.toml", dry_run=dry_run),
                              timeout=scaled(60))


@pytest.mark.parametrize(("cell", "field"), [
    ("privileged = true", "cell.privileged"),
    ('grant_role = "admin"', "cell.grant_role"),
    ('cap_add = ["SYS_ADMIN"]', "cell.cap_add"),
    ('isolate_process = true\nrootfs = "/"', "cell.rootfs"),
    ('[cells.evil.executables.x]\nargv = ["true"]\nprivileged = true', "executable.privileged"),
])
def test_apply_is_no_way_around_the_privilege_rules(operator: Client, cell: str, field: str) -> None:
    """A harmless cell first, the privileged one second: the whole file is refused before anything
    changes, dry runs included."""
    text = f'[cells.aaa]\n[cells.aaa.executables.a]\nargv = ["sleep", "60"]\n\n[cells.evil]\n{cell}\n'
    for dry_run in (True, False):
        assert field in denied(apply, operator, text, dry_run)
    assert operator.names() == []


def test_apply_may_not_change_an_admins_cell(admin: Client, operator: Client) -> None:
    admin.allocate("root-only", privileged=True)
    text = '[cells."root-only"]\nprivileged = true\nlimits = { pids_max = 10 }\n'
    assert "privileged" in denied(apply, operator, text)
    assert "is an admin's" in denied(apply, operator, '[cells."root-only/below"]\n')
    assert operator.inspect("root-only").cell.pids_max == 0
    assert apply(admin, text).changes[0].action == "update"


def test_an_observer_may_not_apply_but_may_read_a_manifest(daemon: Any, admin: Client) -> None:
    admin.allocate("seen")
    with daemon.tls_channel("obs-user") as channel:
        observer = Client(channel)
        denied(apply, observer, "[cells.mine]\n", True)
        reply = observer.cells.GetManifest(cells_pb2.GetManifestRequest(cell_name="seen"), timeout=scaled(30))
        assert not reply.applied and reply.manifest.startswith("[cells.seen]")


def test_an_oversized_or_hostile_manifest_is_refused_whole(operator: Client) -> None:
    for text, expected in [("#" * ((1 << 20) + 1), "at most"), ('[cells."a/../b"]\n', "node.toml:1"),
                           ('[cells.x]\nlimits = { memory_max = "99999999999T" }\n', "memory_max")]:
        with pytest.raises(grpc.RpcError) as err:
            apply(operator, text)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in err.value.details(), \
            err.value.details()
    assert operator.names() == []
