"""The Scaleout tests' harness: the official client's venv and processes, and cellards for them.

- :func:`build_scaleout_venv`: a virtual environment with the OFFICIAL client, ``scaleout==1.0.0`` +
  ``scaleoututil==1.0.0`` from PyPI, which pins its own grpcio/protobuf and so cannot share cellar's
  venv. Cached under ``/var/cache/cellar-test/scaleout-venv-<version>-py<X.Y>`` (``$CELLAR_TEST_CACHE``
  overrides the parent): built once (under a file lock, so xdist workers wait for one build, into a
  temp dir renamed into place when complete), then reused without touching any package registry.
- :class:`ClientProcess`: ``client_flow.py`` running under that venv, its JSON events.
- :func:`start_daemon` / :func:`stop_daemon` / :func:`restart_daemon`: cellards with a small model store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.api import require_root
from tests.support.cellard import Cellard, merge, restart, start_cellard, teardown
from tests.support.local import local_tcp

HERE = Path(__file__).resolve().parent
SCALEOUT_VERSION = "1.0.0"
PACKAGES = (f"scaleout=={SCALEOUT_VERSION}", f"scaleoututil=={SCALEOUT_VERSION}")
CACHE_ROOT = Path(os.environ.get("CELLAR_TEST_CACHE", "/var/cache/cellar-test"))
STORE_CAP = 16 * 2**20  # [models] max_bytes of the test daemons: small, so the cap is easy to hit


def client_env() -> dict[str, str]:
    """The environment of a scaleout-venv process: nothing of cellar's Python setup leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def _venv_ok(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists() or not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import scaleout.client.grpc_handler, scaleoututil.utils.model"],
                           capture_output=True, timeout=60, env=client_env(), cwd="/")
    return probe.returncode == 0


def build_scaleout_venv(cache_root: Path = CACHE_ROOT) -> Path:
    """The cached venv with the official client (built on first use)."""
    tag = f"scaleout-venv-{SCALEOUT_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache_root / tag
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_ok(venv):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        building = cache_root / f"{tag}.building"
        shutil.rmtree(building, ignore_errors=True)
        # venv scripts carry absolute paths: build at the final path, mark complete only at the end.
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", *PACKAGES],
                             capture_output=True, text=True, timeout=900)
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise AssertionError(f"pip install {' '.join(PACKAGES)} failed:\n{pip.stdout}\n{pip.stderr}")
        (venv / ".complete").write_text(" ".join(PACKAGES) + "\n")
        if not _venv_ok(venv):
            raise AssertionError(f"{venv}: the scaleout client does not import after install")
        return venv


@dataclass
class ClientProcess:
    """``client_flow.py`` running under the scaleout venv; its stdout JSON lines arrive on ``events``."""

    proc: subprocess.Popen[str]
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def start_readers(self) -> None:
        def out() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                with contextlib.suppress(ValueError):
                    self.events.put(json.loads(line))

        def err() -> None:
            assert self.proc.stderr is not None
            self.stderr.extend(self.proc.stderr)

        threading.Thread(target=out, daemon=True).start()
        threading.Thread(target=err, daemon=True).start()

    def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    break
                continue
            self.seen.append(ev)
            if ev["event"] == event:
                return ev
        raise AssertionError(f"client never reported {event!r}; saw {self.seen}\nstderr:\n{''.join(self.stderr)[-4000:]}")

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- real cellard daemons


def start_daemon(config: dict[str, Any] | None = None) -> Cellard:
    """A cellard like ``cellard_factory`` starts (own temp dir, unique cgroup root), with a small model
    store; returns once its main server is SERVING and its node-local endpoint listens."""
    require_root()
    daemon = start_cellard(merge({"models": {"max_bytes": STORE_CAP}}, config or {}))
    try:
        local_tcp(daemon)
    except BaseException:
        teardown(daemon)
        raise
    return daemon


stop_daemon = teardown


def restart_daemon(daemon: Cellard) -> Cellard:
    """Start a new cellard on ``daemon``'s own config (the old process must be gone); wait until it serves
    and its node-local endpoint listens again."""
    before = len(daemon.events("local.listening"))
    restart(daemon)
    deadline = time.monotonic() + 30
    while len(daemon.events("local.listening")) <= before:
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"cellard did not come back:\n{daemon.log_text()[-4000:]}")
        time.sleep(0.05)
    return daemon
