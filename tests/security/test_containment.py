"""Attacks from a root workload on its host, cellar and other cells (issue 12), on the real kernel.

Each attack runs as a workload of a plain cell and of a process- and network-isolated cell, through
one supervisor for the module, and must fail *and* leave the host, the supervisor and the other
cell untouched; then what a workload must still be able to do. Attacks that would do harm if
containment were broken are chosen so that they fail safely in that case too (``reboot(2)`` with a
bad magic number is EPERM when contained, EINVAL when not; ``sysrq`` writes ``h``, which only
prints help).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cells.capabilities import DEFAULT_CAPS, mask
from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.spec import CellSpec, ExecutableSpec
from tests.cells.test_runtime import output, run, wait_exited
from tests.support import REPO
from tests.support.cleanup import destroy_runtime
from tests.support.runtime import make_runtime_config
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

PY = "/usr/bin/python3"  # the distribution's: the same path inside a process-isolated cell
KINDS = ("plain", "isolated")


@dataclass
class Host:
    config: RuntimeConfig
    cells: dict[str, str]  # kind -> cell name
    victim: str  # a third cell the attackers go after
    local_socket: str
    listener: socket.socket


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("contain")
    os.chmod(base, 0o755)  # the setuid test's binary lives below, run by uid 65534
    run_dir = base / "run"
    run_dir.mkdir()
    local_socket = str(run_dir / "local.sock")  # laid out as cellard does (agent.local.endpoint)
    listener = listen_local(local_socket)
    (run_dir / "cellar.sock").write_text("")  # stands for the main socket: must not be reachable
    config = make_runtime_config(str(base), local_endpoint_env={"CELLAR_LOCAL_ENDPOINT": f"unix:{local_socket}"})
    tag = uuid.uuid4().hex[:6]
    cells = {"plain": f"p{tag}", "isolated": f"i{tag}"}
    victim = f"v{tag}"

    async def setup(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(cells["plain"]))
        await c.allocate(CellSpec(cells["isolated"], isolate_process=True, isolate_network=True))
        await c.allocate(CellSpec(victim))
        await c.start(ExecutableSpec(victim, "sleeper", argv=("sleep", "3600")))

    host = Host(config, cells, victim, local_socket, listener)
    try:
        run(config, setup)
        yield host
    finally:
        host.listener.close()  # the one a "restarted cellard" bound last
        destroy_runtime(config)


def listen_local(announced: str) -> socket.socket:
    """A listener where cellard puts the node-local socket: alone in a directory, the announced path
    a symlink to it (replaced, like cellard's, when it exists)."""
    from agent.auth.unixpeer import link_announced, socket_home

    real = socket_home(announced)
    os.makedirs(os.path.dirname(real), mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(real)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(real)
    os.chmod(real, 0o666)
    listener.listen(64)
    link_announced(announced, real)
    return listener


def attack(host: Host, kind: str, script: str, uid: int | None = None, env: dict[str, str] | None = None) -> tuple[str, str, int]:
    """Run ``script`` (sh) as a workload of the ``kind`` cell; its stdout, stderr and exit code."""
    cell = host.cells[kind]
    name = f"a{uuid.uuid4().hex[:8]}"

    async def body(c: RuntimeClient) -> None:
        await c.start(ExecutableSpec(cell, name, command=script, uid=uid, env=tuple((env or {}).items())))
        await wait_exited(c, cell, name, timeout=scaled(30))

    run(host.config, body)
    out, err, exit_info = output(host.config, cell, name)
    return "\n".join(out), "\n".join(err), exit_info["code"]


def syscall_errno(host: Host, kind: str, call: str) -> int:
    """errno of one raw syscall made by a Python workload (0: it succeeded)."""
    script = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"r = {call}\n"
        "print(ctypes.get_errno() if r < 0 else 0)\n"
    )
    out, err, _ = attack(host, kind, f"{PY} -c '{script}'")
    assert out.strip().isdigit(), err
    return int(out.strip())


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def cgroup_file(host: Host, cell: str, name: str) -> str:
    from cells.cgroup import detect

    return os.path.join(detect(host.config.cgroup_root_name).unified_path(cell), name)


# -- what a workload is ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_workload_has_the_default_capabilities_no_new_privs_and_a_seccomp_filter(host: Host, kind: str) -> None:
    out, _, code = attack(host, kind, "grep -E '^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status")
    fields = dict(line.split(":\t") for line in out.splitlines())
    assert code == 0
    assert int(fields["CapEff"], 16) == mask(DEFAULT_CAPS) == int(fields["CapBnd"], 16)
    assert int(fields["CapInh"], 16) == 0 and int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"


# -- the main socket and cellar's trees ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_cellars_run_state_and_log_directories_are_hidden_but_the_local_socket(host: Host, kind: str) -> None:
    c = host.config
    out, err, _ = attack(
        host,
        kind,
        f"ls -A {c.run_dir}; echo --; ls -A {c.state_dir}; echo --; ls -A {c.log_dir}; echo --; "
        f"echo x > {c.run_dir}/cellar.sock; echo x > {c.state_dir}/planted",
    )
    run_listing, state_listing, log_listing = out.split("--")[:3]
    assert run_listing.split() == ["local.d", "local.sock"], out
    assert state_listing.split() == [] and log_listing.split() == []
    assert not os.path.exists(os.path.join(c.state_dir, "planted"))
    assert Path(c.run_dir, "cellar.sock").read_text() == ""


@pytest.mark.parametrize("kind", KINDS)
def test_the_node_local_socket_is_reachable_at_the_address_workloads_are_given(host: Host, kind: str) -> None:
    assert connects(host, kind)


def test_a_socket_recreated_by_a_restarted_cellard_is_reached_from_existing_cells(host: Host) -> None:
    """cellard re-binds the node-local socket at every start: cells allocated before must reach the
    new one (their view binds the socket's directory, not the old socket file)."""
    host.listener.close()
    host.listener = listen_local(host.local_socket)
    for kind in KINDS:
        assert connects(host, kind), kind


def connects(host: Host, kind: str) -> bool:
    script = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(os.environ[\"CELLAR_LOCAL_ENDPOINT\"].removeprefix(\"unix:\"))\n"
        "print(\"connected\")\n"
    )
    out, err, code = attack(host, kind, f"{PY} -c '{script}'")
    assert (out, code) == ("connected", 0), err
    return True


# -- cgroups ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_no_cgroup_file_can_be_written_and_other_cells_are_not_visible(host: Host, kind: str) -> None:
    victim_before = read(cgroup_file(host, host.victim, "cgroup.procs")).split()
    own_pids_max = cgroup_file(host, host.cells[kind], "pids.max")
    own_max = read(own_pids_max) if os.path.exists(own_pids_max) else None
    unified = "/sys/fs/cgroup" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "/sys/fs/cgroup/unified"
    victim_host_path = cgroup_file(host, host.victim, "cgroup.procs")
    out, err, _ = attack(
        host,
        kind,
        f"for f in {unified}/cgroup.procs {unified}/cgroup.subtree_control {unified}/pids.max "
        f"{unified}/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes {victim_host_path}; do "
        'if [ -e "$f" ]; then (echo $$ > "$f") 2>/dev/null && echo "WROTE $f"; else echo "ABSENT $f"; fi; done; '
        f"ls {unified}",
    )
    assert "WROTE" not in out, out
    assert f"ABSENT {victim_host_path}" in out  # only the cell's own directory is mounted
    assert read(cgroup_file(host, host.victim, "cgroup.procs")).split() == victim_before
    if own_max is not None:
        assert read(own_pids_max) == own_max


# -- the kernel -----------------------------------------------------------------------------------

EPERM, ENOENT, ESRCH, EINVAL = 1, 2, 3, 22


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("mount", 'libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)'),
        ("umount a masked path", 'libc.umount2(b"/proc/sys", 2)'),
        ("pivot_root", "libc.syscall(155, b\"/tmp\", b\"/tmp\")"),
        ("init_module", "libc.syscall(175, None, 0, b\"\")"),
        ("finit_module", "libc.syscall(313, 0, b\"\", 0)"),
        ("reboot with a bad magic", "libc.syscall(169, 0, 0, 0, None)"),
        ("unshare a user namespace", "libc.unshare(0x10000000)"),
        ("unshare a mount namespace", "libc.unshare(0x00020000)"),
        ("clock_settime (an invalid time: EINVAL if it got past seccomp)", "libc.syscall(227, 0, (ctypes.c_long*2)(0, -1))"),
        ("bpf", "libc.syscall(321, 0, None, 0)"),
        ("kexec_load (invalid flags)", "libc.syscall(246, 0, 0, None, -1)"),
        ("add_key", 'libc.syscall(248, b"user", b"k", b"v", 1, -4)'),
        ("swapoff", 'libc.syscall(168, b"/nonexistent")'),
    ],
)
def test_privileged_syscalls_are_refused(host: Host, kind: str, what: str, call: str) -> None:
    assert syscall_errno(host, kind, call) == EPERM, what


