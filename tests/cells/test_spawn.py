"""Both spawners (the clone3 C extension and the Python fork fallback) keep the same contract.

Each test runs once per spawner, as root against the real kernel: the process is in its cgroups and
the cell's namespaces before its first instruction, starts with a clean process state, and every
failing stage comes back as the same error the runtime maps to a field.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cells import namespaces as ns
from cells import spawn
from cells.cgroup import CgroupBackend
from cells.errors import CellError, ExecTimeout, InvalidArgument, RuntimeFailure
from cells.holder import namespace_fds, start_holder
from cells.spawn import ExecRequest

pytestmark = pytest.mark.root

Spawner = Callable[[ExecRequest], int]


@pytest.fixture(params=["clone", "fork"])
def spawner(request: pytest.FixtureRequest) -> Spawner:
    if request.param == "clone":
        # A build without the extension must fail here, not quietly test the fallback twice.
        assert spawn._c_spawn is not None and spawn._c_spawn.SUPPORTED, "cells._spawn was not built"
        return spawn.clone_exec
    return spawn.fork_exec


@dataclass
class Holder:
    pid: int
    ns_fds: list[tuple[int, int]]  # net, uts, ipc, mnt: the order the runtime enters them
    pidns_fd: int


@pytest.fixture
def holder(backend: CgroupBackend) -> Iterator[Holder]:
    """A real namespace holder (pid/mount/uts/ipc namespaces of its own), killed and reaped afterwards."""
    backend.create("h")
    devnull = spawn.open_devnull()
    pid = start_holder(backend.procs_files("h"), "spawntest", None, devnull)
    fds: list[tuple[int, int]] = []
    try:
        fds = namespace_fds(pid)
        pidns = ns.open_ns(pid, "pid")
        yield Holder(pid, fds, pidns)
        os.close(pidns)
    finally:
        for fd, _ in fds:
            os.close(fd)
        os.close(devnull)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def run(spawner: Spawner, argv: list[str], **fields: object) -> tuple[int, str]:
    """Spawn with stdout+stderr on a pipe; (wait status, output)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    devnull = spawn.open_devnull()
    try:
        fields.setdefault("env", {"PATH": spawn.DEFAULT_PATH})
        req = ExecRequest(
            argv=argv, setup=None, stdin=devnull, stdout=w, stderr=w, close_in_parent=[w], **fields
        )  # type: ignore[arg-type]
        w = -1  # the spawner closes it, whatever happens
        pid = spawner(req)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        return status, b"".join(chunks).decode()
    finally:
        os.close(r)
        os.close(devnull)
        if w >= 0:
            os.close(w)


def test_in_its_cgroups_and_the_cells_namespaces_from_the_start(
    spawner: Spawner, backend: CgroupBackend, holder: Holder
) -> None:
    backend.create("leaf")
    script = "cat /proc/self/cgroup; for n in net uts ipc mnt pid; do stat -L -c %i /proc/self/ns/$n; done; echo $$; hostname"
    status, out = run(
        spawner,
        ["sh", "-c", script],
        cgroup_procs=backend.procs_files("leaf"),
        namespaces=holder.ns_fds,
        pidns_fd=holder.pidns_fd,
    )
    assert os.waitstatus_to_exitcode(status) == 0, out
    lines = out.splitlines()
    cgroups = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines if line.count(":") >= 2}
    leaf = "/" + os.path.relpath(backend.unified_path("leaf"), os.path.dirname(backend.root))
    assert cgroups[""] == leaf
    if backend.mode == "hybrid":
        for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
            assert any(controller in k.split(",") and v == leaf for k, v in cgroups.items()), (
                controller,
                out,
            )
    *inodes, cell_pid, hostname = lines[-7:]
    assert [int(i) for i in inodes] == [
        ns.ns_inode(holder.pid, name) for name in ("net", "uts", "ipc", "mnt", "pid")
    ]
    assert 1 < int(cell_pid) < 100  # a pid of the cell's pid namespace, not the host's
    assert hostname == "spawntest"
    assert ns.ns_inode("self", "pid_for_children") == ns.ns_inode("self", "pid")  # parent restored


