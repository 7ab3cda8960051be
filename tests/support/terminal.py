"""A real terminal for CLI tests: a detached tmux session on a private server (-L), killed at the end."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.cli import cli_env
from tests.support.timeouts import scaled, wait_for

TMUX = "/usr/bin/tmux"


class Tmux:
    """tmux on a server of its own; ``self(args...)`` runs a tmux command against it; pane ``t``."""

    def __init__(self) -> None:
        self.socket = f"cellar-exec-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=scaled(10)).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_screen(self, text: str, what: str) -> str:
        return wait_for(lambda: self.screen() if text in self.screen() else None, what)

    def kill(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=scaled(10))


@contextlib.contextmanager
def tmux_server() -> Iterator[Tmux]:
    """A :class:`Tmux` whose server is killed on the way out (pass or fail)."""
    if not os.path.exists(TMUX):
        pytest.fail("tmux is required for the terminal tests (apt-get install tmux)")
    t = Tmux()
    try:
        yield t
    finally:
        t.kill()


def cli_shell_env() -> str:
    """``K=V ...`` for ``env`` in a tmux command line: what the cellar CLI needs from the test's environment."""
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in cli_env().items() if k in ("PYTHONPATH", "HOME", "PATH"))
