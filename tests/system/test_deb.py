"""The Debian package on a fresh Debian root: install, start, run a workload, upgrade, remove, purge.

The root is a debootstrap of bookworm (minbase + python3), cached as a tarball by
packaging/debian-root.sh under /var/cache/cellar-ci (the first run builds it from Debian's archive,
~45 s; later runs extract it in seconds). It is a chroot with the host's /proc, /sys and /dev and a
private /run: no systemd runs there, so postinst prints the documented fallback and the test starts
cellard with it (/usr/lib/cellar/cellard-service). cellard in the chroot uses a unique cgroup root and
netns prefix (written into the conffile, kept by dpkg across the upgrade); the finalizer kills every
process whose root is the chroot, unmounts, and destroys the cgroups, also after a failure.

Slow (a package build, and a debootstrap on first use: ~1 min with the cached root, ~3 min without),
so a separate command, not part of the default suite: ``CELLAR_TEST_DEB=1 .venv/bin/pytest
tests/system/test_deb.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cells.config import RuntimeConfig
from tests.support import REPO
from tests.support.cleanup import destroy_runtime

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    # The whole test, fixtures included: ~1 min warm, ~2-3 min with a debootstrap; a hang fails it and
    # the finalizer still cleans up (each subprocess has its own timeout too).
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("CELLAR_TEST_DEB") != "1",
                       reason="1-3 min: run with CELLAR_TEST_DEB=1 (builds and installs the Debian package)"),
]



def run(argv: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own session. On timeout (or pytest-timeout's interrupt) the whole process
    group goes, not only the direct child: SIGTERM first, so shell scripts run their cleanup traps."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          text=True, start_new_session=True) as child:
        try:
            out, err = child.communicate(timeout=timeout)
        except BaseException as exc:
            out, err = kill_group(child)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise AssertionError(f"{argv} did not finish within {timeout} s:\n{out}\n{err}") from None
            raise
    proc = subprocess.CompletedProcess(argv, child.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_group(child: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM the child's process group, SIGKILL it after 10 s; what the child had printed."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.communicate(timeout=wait)
    return "", ""


@dataclass
class Chroot:
    path: Path
    token: str

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
        try:
            return run(["chroot", str(self.path), *env, "/bin/sh", "-c", script], timeout=timeout, check=check)
        except AssertionError as exc:
            log = self.path / "var/log/cellar/cellard.log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no cellard.log)"
            raise AssertionError(f"{exc}\ncellard.log:\n{tail}") from None

    def pids(self) -> list[int]:
        """Processes whose root directory is this chroot."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/root") == str(self.path):
                        out.append(int(entry))
        return out

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(state_dir=str(self.path / "var/lib/cellar"), run_dir=str(self.path / "run/cellar"),
                             log_dir=str(self.path / "var/lib/cellar/logs"), cgroup_root_name=self.token,
                             netns_prefix=self.token + "-")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """0.1.0 built by packaging/build-deb.sh; 0.1.1 the same tree with the next version in its control
    file (what build-deb.sh would make of this checkout again, without a second pip install)."""
    out = tmp_path_factory.mktemp("debs")
    # zstd, not the default xz: the same package ~40 s sooner (compression is dpkg-deb's business).
    # TMPDIR: whatever an interrupted build leaves stays in pytest's own (pruned) temp tree.
    (out / "tmp").mkdir()
    first = Path(run(["env", "CELLAR_DEB_COMPRESSION=zstd", f"TMPDIR={out / 'tmp'}",
                      str(REPO / "packaging/build-deb.sh"), "0.1.0", str(out)],
                     timeout=600).stdout.strip().splitlines()[-1])
    tree = out / "tree"
    run(["dpkg-deb", "-R", str(first), str(tree)])
    control = tree / "DEBIAN/control"
    control.write_text(control.read_text().replace("Version: 0.1.0\n", "Version: 0.1.1\n"))
    second = out / "cellar_0.1.1_amd64.deb"
    run(["dpkg-deb", "-Zzstd", "--root-owner-group", "--build", str(tree), str(second)])
    shutil.rmtree(tree)
    return {"0.1.0": first, "0.1.1": second}