@pytest.mark.parametrize("kind", KINDS)
def test_unshare_of_a_user_namespace_then_mount_fails(host: Host, kind: str) -> None:
    out, err, code = attack(host, kind, "unshare -U -r sh -c 'mount -t tmpfs none /tmp && echo MOUNTED'")
    assert code != 0 and "MOUNTED" not in out, (out, err)


@pytest.mark.parametrize("kind", KINDS)
def test_ptrace_of_a_host_process_fails(host: Host, kind: str) -> None:
    # The test process itself: root with every capability, outside any cell.
    err = syscall_errno(host, kind, f"libc.ptrace(0x4206, {os.getpid()}, None, None)")  # SEIZE: no stop
    assert err in (EPERM, ESRCH)  # ESRCH: not even visible from the isolated cell's pid namespace
    with open(f"/proc/{os.getpid()}/status") as f:
        assert next(line for line in f if line.startswith("TracerPid:")).split()[1] == "0"


@pytest.mark.parametrize("kind", KINDS)
def test_proc_is_masked_and_read_only(host: Host, kind: str) -> None:
    out, err, _ = attack(
        host,
        kind,
        "head -c 64 /proc/kcore | wc -c; cat /proc/timer_list | wc -c; ls /proc/acpi 2>/dev/null | wc -l; "
        "(echo h > /proc/sysrq-trigger) 2>/dev/null && echo WROTE-SYSRQ; "
        "(echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo WROTE-SYSCTL; "
        "(echo '|/tmp/x' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo WROTE-CORE",
    )
    kcore, timer_list, acpi = (int(x) for x in out.split()[:3])
    assert (kcore, timer_list, acpi) == (0, 0, 0)
    assert "WROTE" not in out
    assert not read("/proc/sys/kernel/core_pattern").startswith("|/tmp/x")


