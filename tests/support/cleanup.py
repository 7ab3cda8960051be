"""Cleanup shared by every test that makes kernel objects: cgroups, netns, supervisors.

Finalizers call these even when a test failed; they fall back to raw kill + rmdir (deepest first)
so a broken backend cannot leak what it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from cells.config import RuntimeConfig

CGROUP_MOUNT = "/sys/fs/cgroup"


def force_remove_cgroups(name: str) -> None:
    """Kill and remove every directory called ``name`` at the top of each cgroup hierarchy.

    Kill through the v2 hierarchy (pure v2 top or hybrid ``unified``) and wait until it is empty,
    then rmdir deepest first: v1 copies first, the unified tree last.
    """
    unified = [os.path.join(CGROUP_MOUNT, name), os.path.join(CGROUP_MOUNT, "unified", name)]
    for top in unified:
        if os.path.exists(os.path.join(top, "cgroup.kill")):
            with contextlib.suppress(OSError), open(os.path.join(top, "cgroup.kill"), "w") as f:
                f.write("1")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with open(os.path.join(top, "cgroup.events")) as f:
                    if "populated 0" in f.read():
                        break
                time.sleep(0.01)
    v1 = [os.path.join(CGROUP_MOUNT, h, name) for h in sorted(os.listdir(CGROUP_MOUNT)) if h != "unified"]
    for top in [t for t in v1 if t not in unified] + unified:
        if not os.path.isdir(top):
            continue
        deadline = time.monotonic() + 5
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def pids_with_cmdline(module: bytes, needle: bytes) -> list[int]:
    """Processes running ``python -m <module>`` whose command line contains ``needle``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if module in cmdline.split(b"\0") and needle in cmdline:
                pids.append(int(entry))
    return pids


def supervisor_pids(config: RuntimeConfig) -> list[int]:
    """Supervisors running with this config: matched by its exact cgroup root name in --config-json, so
    a root "cellar" never matches a test supervisor's "cellar-test-..." (or the other way round)."""
    return pids_with_cmdline(b"cells.supervisor", json.dumps({"cgroup_root_name": config.cgroup_root_name})[1:-1].encode())


def keeper_pids(config: RuntimeConfig) -> list[int]:
    """The keepers (cells/keeper.py, each the parent of a supervisor) of this config."""
    return pids_with_cmdline(b"cells.keeper", json.dumps({"cgroup_root_name": config.cgroup_root_name})[1:-1].encode())


def fdstore_pids(config: RuntimeConfig) -> list[int]:
    """The fd store of this config's supervisors: matched by its socket path (inside the run_dir)."""
    return pids_with_cmdline(b"cells.fdstore", os.path.join(config.run_dir, "fdstore.sock").encode())


def destroy_runtime(config: RuntimeConfig) -> None:
    """Finalizer: SIGKILL the keeper(s), supervisor(s) and their fd store, kill+remove the cgroup root, delete the netns."""
    import signal

    from cells.mountview import release_views_dir
    from cells.netns import delete_netns, list_netns

    for pid in keeper_pids(config) + supervisor_pids(config) + fdstore_pids(config):  # keepers first: they restart
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        force_remove_cgroups(config.cgroup_root_name)
    finally:
        release_views_dir(config.views_dir)
        for name in list_netns(config.netns_prefix):
            with contextlib.suppress(Exception):
                asyncio.run(delete_netns(name))
