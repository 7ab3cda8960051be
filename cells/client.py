"""cellard's side of the supervisor socket.

One Unix connection per call: a Stop may take seconds and must not hold up a List, and there is no
shared connection state to lose when either side restarts. At most :data:`MAX_CONNECTIONS` calls are
on the wire at once; the rest wait their turn in cellard (a pool of connection slots). Without it,
2,000 concurrent log followers (each one ``find_pid``) opened 2,000 supervisor connections at once,
overflowed its accept backlog and 27-77 of them failed with ConnectionResetError (INTERNAL); a
supervisor call takes ~0.2 ms, so 32 slots serve them all within a fraction of a second
(tests/security/test_bounds.py prints the peak). Errors come back as the same
:mod:`cells.errors` class the runtime raised. The supervisor is started through its keeper
(:mod:`cells.keeper`, which parents it, restarts it after a crash and keeps the exit statuses of the
workloads it leaves behind) with ``Popen`` without ``preexec_fn`` (vfork path: safe in a threaded gRPC
process) in a new session, so both outlive us. The keeper costs a cold start one bare Python start
(measured p50 523 ms against 474 ms for the supervisor alone: bench/supervisor_start.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import structlog

from cells import protocol
from cells.config import RuntimeConfig
from cells.errors import RuntimeFailure, SupervisorUnavailable
from cells.exec_channel import ExecChannel, open_attach, open_exec
from cells.spec import CellLimits, CellSpec, ExecutableSpec
from cells.state import (
    CellInfo,
    ExecutableInfo,
    ExitStatus,
    cell_from_dict,
    executable_from_dict,
    exit_from_dict,
    to_dict,
)

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = structlog.get_logger("cells.client")

#: Unary calls on the wire to the supervisor at once (see the module docstring); streams (events,
#: log_events) are long-lived, few, and not counted.
MAX_CONNECTIONS = 32


class RuntimeClient:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        # set when this client started the supervisor (its keeper, the supervisor's parent)
        self.process: subprocess.Popen[bytes] | None = None
        self._respawning: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.open_calls = 0  # unary calls on the wire now, and the most there ever were at once
        self.peak_open_calls = 0

    # -- connection ------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls, config: RuntimeConfig, *, start: bool = True, timeout: float | None = None
    ) -> RuntimeClient:
        """Attach to the supervisor, starting it first if its socket does not answer.

        ``timeout`` (default ``config.supervisor_start_timeout_s``) bounds the wait for a supervisor
        this call started.
        """
        if timeout is None:
            timeout = config.supervisor_start_timeout_s
        client = cls(config)
        if await client._answers():
            return client
        if not start:
            raise RuntimeFailure(f"the supervisor at {config.socket_path} does not answer")
        client.process = client._start_supervisor()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await client._answers():
                return client
            # Exit status 0: lost a start race to another supervisor (it exits on the lock) -> keep
            # waiting for that one; anything else is a real failure.
            if client.process.poll() is not None and client.process.returncode != 0:
                raise RuntimeFailure(
                    f"the supervisor exited with status {client.process.returncode}; see {config.state_dir}/supervisor.stderr"
                )
            await asyncio.sleep(0.02)
        raise RuntimeFailure(f"the supervisor did not answer within {timeout:g}s")

    def respawn(self) -> asyncio.Task[None]:
        """Start a successor to a supervisor that stopped answering, in the background, one at a time.

        The successor re-adopts the running workloads from its store (as after a cellard restart); a
        supervisor that still answers (another one won the start race) is left alone.
        """
        if self._respawning is None or self._respawning.done():
            self._respawning = asyncio.get_running_loop().create_task(self._respawn())
        return self._respawning

    async def _respawn(self) -> None:
        if self.process is not None:
            self.process.poll()  # reap the one we started, if it died
        if await self._answers():  # its keeper restarted it already (or another client won the race)
            log.warning("supervisor.respawned", pid=(await self.info()).get("supervisor_pid"), by="keeper")
            return
        log.warning("supervisor.respawning", socket=self.config.socket_path)
        try:
            successor = await RuntimeClient.connect(self.config)
        except RuntimeFailure as exc:
            log.error("supervisor.respawn_failed", error=str(exc))
            return
        if successor.process is not None:
            self.process = successor.process
        log.warning("supervisor.respawned", pid=(await self.info()).get("supervisor_pid"))

    def _start_supervisor(self) -> subprocess.Popen[bytes]:
        """The keeper (:mod:`cells.keeper`), which starts the supervisor as its child."""
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        with open(os.path.join(self.config.state_dir, "supervisor.stderr"), "ab") as stderr:
            return subprocess.Popen(
                # -S: the keeper needs the standard library only (site-packages' .pth files cost start time)
                [sys.executable, "-S", "-m", "cells.keeper", "--config-json", self.config.to_json()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
                cwd="/",
                env=env,
            )

    async def _answers(self) -> bool:
        try:
            await asyncio.wait_for(self._call("ping"), 2.0)
            return True
        except (OSError, TimeoutError, RuntimeFailure, ValueError):
            return False

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(self.config.socket_path, limit=protocol.MAX_LINE)
        except (ConnectionRefusedError, FileNotFoundError) as exc:  # nobody listens: the request never left
            raise SupervisorUnavailable(
                f"the supervisor at {self.config.socket_path} does not answer ({exc.strerror}); "
                "cellard starts a successor within seconds, which re-adopts the running workloads: retry"
            ) from None

    async def _call(self, op: str, **args: Any) -> Any:
        async with self._slots:
            self.open_calls += 1
            self.peak_open_calls = max(self.peak_open_calls, self.open_calls)
            try:
                line = await self._exchange(op, args)
            finally:
                self.open_calls -= 1
        if not line:
            raise RuntimeFailure(f"the supervisor closed the connection during {op!r}")
        return protocol.unwrap(protocol.decode(line))

    async def _exchange(self, op: str, args: dict[str, Any]) -> bytes:
        reader, writer = await self._open()
        try:
            writer.write(protocol.request(op, **args))
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- API ---------------------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("info")
        return result

    async def allocate(self, spec: CellSpec) -> CellInfo:
        return cell_from_dict(await self._call("allocate", spec=spec))

    async def free(self, name: str, grace_s: float | None = None) -> None:
        await self._call("free", name=name, grace_s=grace_s)

    async def start(self, spec: ExecutableSpec) -> ExecutableInfo:
        return executable_from_dict(await self._call("start", spec=spec))

    async def stop(self, cell: str, name: str, grace_s: float | None = None) -> ExitStatus:
        status = exit_from_dict(await self._call("stop", cell=cell, name=name, grace_s=grace_s))
        assert status is not None
        return status

    async def list(self, prefix: str = "", stats: bool = False) -> list[CellInfo]:
        return [cell_from_dict(c) for c in await self._call("list", prefix=prefix, stats=stats)]

    async def inspect(self, name: str) -> CellInfo:
        return cell_from_dict(await self._call("inspect", name=name))

    async def update_limits(self, name: str, limits: CellLimits) -> CellInfo:
        """Change a live cell's limits in place (none removed: see Runtime.update_limits)."""
        return cell_from_dict(await self._call("update_limits", name=name, limits=to_dict(limits)))

    async def freeze(self, name: str) -> None:
        await self._call("freeze", name=name)

    async def thaw(self, name: str) -> None:
        await self._call("thaw", name=name)

    async def purge_logs(self, cell: str, executable: str = "") -> tuple[int, int]:
        """Delete stored logs (see Runtime.purge_logs): ``(runs, bytes)`` removed."""
        result = await self._call("purge_logs", cell=cell, executable=executable)
        return int(result["runs"]), int(result["bytes"])

    async def exec_session(self, spec: ExecutableSpec, *, tty: bool, stdin: bool, rows: int = 0, cols: int = 0,
                           term: str = "") -> ExecChannel:
        """Run ``spec.argv`` in its cell for a client (:mod:`cells.exec`); the caller owns the channel."""
        return await open_exec(self.config.socket_path, spec, tty=tty, stdin=stdin, rows=rows, cols=cols, term=term)

    async def attach(self, cell: str, name: str) -> tuple[ExecChannel, bool]:
        """Attach to a running executable's stdin (:func:`cells.exec_channel.open_attach`)."""
        return await open_attach(self.config.socket_path, cell, name)

    async def find_pid(self, host_pid: int) -> ExecutableInfo:
        return executable_from_dict(await self._call("find_pid", host_pid=host_pid))

    async def events(self, prefix: str = "") -> AsyncIterator[tuple[str, ExecutableInfo]]:
        """Executable state changes (started/stopping/exited/lost) of cells under ``prefix``.

        The stream ends when the supervisor goes away; a slow consumer loses events (the
        supervisor drops rather than blocks) but never stalls the supervisor.
        """
        reader, writer = await self._open()
        try:
            writer.write(protocol.request("events", prefix=prefix))
            await writer.drain()
            protocol.unwrap(protocol.decode(await reader.readline()))
            while True:
                line = await reader.readline()
                if not line:
                    return
                event = protocol.decode(line)
                yield event["event"], executable_from_dict(event["executable"])
        finally:
            writer.close()

    async def log_events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Subscribe to the supervisor's warnings and errors (structlog event dicts, bounded in size);
        returns once it has accepted, so nothing it logs after that is missed.

        Iterate the result (then close it): it ends when the supervisor goes away. A slow consumer gets
        ``{"event": "daemonlog.dropped", "count": N}`` in place of what the supervisor dropped.
        """
        reader, writer = await self._open()
        try:
            writer.write(protocol.request("log_events"))
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise RuntimeFailure("the supervisor closed the connection during 'log_events'")
            protocol.unwrap(protocol.decode(line))
        except BaseException:
            writer.close()
            raise
        return _log_event_lines(reader, writer)

    async def shutdown_supervisor(self, kill_workloads: bool = False) -> None:
        """Stop the supervisor; with ``kill_workloads`` every cell is freed first (uninstall, tests)."""
        info = await self._call("info")
        pids = [p for p in (info["supervisor_pid"], info.get("keeper_pid") or 0) if p]
        await self._call("shutdown", kill_workloads=kill_workloads)
        deadline = time.monotonic() + 30
        while pids and time.monotonic() < deadline:
            if self.process is not None:
                self.process.poll()  # the keeper we started: reaped, not left a zombie
            pids = [p for p in pids if _running(p)]
            await asyncio.sleep(0.01)


def _running(pid: int) -> bool:
    """Neither gone nor a zombie (a zombie keeper waits for its parent, maybe not us, to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


async def _log_event_lines(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        while line := await reader.readline():
            event = protocol.decode(line).get("log")
            if isinstance(event, dict):
                yield event
    finally:
        writer.close()
