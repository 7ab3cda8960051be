"""Fixtures for the kernel-facing tests: unique, self-cleaning cgroup roots and netns prefixes.

Every name carries ``cellar-test-<8 hex>`` so a leak is visible in ``ip netns list`` or
``/sys/fs/cgroup``; the finalizers run even when a test fails and fall back to raw kill + rmdir
(deepest first) if the backend itself is what broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from cells.cgroup import CgroupBackend, detect
from cells.config import RuntimeConfig
from tests.support.cleanup import CGROUP_MOUNT, destroy_runtime, force_remove_cgroups, supervisor_pids  # noqa: F401
from tests.support.runtime import make_runtime_config


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")


@pytest.fixture
def cgroup_root_name() -> str:
    return f"cellar-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backend(cgroup_root_name: str) -> Iterator[CgroupBackend]:
    """A fresh backend whose root is ``cellar-test-<hex>``, fully removed afterwards."""
    _require_root()
    b = detect(cgroup_root_name)
    try:
        yield b
    finally:
        try:
            b.remove_root()
        finally:
            force_remove_cgroups(cgroup_root_name)


@pytest.fixture
def netns_prefix() -> Iterator[str]:
    """A unique netns name prefix; every netns with it, and every link named ``ifname_prefix``, is removed."""
    _require_root()
    # Not "cellar-...": a supervisor with the default prefix "cellar-" would claim these as strays.
    prefix = f"ct{uuid.uuid4().hex[:8]}-"
    yield prefix
    from cells.netns import delete_netns, list_netns

    for name in list_netns(prefix):
        with contextlib.suppress(Exception):
            asyncio.run(delete_netns(name))


@pytest.fixture
def ifname_prefix() -> Iterator[str]:
    """A unique interface-name prefix (``ct`` + 6 hex: fits IFNAMSIZ with a suffix)."""
    _require_root()
    prefix = f"ct{uuid.uuid4().hex[:6]}"
    yield prefix
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        if ifname.startswith(prefix):
            subprocess.run(["ip", "link", "del", ifname], capture_output=True)


@pytest.fixture
def runtime_config(tmp_path) -> Iterator[RuntimeConfig]:  # type: ignore[no-untyped-def]
    _require_root()
    config = make_runtime_config(str(tmp_path))
    try:
        yield config
    finally:
        destroy_runtime(config)


@pytest.fixture(scope="module")
def shared_runtime_config(tmp_path_factory) -> Iterator[RuntimeConfig]:  # type: ignore[no-untyped-def]
    """One supervisor per test module: it is started on the first connect and killed at the end."""
    _require_root()
    config = make_runtime_config(str(tmp_path_factory.mktemp("runtime")))
    try:
        yield config
    finally:
        destroy_runtime(config)