def _suid_capable_dir() -> str:
    repo = str(REPO)
    for candidate in ("/var/tmp", repo):
        if not os.statvfs(candidate).f_flag & os.ST_NOSUID:
            return candidate
    pytest.fail("no directory outside /tmp on a filesystem that honours setuid: the control cannot gain")


@pytest.mark.parametrize("kind", KINDS)
def test_a_setuid_root_binary_grants_nothing(host: Host, kind: str) -> None:
    """A setuid-root copy of ``id`` run by uid 65534: no_new_privs keeps the euid at 65534. The
    control: the same binary run by a privileged executable as uid 65534 does become root."""
    # A directory both cells see (read-only in the isolated one) on a filesystem not mounted nosuid,
    # unlike every writable place of an isolated cell (/tmp, /run, /data): the control must be able to
    # gain. /var/tmp on a host; the v2 VM's /var is a nosuid overlay, its shared repository is not.
    scratch = tempfile.mkdtemp(prefix="cellar-suid-", dir=_suid_capable_dir())
    try:
        os.chmod(scratch, 0o755)
        directory, inside = Path(scratch), f"{scratch}/id"
        binary = directory / "id"
        binary.write_bytes(Path("/usr/bin/id").read_bytes())
        os.chmod(binary, 0o4755)
        assert os.stat(binary).st_mode & stat.S_ISUID
        out, err, _ = attack(host, kind, f"{inside} -u; {inside} -ru", uid=65534)
        assert out.split() == ["65534", "65534"], (out, err)
        cell = host.cells[kind]

        async def control(c: RuntimeClient) -> None:
            await c.start(ExecutableSpec(cell, "suid-control", argv=(inside, "-u"), uid=65534, privileged=True))
            await wait_exited(c, cell, "suid-control")

        run(host.config, control)
        assert output(host.config, cell, "suid-control")[0] == ["0"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_isolated_cells_root_is_read_only(host: Host) -> None:
    out, err, _ = attack(
        host,
        "isolated",
        "for d in /etc /usr /var /usr/local/bin /root; do (echo x > $d/planted-by-cell) 2>/dev/null && echo WROTE $d; done; "
        f"ls -A {host.config.state_dir} | wc -l",
    )
    assert "WROTE" not in out
    for d in ("/etc", "/usr", "/var", "/usr/local/bin", "/root"):
        assert not os.path.exists(f"{d}/planted-by-cell")
    assert out.split()[-1] == "0"


def test_the_isolated_cells_dev_has_no_disks(host: Host) -> None:
    out, _, _ = attack(host, "isolated", "ls /dev")
    assert set(out.split()) <= {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd",
                                "stdin", "stdout", "stderr"}  # fmt: skip


# -- what must still work ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_ordinary_work_still_works(host: Host, kind: str) -> None:
    data = "/data" if kind == "isolated" else "/tmp"
    out, err, code = attack(
        host,
        kind,
        f"echo hi > /tmp/cellar-contained-$$ && cat /tmp/cellar-contained-$$ && rm /tmp/cellar-contained-$$; "
        f"echo data > {data}/d-$$ && rm {data}/d-$$ && echo data-ok; "
        "ls / | wc -l >/dev/null && echo exec-ok; "
        "sh -c 'kill -0 $$' && echo kill-ok; "
        "chown 65534 /tmp && chown 0 /tmp 2>/dev/null; echo chown-done",
    )
    assert out.split() == ["hi", "data-ok", "exec-ok", "kill-ok", "chown-done"], err
    assert code == 0


def test_binding_port_80_and_ping_in_the_cells_netns(host: Host) -> None:
    script = (
        "import socket, struct\n"
        "s = socket.socket(); s.bind((\"0.0.0.0\", 80)); s.listen(); print(\"bound\")\n"
        "r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r.settimeout(5)\n"
        "body = struct.pack(\"!BBHHH\", 8, 0, 0, 1, 1) + b\"cellar\"\n"
        "c = sum(struct.unpack(\"!%dH\" % (len(body) // 2), body)); c = (c >> 16) + (c & 0xFFFF); c = ~(c + (c >> 16)) & 0xFFFF\n"
        "r.sendto(body[:2] + struct.pack(\"!H\", c) + body[4:], (\"127.0.0.1\", 0))\n"
        "while True:\n"
        "    pkt = r.recv(256)\n"
        "    if pkt[20] == 0: print(\"pong\"); break\n"
    )
    out, err, code = attack(host, "isolated", f"{PY} -c '{script}'")
    assert out.split() == ["bound", "pong"], err


def test_a_privileged_executable_keeps_the_hosts_view_and_every_capability(host: Host) -> None:
    cell = host.cells["plain"]

    async def body(c: RuntimeClient) -> None:
        await c.start(
            ExecutableSpec(
                cell, "priv", command="grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; "
                f"ls -A {host.config.run_dir} | sort", privileged=True
            )
        )
        await wait_exited(c, cell, "priv")

    run(host.config, body)
    out, _, _ = output(host.config, cell, "priv")
    fields = dict(line.split(":\t") for line in out if ":\t" in line)
    assert int(fields["CapEff"], 16) == int(read("/proc/self/status").split("CapEff:\t")[1].split()[0], 16)
    assert fields["Seccomp"] == "0" and fields["NoNewPrivs"] == "0"
    assert "cellar.sock" in out and "supervisor.sock" in out


def test_cap_add_and_cap_drop_adjust_the_set(host: Host) -> None:
    cell = host.cells["plain"]

    async def body(c: RuntimeClient) -> None:
        await c.start(
            ExecutableSpec(
                cell, "caps", command="grep '^CapEff:' /proc/self/status",
                cap_add=("NET_ADMIN",), cap_drop=("CHOWN", "NET_RAW"),
            )
        )
        await wait_exited(c, cell, "caps")

    run(host.config, body)
    out, _, _ = output(host.config, cell, "caps")
    want = (DEFAULT_CAPS | {"NET_ADMIN"}) - {"CHOWN", "NET_RAW"}
    assert int(out[0].split()[1], 16) == mask(want)


def test_the_supervisor_and_the_victim_are_unharmed(host: Host) -> None:
    """Run last in the module's order: every attack above left the victim's sleeper alive."""
    async def body(c: RuntimeClient) -> list[str]:
        info = await c.inspect(host.victim)
        return [e.state.value for e in info.executables]

    assert run(host.config, body) == ["running"]


def _a_disk() -> tuple[str, int, int]:
    """A block device of this host: (name, major, minor)."""
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("loop", "ram")):
            continue
        major, minor = (int(x) for x in read(f"/sys/block/{name}/dev").split(":"))
        return name, major, minor
    pytest.fail("no block device on this host")


