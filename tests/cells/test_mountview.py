"""A process-isolated cell's filesystem: bind mounts, --rootfs, /data kept or not (root, real kernel).

The attacks on the view (writes to the host, cellar's trees, cgroups, /proc) are in
tests/security/test_containment.py; here what an operator asks for, and the rootfs symlink trap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cells.client import RuntimeClient
from cells.config import RuntimeConfig
from cells.errors import InvalidArgument, RuntimeFailure
from cells.spec import CellSpec, ExecutableSpec, Mount
from tests.cells.test_runtime import output, run, wait_exited

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def config(shared_runtime_config: RuntimeConfig) -> RuntimeConfig:
    return shared_runtime_config


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(f"/var/tmp/cellar-mv-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sh(config: RuntimeConfig, spec: CellSpec, script: str, free: bool = True) -> tuple[list[str], list[str], int]:
    """Allocate ``spec``, run ``script`` in it, (optionally) free it; stdout, stderr, exit code."""

    async def body(c: RuntimeClient) -> None:
        await c.allocate(spec)
        try:
            await c.start(ExecutableSpec(spec.name, "sh", command=script))
            await wait_exited(c, spec.name, "sh")
        finally:
            if free:
                await c.free(spec.name, grace_s=0)

    run(config, body)
    out, err, exit_info = output(config, spec.name, "sh")
    return out, err, exit_info["code"]


def test_bind_mounts_read_write_and_read_only(config: RuntimeConfig, scratch: Path) -> None:
    (scratch / "rw").mkdir()
    (scratch / "ro").mkdir()
    (scratch / "ro" / "given").write_text("from the host\n")
    spec = CellSpec(
        f"m{uuid.uuid4().hex[:8]}",
        isolate_process=True,
        mounts=(Mount(str(scratch / "rw"), "/out"), Mount(str(scratch / "ro"), "/tmp/in", read_only=True)),
    )
    out, err, _ = sh(
        config, spec, "echo result > /out/r && echo wrote; cat /tmp/in/given; (echo x > /tmp/in/x) 2>/dev/null || echo ro"
    )
    assert out == ["wrote", "from the host", "ro"], err
    assert (scratch / "rw" / "r").read_text() == "result\n"
    assert not (scratch / "ro" / "x").exists()


def test_a_mount_of_a_missing_source_is_invalid_and_leaves_nothing(config: RuntimeConfig) -> None:
    name = f"m{uuid.uuid4().hex[:8]}"

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(name, isolate_process=True, mounts=(Mount("/nonexistent/cellar", "/x"),)))

    with pytest.raises(InvalidArgument, match=r"cell.mounts\[0\].source"):
        run(config, body)
    assert not (Path(config.data_dir) / name).exists()


def _minimal_rootfs(root: Path) -> None:
    """/bin/sh, cat, ls and the libraries they need, copied (no symlinks into the host)."""
    for binary in ("/bin/sh", "/bin/cat", "/bin/ls"):
        real = os.path.realpath(binary)
        (root / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, root / "bin" / os.path.basename(binary))
        libs = subprocess.run(["ldd", real], capture_output=True, text=True, check=True).stdout
        for line in libs.splitlines():
            path = next((p for p in line.split() if p.startswith("/")), None)
            if path:
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(path), target)
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("NAME=cellar-test-rootfs\n")


def test_rootfs_is_the_cells_root_read_only(config: RuntimeConfig, scratch: Path) -> None:
    _minimal_rootfs(scratch)
    spec = CellSpec(f"r{uuid.uuid4().hex[:8]}", isolate_process=True, rootfs=str(scratch))
    out, err, _ = sh(config, spec, "cat /etc/os-release; ls /; (echo x > /etc/x) 2>/dev/null || echo ro; echo t > /tmp/t && echo tmp")
    assert out[0] == "NAME=cellar-test-rootfs", err
    assert {"bin", "etc", "proc", "dev", "tmp", "data"} <= set(out[1:-2])
    assert out[-2:] == ["ro", "tmp"]
    assert not (scratch / "etc" / "x").exists()


def test_a_symlink_in_the_rootfs_cannot_redirect_a_mount_to_the_host(config: RuntimeConfig, scratch: Path) -> None:
    """A rootfs whose /srv is a symlink to the host's /etc, and a bind mount onto /srv/x: the setup
    must refuse rather than create /etc/x on the host."""
    _minimal_rootfs(scratch)
    os.symlink("/etc", scratch / "srv")
    source = scratch.parent / f"{scratch.name}-src"
    source.write_text("payload")
    try:
        spec = CellSpec(
            f"r{uuid.uuid4().hex[:8]}",
            isolate_process=True,
            rootfs=str(scratch),
            mounts=(Mount(str(source), "/srv/cellar-planted"),),
        )
        with pytest.raises(RuntimeFailure, match="symlink"):
            sh(config, spec, "true")
        assert not os.path.exists("/etc/cellar-planted")
    finally:
        source.unlink()


@pytest.mark.parametrize("keep", [False, True])
def test_data_survives_free_only_when_kept(config: RuntimeConfig, keep: bool) -> None:
    spec = CellSpec(f"d{uuid.uuid4().hex[:8]}", isolate_process=True, keep_data=keep)
    out, err, _ = sh(config, spec, "echo precious > /data/file && echo ok")
    assert out == ["ok"], err
    kept = Path(config.data_dir) / spec.name / "file"
    assert kept.exists() is keep
    if keep:
        assert kept.read_text() == "precious\n"
        assert os.stat(config.data_dir).st_mode & 0o777 == 0o700  # no host user reaches a cell's files
        shutil.rmtree(kept.parent)


def test_a_mount_target_that_would_have_to_be_created_on_the_host_is_invalid(config: RuntimeConfig) -> None:
    name = f"m{uuid.uuid4().hex[:8]}"

    async def body(c: RuntimeClient) -> None:
        await c.allocate(CellSpec(name, isolate_process=True, mounts=(Mount("/var/tmp", "/usr/cellar-new-dir"),)))

    with pytest.raises(InvalidArgument, match=r"cell.mounts\[0\].target: /usr/cellar-new-dir does not exist"):
        run(config, body)
    assert not os.path.exists("/usr/cellar-new-dir")
