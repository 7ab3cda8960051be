"""The device allow-list, written as the attacks a contained workload would try.

The attacker is root with Docker's 14 default capabilities (MKNOD and DAC_OVERRIDE among them) in a
cgroup that has the policy; it tries to open the host's disk through /dev and through a node it made
itself, the kernel log through a node it made, and to take the policy off. A sibling cgroup without the policy does
the same opens as the control: they succeed there, so every EPERM is the policy's doing.

Processes join only the unified-hierarchy directory (on a hybrid host, nothing in v1): that the
kernel applies the cgroup2 device program to them on a hybrid host is what these tests prove there.
The cgroups live under the ``backend`` fixture's ``cellar-test-<hex>`` root, removed afterwards with
whatever is attached to them.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest

from cells.capabilities import DEFAULT_CAPS, mask
from cells.cgroup import CgroupBackend
from cells.devices import (
    DEFAULT_RULES,
    Rule,
    attached_program_ids,
    is_restricted,
    program,
    restrict,
)
from cells.errors import RuntimeFailure
from tests.support import REPO
from tests.support.cgroups import pure_v2
from tests.support.timeouts import scaled

# ---------------------------------------------------------------------------------------------
# The program, run by a tiny interpreter of the opcodes it uses (no root needed)
# ---------------------------------------------------------------------------------------------

KIND = {"b": 1, "c": 2}
ACCESS = {"m": 1, "r": 2, "w": 4}


def run_program(prog: bytes, kind: str, access: str, major: int, minor: int) -> int:
    """What the kernel would return for this request: 1 allow, 0 deny."""
    ctx = struct.pack("<III", sum(ACCESS[a] for a in access) << 16 | KIND[kind], major, minor)
    reg = [0] * 11
    pc = 0
    for _ in range(len(prog) // 8):  # no backward jumps: at most one pass
        code, regs, off, imm = struct.unpack_from("<BBhi", prog, pc * 8)
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if code == 0x61:
            reg[dst] = struct.unpack_from("<I", ctx, reg[src] + off)[0]
        elif code == 0x54:
            reg[dst] = reg[dst] & imm & 0xFFFFFFFF
        elif code == 0x74:
            reg[dst] = (reg[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xBC:
            reg[dst] = reg[src] & 0xFFFFFFFF
        elif code == 0xB4:
            reg[dst] = imm & 0xFFFFFFFF
        elif code == 0x55:
            pc += off if reg[dst] != imm else 0
        elif code == 0x5D:
            pc += off if reg[dst] != reg[src] else 0
        elif code == 0x95:
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc - 1}")
        assert off >= 0 and 0 <= pc < len(prog) // 8
    raise AssertionError("ran off the end")


@pytest.mark.parametrize(("kind", "access", "major", "minor", "allowed"), [
    ("b", "r", 254, 0, False),  # the host's virtio disk
    ("b", "w", 8, 0, False),  # sda
    ("b", "rw", 7, 0, False),  # loop0
    ("b", "m", 254, 0, True),  # mknod of any node is allowed ...
    ("c", "m", 1, 1, True),
    ("c", "r", 1, 1, False),  # ... opening /dev/mem is not
    ("c", "rm", 1, 1, False),  # a partial match is no match
    ("c", "rw", 1, 3, True),  # null
    ("c", "rw", 1, 5, True),  # zero
    ("c", "w", 1, 7, True),  # full
    ("c", "r", 1, 8, True),  # random
    ("c", "r", 1, 9, True),  # urandom
    ("c", "rw", 5, 0, True),  # tty
    ("c", "rw", 5, 1, True),  # console
    ("c", "rw", 5, 2, True),  # ptmx
    ("c", "rw", 136, 7, True),  # pts/7
    ("c", "rw", 10, 200, True),  # net/tun
    ("c", "rw", 10, 229, False),  # fuse: Docker denies it explicitly
    ("c", "r", 1, 11, False),  # kmsg
    ("c", "rw", 4, 0, False),  # tty0
    ("c", "rw", 3, 0, False),  # a block major as char is still another device
])
def test_program_decisions(kind: str, access: str, major: int, minor: int, allowed: bool) -> None:
    assert run_program(program(), kind, access, major, minor) == int(allowed)


def test_program_matches_the_rules_everywhere() -> None:
    """Every combination over a grid of devices agrees with the rules read as v1 ``devices.allow`` lines."""
    prog = program()

    def by_rules(kind: str, access: str, major: int, minor: int) -> bool:
        return any(r.kind == kind and r.major in (None, major) and r.minor in (None, minor)
                   and set(access) <= set(r.access) for r in DEFAULT_RULES)

    for kind in "bc":
        for access in ("m", "r", "w", "rw", "rm", "wm", "rwm"):
            for major in (0, 1, 3, 4, 5, 7, 8, 10, 136, 254, 4095):
                for minor in (0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 229, 1 << 19):
                    expected = by_rules(kind, access, major, minor)
                    assert run_program(prog, kind, access, major, minor) == int(expected), (kind, access, major, minor)


def test_default_rules_are_dockers() -> None:
    assert [str(r) for r in DEFAULT_RULES] == [
        "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm",
    ]


def test_program_has_runcs_shape() -> None:
    """runc's devicefilter_test.go: 6 prologue instructions, then its built-in list (ours without the
    console, which moby adds) compiles to 64 instructions in all."""
    runc_builtin = tuple(r for r in DEFAULT_RULES if (r.major, r.minor) != (5, 1))
    assert len(program(runc_builtin)) == 64 * 8
    assert len(program(())) == 8 * 8  # prologue + "return 0"
    def insn(code: int, dst: int, src: int, off: int, imm: int) -> bytes:
        return struct.pack("<BBhi", code, src << 4 | dst, off, imm)

    assert program()[:6 * 8] == b"".join([
        insn(0x61, 2, 1, 0, 0), insn(0x54, 2, 0, 0, 0xFFFF),  # r2 = type
        insn(0x61, 3, 1, 0, 0), insn(0x74, 3, 0, 0, 16),  # r3 = access
        insn(0x61, 4, 1, 4, 0), insn(0x61, 5, 1, 8, 0),  # r4 = major, r5 = minor
    ])


@pytest.mark.parametrize("rule", [Rule("a", None, None, "rwm"), Rule("c", 1, 3, ""), Rule("c", 1, 3, "rx")])
def test_bad_rules_are_refused(rule: Rule) -> None:
    with pytest.raises(ValueError, match="bad device rule"):
        program((rule,))


# ---------------------------------------------------------------------------------------------
# The real kernel (root): attacks from a cgroup with the policy, controls from one without
# ---------------------------------------------------------------------------------------------

#: Run in the child: drop to Docker's default capabilities, then try each probe and report
#: ``{name: "ok" | errno name | "ok:<detail>"}``.
PROBE = r"""
import ctypes, errno, json, os, stat, struct, sys
caps, probes = int(sys.argv[1]), json.loads(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
last = int(open("/proc/sys/kernel/cap_last_cap").read())
for cap in range(last + 1):
    if not caps >> cap & 1 and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit(f"PR_CAPBSET_DROP {cap}: errno {ctypes.get_errno()}")
lo, hi = caps & 0xFFFFFFFF, caps >> 32
if libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)(lo, lo, 0, hi, hi, 0)) != 0:
    sys.exit(f"capset: errno {ctypes.get_errno()}")