@pytest.mark.parametrize("kind", KINDS)
def test_the_hosts_disk_cannot_be_opened_even_through_a_new_node(host: Host, kind: str) -> None:
    name, major, minor = _a_disk()
    script = (
        "import errno, os, tempfile\n"
        "def try_open(path):\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_RDONLY)); return \"OPENED\"\n"
        "    except OSError as e:\n"
        "        return errno.errorcode[e.errno]\n"
        f"print(try_open(\"/dev/{name}\"))\n"
        "d = tempfile.mkdtemp(dir=\"/dev/shm\" if os.path.isdir(\"/dev/shm\") else \"/tmp\")\n"
        "node = d + \"/disk\"\n"
        f"os.mknod(node, 0o600 | 0o060000, os.makedev({major}, {minor}))\n"
        "print(try_open(node)); os.unlink(node); os.rmdir(d)\n"
    )
    out, err, _ = attack(host, kind, f"{PY} -c '{script}'")
    direct, via_node = out.split()
    assert direct in ("EPERM", "ENOENT"), err  # ENOENT: the isolated cell's /dev has no disks
    assert via_node in ("EPERM", "EACCES"), err  # EACCES: a nodev mount refuses it before the policy
    assert "OPENED" not in out


def test_default_user_and_a_hidden_key_file(tmp_path: Path) -> None:
    """``[cells] default_user`` runs a Start that names no uid as that user (one that names uid 0
    stays root); a private key kept outside cellar's trees reads as empty in both kinds of cell."""
    key = Path(tempfile.mkdtemp(prefix="cellar-key-", dir="/var/tmp")) / "server.key"
    key.write_text("PRIVATE KEY")
    os.chmod(key.parent, 0o755)
    config = make_runtime_config(str(tmp_path), default_uid=65534, default_gid=65534, extra_hidden_paths=[str(key)])

    async def body(c: RuntimeClient) -> None:
        for cell, iso in (("dp", False), ("di", True)):
            await c.allocate(CellSpec(cell, isolate_process=iso))
            await c.start(ExecutableSpec(cell, "who", command=f"id -u; id -g; cat {key} | wc -c"))
            await c.start(ExecutableSpec(cell, "root", argv=("id", "-u"), uid=0))
            await wait_exited(c, cell, "who")
            await wait_exited(c, cell, "root")

    try:
        run(config, body)
        for cell in ("dp", "di"):
            assert output(config, cell, "who")[0] == ["65534", "65534", "0"], cell
            assert output(config, cell, "root")[0] == ["0"], cell
    finally:
        destroy_runtime(config)
        shutil.rmtree(key.parent)
