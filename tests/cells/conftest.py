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
import sys
import uuid
from collections.abc import Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from cells.cgroup import CgroupBackend, detect  # noqa: E402
from tests.cleanup import CGROUP_MOUNT, destroy_runtime, force_remove_cgroups, supervisor_pids  # noqa: E402,F401
from tests.timeouts import scaled  # noqa: E402


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


# -- supervisor / runtime fixtures (tests/cells/test_runtime.py, test_supervisor.py) ---------------

from cells.config import RuntimeConfig  # noqa: E402


def make_runtime_config(directory: str, **overrides: object) -> RuntimeConfig:
    """A RuntimeConfig private to one test (or module): tmp dirs, unique cgroup root and netns prefix."""
    tag = uuid.uuid4().hex
    fields: dict[str, object] = {
        "state_dir": os.path.join(directory, "state"),
        "log_dir": os.path.join(directory, "logs"),
        "run_dir": os.path.join(directory, "run"),
        "cgroup_root_name": f"cellar-test-{tag[:8]}",
        "netns_prefix": f"ct{tag[8:14]}-",
        "default_grace_s": 2.0,
        "log_segment_bytes": 1 << 20,
        "supervisor_start_timeout_s": scaled(10.0),
    }
    fields.update(overrides)
    return RuntimeConfig(**fields)  # type: ignore[arg-type]


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