def test_env_cwd_ids_stdio_signals_and_fds_are_clean(spawner: Spawner, backend: CgroupBackend) -> None:
    backend.create("leaf")
    stray = os.open(os.devnull, os.O_RDONLY)  # inheritable: the child must not see it
    script = (
        'echo "$FOO"; pwd; id -u; id -g; id -G; grep -E "^Sig(Blk|Ign)" /proc/self/status; ls /proc/self/fd'
    )
    try:
        with catching(signal.SIGPIPE, signal.SIG_IGN), catching(signal.SIGUSR1, lambda *_: None):
            status, out = run(
                spawner,
                ["sh", "-c", script],
                env={"PATH": spawn.DEFAULT_PATH, "FOO": "bar baz"},
                cwd="/tmp",
                uid=65534,
                gid=65534,
                cgroup_procs=backend.procs_files("leaf"),
            )
    finally:
        os.close(stray)
    assert os.waitstatus_to_exitcode(status) == 0, out
    lines = out.splitlines()
    assert lines[:5] == ["bar baz", "/tmp", "65534", "65534", "65534"]
    sigs = dict(line.split(":\t") for line in lines[5:7])
    assert int(sigs["SigBlk"], 16) == 0
    ignored = int(sigs["SigIgn"], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1):
        assert not ignored & (1 << (sig - 1)), sig
    assert set(lines[7:]) <= {"0", "1", "2", "3"}  # 3: ls's own directory fd


@contextlib.contextmanager
def catching(sig: int, handler: object) -> Iterator[None]:
    old = signal.signal(sig, handler)  # type: ignore[arg-type]
    try:
        yield
    finally:
        signal.signal(sig, old)


@pytest.mark.parametrize(
    ("argv", "fields", "error", "field", "text"),
    [
        (["/no/such/binary"], {}, InvalidArgument, "executable.argv", "No such file or directory"),
        (["no-such-command-anywhere"], {}, InvalidArgument, "executable.argv", "No such file or directory"),
        (["/etc"], {}, InvalidArgument, "executable.argv", "Permission denied"),
        # os.execvpe's rule: the first error other than ENOENT/ENOTDIR wins over a later ENOENT
        (["etc"], {"env": {"PATH": "/:/no/such"}}, InvalidArgument, "executable.argv", "Permission denied"),
        (["true"], {"cwd": "/no/such/dir"}, InvalidArgument, "executable.cwd", "No such file or directory"),
        (["true"], {"namespaces": "bad"}, RuntimeFailure, None, "spawn failed at setns"),
        (["true"], {"cgroup_procs": "gone"}, RuntimeFailure, None, "spawn failed at cgroup"),
    ],
    ids=["exec-path", "exec-search", "exec-perm", "exec-search-perm", "chdir", "setns", "cgroup"],
)
def test_each_failing_stage_is_reported_and_leaves_nothing(
    spawner: Spawner,
    backend: CgroupBackend,
    argv: list[str],
    fields: dict[str, object],
    error: type[CellError],
    field: str | None,
    text: str,
) -> None:
    backend.create("leaf")
    fields = dict(fields)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    devnull = spawn.open_devnull()
    if fields.get("namespaces") == "bad":
        fields["namespaces"] = [(devnull, ns.CLONE_NEWNET)]  # not a namespace fd: EINVAL
    if fields.get("cgroup_procs") == "gone":
        backend.create("gone")
        fields["cgroup_procs"] = backend.procs_files("gone")
        backend.remove("gone")
    else:
        fields["cgroup_procs"] = backend.procs_files("leaf")
    try:
        with pytest.raises(error) as exc:
            run(spawner, argv, **fields)
    finally:
        os.close(devnull)
    assert text in str(exc.value)
    if field is not None:
        assert isinstance(exc.value, InvalidArgument) and exc.value.field == field
    assert backend.pids("leaf") == []  # the failed child is gone (and reaped: no zombie holds the leaf)
    assert sorted(os.listdir("/proc/self/fd")) == fds_before


