"""ctypes namespace syscalls, exercised where the supervisor uses them: in a forked child before exec.

The test process itself never changes namespace; each effect is read back from /proc or from a
program exec'd inside the new namespace.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time

import pytest

from cells import namespaces as ns


def test_flag_values_match_the_kernel_abi() -> None:
    assert ns.CLONE_NEWNET == 0x40000000
    assert ns.CLONE_NEWPID == 0x20000000
    assert ns.CLONE_NEWNS == 0x00020000
    assert ns.NS_NAMES[ns.CLONE_NEWUTS] == "uts"


def test_ns_inode_and_nspid_of_self() -> None:
    assert ns.ns_inode("self", "net") == os.stat("/proc/self/ns/net").st_ino
    assert ns.nspid(os.getpid()) == os.getpid()  # the test runs in the initial pid namespace


def test_errors_carry_errno() -> None:
    with pytest.raises(OSError) as info:
        ns.setns(-1, ns.CLONE_NEWNET)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        ns.unshare(0x1)  # not a namespace flag
    assert info.value.errno == errno.EINVAL


@pytest.mark.root
def test_unshare_uts_and_sethostname_in_child() -> None:
    def enter() -> None:
        ns.unshare(ns.CLONE_NEWUTS)
        ns.sethostname("cellar-test-uts")

    out = subprocess.run(["hostname"], preexec_fn=enter, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "cellar-test-uts"
    assert socket.gethostname() != "cellar-test-uts"


@pytest.mark.root
def test_setns_joins_another_process_namespaces() -> None:
    def isolate() -> None:
        ns.unshare(ns.CLONE_NEWUTS | ns.CLONE_NEWNET | ns.CLONE_NEWIPC)
        ns.sethostname("cellar-test-join")

    holder = subprocess.Popen(["sleep", "30"], preexec_fn=isolate)
    try:
        deadline = time.monotonic() + 5
        while ns.ns_inode(holder.pid, "uts") == ns.ns_inode("self", "uts") and time.monotonic() < deadline:
            time.sleep(0.005)  # preexec_fn runs after the fork: wait until it did
        assert ns.ns_inode(holder.pid, "net") != ns.ns_inode("self", "net")
        fds = {name: ns.open_ns(holder.pid, name) for name in ("uts", "net", "ipc")}
        try:

            def join() -> None:
                ns.setns(fds["uts"], ns.CLONE_NEWUTS)
                ns.setns(fds["net"], ns.CLONE_NEWNET)
                ns.setns(fds["ipc"], 0)

            script = "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"
            out = subprocess.run(
                ["sh", "-c", script], preexec_fn=join, capture_output=True, text=True, check=True
            ).stdout.split()
        finally:
            for fd in fds.values():
                os.close(fd)
        assert out[0] == "cellar-test-join"
        assert out[1] == f"net:[{ns.ns_inode(holder.pid, 'net')}]"
        assert out[2] == f"ipc:[{ns.ns_inode(holder.pid, 'ipc')}]"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.root
def test_unshare_pid_makes_first_child_pid_1() -> None:
    def enter() -> None:
        ns.unshare(ns.CLONE_NEWPID)

    # unshare(CLONE_NEWPID) applies to the children of the caller: the shell's first child is pid 1.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], preexec_fn=enter)
    child = 0
    try:
        children = ""
        deadline = time.monotonic() + 5
        while not children and time.monotonic() < deadline:
            with open(f"/proc/{shell.pid}/task/{shell.pid}/children") as f:
                children = f.read().strip()
            time.sleep(0.005)
        child = int(children.split()[0])
        assert ns.nspid(child) == 1
        assert ns.ns_inode(child, "pid") != ns.ns_inode("self", "pid")
    finally:
        if child:
            os.kill(child, signal.SIGKILL)  # pid 1 of the namespace: takes the namespace down
        shell.kill()
        shell.wait()


@pytest.mark.root
def test_mount_in_private_mount_namespace(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(str(tmp_path), "mnt")
    os.mkdir(target)

    def enter() -> None:
        ns.unshare(ns.CLONE_NEWNS)
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)  # keep our mounts out of the host
        ns.mount("tmpfs", target, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "size=1m")

    out = subprocess.run(
        ["sh", "-c", f"grep ' {target} ' /proc/self/mounts; touch {target}/x"],
        preexec_fn=enter,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[:3] == ["tmpfs", target, "tmpfs"]
    assert not os.path.ismount(target)
    assert os.listdir(target) == []  # the file went to the child's tmpfs


@pytest.mark.root
def test_umount_detach_in_child(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(str(tmp_path), "mnt")
    os.mkdir(target)

    def enter() -> None:
        ns.unshare(ns.CLONE_NEWNS)
        ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
        ns.mount("tmpfs", target, "tmpfs", 0)
        ns.umount(target, ns.MNT_DETACH)

    result = subprocess.run(
        ["grep", "-c", f" {target} ", "/proc/self/mounts"], preexec_fn=enter, capture_output=True, text=True
    )
    assert result.stdout.strip() == "0"
