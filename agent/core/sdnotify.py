"""The sd_notify protocol, spoken directly: systemd's ``Type=notify`` + ``WatchdogSec=`` for cellard.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, with a watchdog,
``WATCHDOG_USEC`` (+ ``WATCHDOG_PID``). A notification is one datagram of ``KEY=VALUE`` lines. Without
``NOTIFY_SOCKET`` (started by hand, by the fallback script, by tests) every call is a no-op, so the
daemon calls these unconditionally. No dependency: libsystemd's sd_notify is ~40 lines of the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

log = structlog.get_logger("agent.core.sdnotify")


def socket_address(value: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` as a connectable address: ``@name`` -> abstract ``b"\\0name"``; None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: addresses and relative paths are not for a host daemon


def watchdog_interval(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds (systemd's advice), None when no watchdog is meant for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is set for another process (e.g. our parent)
    return int(usec) / 2 / 1_000_000


class Notifier:
    """Sends state lines to systemd; silent when not started by systemd with ``Type=notify``."""

    def __init__(self, env: dict[str, str] | os._Environ[str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = watchdog_interval(env)
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) as one datagram; True when sent."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            # A gone notify socket must never take the daemon down; say it once per call.
            log.warning("sdnotify.failed", error=str(exc), lines=list(lines))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` every half period from the event loop: a wedged loop stops the pings."""
        if self.address is None or self.watchdog_s is None or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._watchdog(self.watchdog_s))

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