def test_a_child_that_never_execs_is_killed_after_the_timeout(
    spawner: Spawner, backend: CgroupBackend
) -> None:
    """A frozen leaf stops the child before exec: the parent must not wait for ever."""
    backend.create("leaf")
    backend.freeze("leaf")
    try:
        with pytest.raises(ExecTimeout, match="did not exec within 0.5s"):
            run(spawner, ["true"], cgroup_procs=backend.procs_files("leaf"), exec_timeout_s=0.5)
    finally:
        backend.thaw("leaf")
    assert backend.pids("leaf") == []


def test_clone_reports_the_childs_own_pid_in_its_pid_namespace(backend: CgroupBackend, holder: Holder) -> None:
    """Read by the child itself: a short-lived child may be reaped (its /proc gone) before the
    supervisor's Start is back on the event loop to look."""
    assert spawn._c_spawn is not None and spawn._c_spawn.SUPPORTED, "cells._spawn was not built"
    backend.create("leaf")
    r, w = os.pipe2(os.O_CLOEXEC)
    devnull = spawn.open_devnull()
    try:
        cloned = spawn.clone_start(ExecRequest(
            argv=["sh", "-c", "echo $$"], env={"PATH": spawn.DEFAULT_PATH}, setup=None, stdin=devnull,
            stdout=w, stderr=w, close_in_parent=[w], cgroup_procs=backend.procs_files("leaf"),
            namespaces=holder.ns_fds, pidns_fd=holder.pidns_fd,
        ))
        assert cloned.stage == ""
        assert int(os.read(r, 100)) == cloned.ns_pid != cloned.pid
        os.waitpid(cloned.pid, 0)
    finally:
        os.close(r)
        os.close(devnull)


@pytest.mark.parametrize("uid", [None, 65534], ids=["root", "nobody"])
def test_the_security_profile_is_the_same_from_both_spawners(
    spawner: Spawner, backend: CgroupBackend, uid: int | None
) -> None:
    """cells.profile: capabilities cut (to nothing for a non-root uid), no_new_privs, the seccomp
    filter and a cgroup namespace, applied by the C child and the fork child alike."""
    from cells import capabilities, profile

    backend.create("leaf")
    caps = capabilities.DEFAULT_CAPS - {"CHOWN"}
    prof = profile.SecurityProfile(
        caps=caps, no_new_privs=True, seccomp=profile.for_holder().seccomp, unshare=ns.CLONE_NEWCGROUP
    )
    script = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; cat /proc/self/cgroup"
    status, out = run(spawner, ["sh", "-c", script], cgroup_procs=backend.procs_files("leaf"), uid=uid, profile=prof)
    assert os.waitstatus_to_exitcode(status) == 0, out
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    kept = 0 if uid else capabilities.mask(caps)
    assert {k: int(fields[k], 16) for k in ("CapPrm", "CapEff")} == {"CapPrm": kept, "CapEff": kept}
    assert int(fields["CapBnd"], 16) == capabilities.mask(caps)
    assert int(fields["CapInh"], 16) == int(fields["CapAmb"], 16) == 0
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2")
    assert all(line.endswith(":/") for line in out.splitlines() if line[:1].isdigit()), out


def test_a_failing_profile_step_is_reported_by_its_stage(spawner: Spawner, backend: CgroupBackend) -> None:
    """A seccomp program the kernel rejects (a lone 'return ALLOW' is fine; garbage is EINVAL)."""
    from cells import profile

    backend.create("leaf")
    bad = profile.SecurityProfile(caps=None, no_new_privs=True, seccomp=b"\xff" * 8, unshare=0)
    with pytest.raises(RuntimeFailure, match="spawn failed at seccomp"):
        run(spawner, ["/bin/true"], cgroup_procs=backend.procs_files("leaf"), profile=bad)
