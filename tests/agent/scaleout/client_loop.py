"""Run the OFFICIAL scaleout client's own loop as a real process, for test_fl_client_loop.py.

Unlike ``client_flow.py`` (our script calling GrpcHandler methods one by one), nothing here decides
when to poll, download or report: the library's ImporterClient/EdgeClient/TaskReceiver do, driven by a
compute package the test writes into its temp dir (``client/scaleout.yaml`` + ``startup.py``).

Two ways in, both ``--local-package`` with the managed environment off (the 1.0.0 default; it is
opt-in with ``--managed-env``), loopback only, HOME and the token cache inside the work dir:

- ``"library"``: ``client_loop_start.py`` calls ``ImporterClient.start()`` after setting the ids the
  discovery service would have set, so the client's version check runs too;
- ``"cli"``: the ``scaleout client start --combiner ... --combiner-port ...`` console script itself,
  with ``SCALEOUT_CHECK_COMPATIBILITY=false`` (its version check runs before ``startup`` can set the
  ids, see client_loop_startup.py) and the ids given to ``startup`` through ``EDGE_CLIENT_*``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from tests.agent.scaleout.harness import client_env
from tests.support.timeouts import scaled

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
Mode = Literal["library", "cli", "cli-bare"]

#: The client's TaskReceiver polls every SCALEOUT_CLIENT_TASK_POLLING_INTERVAL seconds (default 5, an int).
POLL_INTERVAL_S = 1


def write_compute_package(workdir: Path) -> Path:
    """``workdir/client``: the local compute package ``--local-package`` loads (cwd-relative)."""
    package = workdir / "client"
    package.mkdir(parents=True)
    (package / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    shutil.copyfile(HERE / "client_loop_startup.py", package / "startup.py")
    return package


@dataclass
class ClientLoop:
    """The official client running in ``workdir``; its console log goes to ``workdir/client.log``."""

    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def log_path(self) -> Path:
        return self.workdir / "client.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = scaled(20)) -> int:
        """SIGTERM (the client's own graceful exit: Disconnect), SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def start_client_loop(venv: Path, workdir: Path, addr: str, client_id: str, name: str, mode: Mode) -> ClientLoop:
    """Start the official client against ``addr`` (``host:port`` of cellard's loopback listener)."""
    host, _, port = addr.rpartition(":")
    write_compute_package(workdir)
    env = {**client_env(), "HOME": str(workdir), "SCALEOUT_HOME_DIR": str(workdir),
           "SCALEOUT_TOKEN_CACHE_DIR": str(workdir / "tokens"), "SCALEOUT_LOG_LEVEL": "INFO",
           "SCALEOUT_CLIENT_TASK_POLLING_INTERVAL": str(POLL_INTERVAL_S)}
    if mode == "library":
        argv = [str(venv / "bin" / "python"), str(HERE / "client_loop_start.py"), host, port, client_id, name]
    else:
        if mode == "cli":
            env.update(SCALEOUT_CHECK_COMPATIBILITY="false", EDGE_CLIENT_ID=client_id, EDGE_CLIENT_NAME=name)
        argv = [str(venv / "bin" / "scaleout"), "client", "start", "--combiner", host, "--combiner-port", port,
                "--local-package", "--client-id", client_id, "--name", name]
    with open(workdir / "client.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    return ClientLoop(proc, workdir)


def wait_until(probe: Callable[[], T | None], what: str, client: ClientLoop, timeout: float = scaled(30)) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the client's log if it never does
    (or the client exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if client.proc.poll() is not None:
            raise AssertionError(f"the client exited ({client.proc.returncode}) before {what}:\n"
                                 f"{client.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{client.log_text()[-4000:]}")
        time.sleep(0.2)