@pytest.fixture
def chroot() -> Iterator[Chroot]:
    tarball = run([str(REPO / "packaging/debian-root.sh")], timeout=900).stdout.strip().splitlines()[-1]
    path = Path(tempfile.mkdtemp(prefix="cellar-deb-", dir="/var/tmp")).resolve()
    root = Chroot(path, f"cellar-test-{secrets.token_hex(4)}")
    try:
        run(["tar", "-C", str(path), "-xzf", tarball])
        # The root a chroot'ed cellard sees must be a mount point, as on a real host: cells' mount
        # views make it private in their namespace (cells.mountview), which needs a mount's root.
        run(["mount", "--bind", str(path), str(path)])
        run(["mount", "--make-private", str(path)])
        for target, argv in (
            ("proc", ["mount", "-t", "proc", "proc"]),
            ("sys", ["mount", "--rbind", "/sys"]),
            ("dev", ["mount", "--rbind", "/dev"]),
            ("run", ["mount", "-t", "tmpfs", "tmpfs"]),
            ("tmp", ["mount", "-t", "tmpfs", "tmpfs"]),
        ):
            run([*argv, str(path / target)])
            if target in ("sys", "dev"):  # unmounting them later must not propagate to the host
                run(["mount", "--make-rslave", str(path / target)])
        yield root
    finally:
        for _ in range(10):
            pids = root.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.2)
        try:
            destroy_runtime(root.runtime_config())
        finally:
            unmount_all_under(path)
            if not mounts_under(path):
                subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` in this mount namespace."""
    prefix = str(path) + "/"
    points = (line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines())
    return [p for p in points if p.startswith(prefix)]


def unmount_all_under(path: Path) -> None:
    """Lazily unmount everything below ``path``, also what an interrupted setup mounted; /sys and /dev
    binds are made slaves first (again), so no unmount propagates to the host's own mounts."""
    for top in ("sys", "dev"):
        if str(path / top) in mounts_under(path):
            subprocess.run(["mount", "--make-rslave", str(path / top)], capture_output=True)
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)  # the chroot's own bind (if made)


def test_install_upgrade_remove_purge(debs: dict[str, Path], chroot: Chroot) -> None:
    for deb in debs.values():
        shutil.copy(deb, chroot.path / "tmp" / deb.name)
    first, second = (f"/tmp/{debs[v].name}" for v in ("0.1.0", "0.1.1"))

    # Install: no systemd here, so postinst prints the documented fallback instead of starting.
    out = chroot.sh(f"dpkg -i {first}").stdout
    assert "/usr/lib/cellar/cellard-service start" in out, out
    assert "cellar" in chroot.sh("getent group cellar").stdout
    assert chroot.sh("test -d /run/cellar && test -d /var/lib/cellar/logs && echo ok").stdout.strip() == "ok"
    assert chroot.sh("readlink /usr/sbin/cellard /usr/bin/cellar").stdout.split() == [
        "/opt/cellar/bin/cellard", "/opt/cellar/bin/cellar"]
    # The operator's edit of the conffile: this test's own cgroup root and netns prefix, and any free
    # loopback port for the node-local endpoint (the chroot shares the host's network namespace).
    conf = chroot.path / "etc/cellar/cellard.toml"
    edited = conf.read_text().replace(
        "[cells]\n", f'[cells]\ncgroup_root = "{chroot.token}"\nnetns_prefix = "{chroot.token}-"\n', 1)
    conf.write_text(edited.replace("[local]\n", '[local]\ntcp_listen = "127.0.0.1:0"\n', 1))

    chroot.sh("/usr/lib/cellar/cellard-service start")
    assert "SERVING" in chroot.sh("cellar health").stdout
    check_saver_man_pages_and_completion(chroot)
    cellard1 = int((chroot.path / "run/cellar/cellard.pid").read_text())
    chroot.sh("cellar cell allocate web && cellar start web loop --sh 'while :; do echo tick; sleep 0.2; done'")
    ps = chroot.sh("cellar -o json ps").stdout
    assert '"loop"' in ps and "running" in ps, ps
    workload = workload_pid(chroot)

    # Upgrade: postinst restarts cellard (new pid), the workload keeps running, logs keep coming.
    out = chroot.sh(f"dpkg -i {second}").stdout
    assert "restarting cellard" in out, out
    cellard2 = int((chroot.path / "run/cellar/cellard.pid").read_text())
    assert cellard2 != cellard1 and not pid_alive(cellard1)
    assert "SERVING" in chroot.sh("cellar health").stdout
    assert "0.1.1" in chroot.sh("dpkg-query -W -f '${Version}' cellar").stdout
    assert pid_alive(workload) and workload_pid(chroot) == workload
    assert "tick" in chroot.sh("cellar logs web/loop --tail 1").stdout
    assert conf.read_text().count(chroot.token) == 2 and "127.0.0.1:0" in conf.read_text()  # edits kept

    # Remove: cellard, the supervisor and the workload are gone; state stays until purge.
    chroot.sh("dpkg -r cellar")
    assert not pid_alive(workload)
    assert chroot.pids() == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in chroot.pids()]
    assert not os.path.exists(chroot.path / "usr/sbin/cellard")
    assert (chroot.path / "var/lib/cellar").is_dir() and conf.exists()
    assert not os.path.isdir(f"/sys/fs/cgroup/unified/{chroot.token}/web")
    chroot.sh("dpkg --purge cellar")
    assert not (chroot.path / "var/lib/cellar").exists() and not conf.exists()


def check_saver_man_pages_and_completion(chroot: Chroot) -> None:
    """cellar-saver on PATH and its unit (disabled) starting it; man pages; bash/zsh/fish completion."""
    import json
    import re
    import shlex
    import socket

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert chroot.sh("command -v cellar-saver").stdout.strip() == "/usr/bin/cellar-saver"
    assert "--database" in chroot.sh("cellar-saver --help").stdout
    # psycopg (the postgres extra) is in the package: a PostgreSQL DSN is tried, not refused for want of a driver.
    out = chroot.sh("cellar-saver --insecure --database postgresql://x@127.0.0.1:1/x 2>&1; true", check=False).stdout
    assert "Connection refused" in out and "cellar[postgres]" not in out, out
    unit = (chroot.path / "lib/systemd/system/cellar-saver.service").read_text()
    assert not (chroot.path / "etc/systemd/system/multi-user.target.wants/cellar-saver.service").exists()  # disabled
    # No systemd in the chroot: start the unit's ExecStart as systemd would (EnvironmentFile read, $VAR
    # split on whitespace), with the operator's edit of /etc/default/cellar-saver (a conffile).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    default = chroot.path / "etc/default/cellar-saver"
    assert "CELLAR_SAVER_OPTS=" in default.read_text()
    default.write_text(f'CELLAR_SAVER_OPTS="--insecure --listen 127.0.0.1:{port} --database /var/lib/cellar/saver.sqlite"\n')
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    (env_file,) = re.findall(r"^EnvironmentFile=-?(.+)$", unit, re.MULTILINE)
    # (sh splits the unquoted $CELLAR_SAVER_OPTS on whitespace, as systemd does)
    chroot.sh(f". {shlex.quote(env_file)}; {exec_start} </dev/null >/var/log/cellar/saver.log 2>&1 &")
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        while True:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="pb.WorkerSaver"),
                                                             timeout=2)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, (chroot.path / "var/log/cellar/saver.log").read_text()
                time.sleep(0.2)
    assert (chroot.path / "var/lib/cellar/saver.sqlite").exists()
    chroot.sh("kill $(pidof -x cellar-saver || pgrep -f /usr/bin/cellar-saver) 2>/dev/null; true", check=False)
    for pid in chroot.pids():  # what is left of it (the chroot may lack pgrep)
        with contextlib.suppress(OSError):
            if b"cellar-saver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)

    # Man pages, rendered by the host's man (the minbase chroot has no man-db).
    for page in ("man1/cellar.1.gz", "man8/cellard.8.gz", "man8/cellar-saver.8.gz"):
        path = chroot.path / "usr/share/man" / page
        rendered = run(["man", "-l", str(path)], timeout=60).stdout
        assert Path(page).name.split(".")[0].upper() in rendered, page
    assert "cellar cell ls" in run(["man", "-l", str(chroot.path / "usr/share/man/man1/cellar.1.gz")]).stdout

    # Completion: the bash script sources cleanly and completes a command; zsh and fish files are there.
    out = chroot.sh("bash -c 'set -e; . /usr/share/bash-completion/completions/cellar; complete -p cellar; "
                    "COMP_WORDS=(cellar ce); COMP_CWORD=1; _cellar_completion cellar; echo \"${COMPREPLY[*]}\"'").stdout
    assert "complete" in out and "cell" in out.splitlines()[-1].split(), out
    assert "#compdef cellar" in (chroot.path / "usr/share/zsh/vendor-completions/_cellar").read_text()
    assert "complete" in (chroot.path / "usr/share/fish/vendor_completions.d/cellar.fish").read_text()
    json.loads((chroot.path / "usr/share/doc/cellar/grafana/cellar.json").read_text())  # the dashboard ships


def workload_pid(chroot: Chroot) -> int:
    import json

    rows = json.loads(chroot.sh("cellar -o json ps").stdout)
    rows = rows if isinstance(rows, list) else rows.get("executables", rows)
    row = next(r for r in rows if r.get("name") == "loop" or r.get("executable") == "loop")
    pid = int(row.get("pid") or row.get("host_pid"))
    assert pid_alive(pid)
    return pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True
