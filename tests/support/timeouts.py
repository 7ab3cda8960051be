"""One scale for every wait in the tests, for slow hosts.

``CELLAR_TEST_TIMEOUT_SCALE`` (default 1) multiplies the fixtures' start/stop timeouts, the
supervisor's start timeout and the waits of the kernel-facing tests: the pure cgroup v2 VM
(packaging/v2vm/run-tests.sh) runs under software emulation, where Python imports alone take longer
than a cellard start does on real hardware. Only waits scale; no test asserts a duration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _scale() -> float:
    text = os.environ.get("CELLAR_TEST_TIMEOUT_SCALE", "") or "1"
    try:
        value = float(text)
    except ValueError:
        raise RuntimeError(f"CELLAR_TEST_TIMEOUT_SCALE: expected a number >= 1, got {text!r}") from None
    if not value >= 1:
        raise RuntimeError(f"CELLAR_TEST_TIMEOUT_SCALE: expected a number >= 1, got {text!r}")
    return value


SCALE = _scale()


def scaled(seconds: float) -> float:
    """``seconds`` on this host: a wait sized for real hardware, stretched on slow ones."""
    return seconds * SCALE


def wait_for(predicate: Callable[[], T], what: str = "condition", timeout: float = 20.0) -> T:
    """Poll ``predicate`` until it returns something true and return that; AssertionError naming
    ``what`` after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