out = {}
for name, op, path, arg in probes:
    try:
        if op == "mknod":
            kind, major, minor = arg
            os.mknod(path, 0o600 | (stat.S_IFBLK if kind == "b" else stat.S_IFCHR), os.makedev(major, minor))
            out[name] = "ok"
        elif op == "bpf_get_fd_by_id":  # take the policy off: first get the attached program's fd
            attr = ctypes.create_string_buffer(struct.pack("<III", arg, 0, 0))
            rc = libc.syscall(321, 13, attr, len(attr))
            if rc < 0:
                raise OSError(ctypes.get_errno(), "bpf")
            out[name] = "ok"
        else:
            flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[op]
            fd = os.open(path, flags | os.O_CLOEXEC)
            try:
                detail = os.read(fd, 8).hex() if arg == "read" else ""
            finally:
                os.close(fd)
            out[name] = "ok" + (":" + detail if detail else "")
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""

Probe = tuple[str, str, str, object]
Probes = Callable[[str, list[Probe]], dict[str, str]]


def host_disk() -> tuple[str, int, int]:
    """``(/dev/<name>, major, minor)`` of a block device this test process can open read-only: the
    control must succeed where the attack fails. Real disks first, loop/ram/zram devices next. (On the
    CI machine its environment denies even root the open of /dev/vda, with EPERM: loop0 it is there.)"""
    names = sorted(os.listdir("/sys/block"), key=lambda n: n.startswith(("loop", "ram", "zram", "nbd")))
    for name in names:
        node = f"/dev/{name}"
        try:
            os.close(os.open(node, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            continue
        with open(f"/sys/block/{name}/dev") as f:
            major, minor = f.read().strip().split(":")
        return node, int(major), int(minor)
    pytest.fail(f"no block device here that root can open read-only (/sys/block: {names})")


@pytest.fixture
def probe() -> Probes:
    """``probe(unified_dir, probes)``: a child that joins ``unified_dir`` before exec and runs PROBE."""

    def run(cgroup_dir: str, probes: list[Probe]) -> dict[str, str]:
        procs = os.path.join(cgroup_dir, "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as f:
                f.write("0")

        result = subprocess.run(
            [sys.executable, "-c", PROBE, str(mask(DEFAULT_CAPS)), json.dumps(probes)],
            preexec_fn=join, capture_output=True, text=True, timeout=scaled(30), cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return run


@pytest.fixture
def cells(backend: CgroupBackend) -> tuple[str, str, str]:
    """``(cell, leaf of the cell, sibling)`` unified dirs; only the cell has the policy."""
    backend.create("jail")
    backend.create("jail/exe.attacker")
    backend.create("free")
    jail = backend.unified_path("jail")
    restrict(jail)
    return jail, backend.unified_path("jail/exe.attacker"), backend.unified_path("free")


@pytest.mark.root
def test_workload_cannot_open_the_host_disk(
    backend: CgroupBackend, cells: tuple[str, str, str], probe: Probes
) -> None:
    _jail, leaf, free = cells
    # A process in the restricted directory itself, too (one without children: on pure v2 a cgroup with
    # children and controllers takes no processes), besides one in an executable's leaf below a cell.
    backend.create("solo")
    solo = backend.unified_path("solo")
    restrict(solo)
    disk, _major, _minor = host_disk()
    attack = [("read", "r", disk, "read"), ("write", "w", disk, None), ("readwrite", "rw", disk, None)]
    for cgroup in (leaf, solo):
        assert probe(cgroup, attack) == {"read": "EPERM", "write": "EPERM", "readwrite": "EPERM"}, cgroup
    # Control: the same root, same capabilities, no policy: the disk opens (read-only only, of course).
    assert probe(free, [("read", "r", disk, "read")])["read"].startswith("ok")


@pytest.mark.root
def test_workload_cannot_open_a_disk_node_it_made(cells: tuple[str, str, str], probe: Probes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    jail, leaf, free = cells
    _disk, major, minor = host_disk()
    blk, ctl = str(tmp_path / "disk"), str(tmp_path / "loop-control")
    got = probe(leaf, [
        ("mknod_disk", "mknod", blk, ["b", major, minor]),  # Docker allows mknod (m) ...
        ("open_disk", "r", blk, "read"),  # ... but never the open
        ("mknod_ctl", "mknod", ctl, ["c", 10, 237]),  # a char device off the list, openable without caps
        ("open_ctl", "r", ctl, None),
    ])
    assert got == {"mknod_disk": "ok", "open_disk": "EPERM", "mknod_ctl": "ok", "open_ctl": "EPERM"}
    # Control: the nodes it made are real (tmp is not nodev): the same opens pass the device check without
    # the policy (a kernel without the loop driver answers ENODEV, after the check).
    got = probe(free, [("open_disk", "r", blk, "read"), ("open_ctl", "r", ctl, None)])
    assert got["open_disk"].startswith("ok") and got["open_ctl"] in ("ok", "ENODEV"), got


@pytest.mark.root
def test_allowed_devices_work(cells: tuple[str, str, str], probe: Probes) -> None:
    _jail, leaf, _free = cells
    probes: list[Probe] = [
        ("null", "rw", "/dev/null", None),
        ("zero", "r", "/dev/zero", "read"),
        ("urandom", "rw", "/dev/urandom", "read"),
        ("random", "r", "/dev/random", None),
        ("full", "w", "/dev/full", None),
    ]
    if os.path.exists("/dev/ptmx"):
        probes.append(("ptmx", "rw", "/dev/ptmx", None))
    got = probe(leaf, probes)
    assert got.pop("zero") == "ok:" + "00" * 8
    assert got.pop("urandom").startswith("ok:")
    assert set(got.values()) == {"ok"}, got


@pytest.mark.root
def test_workload_cannot_take_the_policy_off(cells: tuple[str, str, str], probe: Probes) -> None:
    """Detaching a multi-attached program takes its fd; with Docker's capabilities there is no way to it."""
    jail, leaf, _free = cells
    (prog_id,) = attached_program_ids(jail)
    assert probe(leaf, [("fd", "bpf_get_fd_by_id", "", prog_id)]) == {"fd": "EPERM"}
    assert attached_program_ids(jail) == [prog_id]


@pytest.mark.root
def test_sibling_without_policy_is_unaffected(cells: tuple[str, str, str], probe: Probes) -> None:
    _jail, _leaf, free = cells
    assert probe(free, [("null", "rw", "/dev/null", None)]) == {"null": "ok"}
    assert not is_restricted(free) and attached_program_ids(free) == []


@pytest.mark.root
def test_restrict_is_idempotent_and_queryable(backend: CgroupBackend) -> None:
    backend.create("cell")
    backend.create("cell/exe.x")
    cell = backend.unified_path("cell")
    assert not is_restricted(cell)
    restrict(cell)
    restrict(cell)  # reconcile calls it again: still one program
    assert is_restricted(cell) and len(attached_program_ids(cell)) == 1
    # Attached to the cell, inherited (not attached) by its leaves.
    assert not is_restricted(backend.unified_path("cell/exe.x"))


@pytest.mark.root
def test_restrict_refuses_what_is_not_a_cgroup2_directory(backend: CgroupBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeFailure, match="not a directory of a cgroup2 hierarchy"):
        restrict(str(tmp_path))
    with pytest.raises(RuntimeFailure, match="cannot open cgroup"):
        restrict(str(tmp_path / "missing"))
    if not pure_v2():  # a v1 directory of the same cell is no target either
        backend.create("cell")
        v1 = os.path.join("/sys/fs/cgroup/memory", os.path.basename(backend.root), "cell")
        assert os.path.isdir(v1)
        with pytest.raises(RuntimeFailure, match="cgroup2"):
            restrict(v1)
