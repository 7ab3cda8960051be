"""The supervisor process: parent of every workload, owner of all runtime state, one per host.

``python -m cells.supervisor --config-json '<RuntimeConfig JSON>'``. cellard starts it through its
keeper (:mod:`cells.keeper`: new session, so both survive cellard) when its socket does not answer;
the keeper is its parent, restarts it after a crash and records the exit statuses of the workloads it
leaves behind, which the successor takes instead of ``lost`` (measured: the keeper adds one bare
Python start to the first start, p50 523 against 474 ms, and 11.4 MiB RSS; see cells/keeper.py). Asyncio, with no thread but the
launcher's exec-wait threads (which run no Python while a child is being set up): spawning here is cheap
and safe, unlike in the multi-threaded gRPC daemon. SIGTERM exits *without* touching
workloads (a successor re-adopts them from the store; exit status 0 also ends its keeper); only the ``shutdown`` request with
``kill_workloads`` frees everything. An exclusive flock on ``<run_dir>/supervisor.lock`` makes a
second supervisor of the same config exit at once.

It logs to ``<state_dir>/supervisor.log``; its warnings and errors (a full log disk, an exit record
held back) are also published to ``log_events`` subscribers, so cellard can log them as its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, MutableMapping
from typing import Any, cast

import structlog

from cells import protocol, timing
from cells.config import RuntimeConfig
from cells.errors import InvalidArgument
from cells.events import Watcher
from cells.exec import ExecSessions
from cells.keeper import link
from cells.launch import warm_profiles
from cells.reconcile import prune_keeper_records
from cells.runtime import Runtime
from cells.state import to_dict
from observe import daemonlog
from observe.daemonlog import DaemonLogBus

log = structlog.get_logger("cells.supervisor")

PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


# -- warnings and errors for cellard (``log_events``) ------------------------------------------------

RELAYED_LEVELS = frozenset({"warning", "error", "critical"})
#: Bounds of one relayed event (the whole event stays in supervisor.log): a flood of big events cannot
#: grow either process by more than RELAY_QUEUE x about MAX_RELAYED_FIELDS x MAX_RELAYED_VALUE.
MAX_RELAYED_FIELDS = 32
MAX_RELAYED_VALUE = 4096
#: Events queued per subscriber; past that they are dropped and counted (a "daemonlog.dropped" event).
RELAY_QUEUE = 256
_SCALARS = (str, int, float, bool, type(None))


def _bounded(value: Any) -> Any:
    if not isinstance(value, _SCALARS):
        value = repr(value)
    if isinstance(value, str) and len(value) > MAX_RELAYED_VALUE:
        half = MAX_RELAYED_VALUE // 2  # head and tail: a traceback ends with the error
        value = f"{value[:half]} ...[{len(value) - 2 * half} chars cut]... {value[-half:]}"
    return value


def relayed(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The part of a log event that cellard gets: None below warning; otherwise its name, level and
    time, then as many other fields as fit (``truncated``: how many did not), long strings cut."""
    if event.get("level") not in RELAYED_LEVELS:
        return None
    head = {k: event[k] for k in ("event", "level", "timestamp") if k in event}
    rest = [(k, v) for k, v in event.items() if k not in head]
    room = MAX_RELAYED_FIELDS - len(head) - 1
    out = {str(k): _bounded(v) for k, v in [*head.items(), *rest[:room]]}
    if len(rest) > room:
        out["truncated"] = len(rest) - room
    return out


def _relay_to(bus: DaemonLogBus) -> Callable[[MutableMapping[str, Any]], None]:
    """A log tap: warning+ events also go to ``bus`` (never blocks: the bus drops instead)."""

    def publish(event_dict: MutableMapping[str, Any]) -> None:
        item = relayed(event_dict)
        if item is not None:
            bus.publish(item)

    return publish


def configure_logging(path: str, relay: DaemonLogBus | None = None) -> None:
    """structlog JSON lines appended to ``path`` (line-buffered: a SIGKILL loses nothing logged);
    warnings and errors are also published to ``relay``."""
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    daemonlog.setup(stream, json=True, tap=_relay_to(relay) if relay is not None else None, cache=True)


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in args or args[name] is None:
        if default is ...:
            raise InvalidArgument(name, "is required")
        return default
    value = args[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidArgument(name, "has the wrong type")
    if not isinstance(value, kind):
        raise InvalidArgument(name, "has the wrong type")
    return value


class Supervisor:
    def __init__(self, config: RuntimeConfig, log_events: DaemonLogBus | None = None) -> None:
        self.config = config
        # No history: a subscriber gets what is logged after it subscribed (cellard re-subscribes on
        # start, and replaying old events would log them twice).
        self.log_events = log_events or DaemonLogBus(history=0, queue=RELAY_QUEUE)
        self.runtime = Runtime(config)
        self.exec_sessions = ExecSessions(self.runtime)
        self.stopping = asyncio.Event()
        self.kill_on_exit = False
        self._server: asyncio.AbstractServer | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.runtime.install(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        await self.runtime.reconcile()
        prune_keeper_records(self.runtime)
        warm_profiles()
        path = self.config.socket_path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path, limit=protocol.MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        with open(self.config.pid_path + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(self.config.pid_path + ".tmp", self.config.pid_path)
        log.info("supervisor.ready", pid=os.getpid(), socket=path, mode=self.runtime.backend.mode)
        await self.stopping.wait()
        log.info("supervisor.stopping", kill_workloads=self.kill_on_exit)
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.pid_path)
        await self.runtime.settle_starts()
        if self.kill_on_exit:
            await self.runtime.free_all()
            self.runtime.outputs.fdstore.exit()  # nothing left to hold: the store goes with the workloads
        self.runtime.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply: bytes | None = None
        marks: list[tuple[str, int]] | None = None
        try:
            line = await reader.readline()
            if not line:
                return
            message = protocol.decode(line)
            op = message.get("op")
            if op == "start":  # where a Start's time goes: logged after the reply (cells.timing)
                marks = timing.begin("request")
            args = message.get("args") or {}
            if not isinstance(args, dict):
                raise InvalidArgument("args", "must be an object")
            if op == "events":
                await self._events(args, reader, writer)
                return
            if op == "log_events":
                await self._log_events(reader, writer)
                return
            if op == "exec":  # the connection stays open as the session's control channel (cells.exec)
                await self.exec_sessions.serve(args, reader, writer)
                return
            if op == "attach":  # likewise, until the attacher detaches or the run ends
                await self.exec_sessions.attach(args, reader, writer)
                return
            result = await self._dispatch(op, args)
            timing.mark("log_event_return")
            reply = protocol.ok(result)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as exc:
            if not isinstance(exc, protocol.errors.CellError):
                log.exception("request.failed")
            reply = protocol.failure(exc)
        finally:
            with contextlib.suppress(Exception):
                if reply is not None:
                    timing.mark("encode")
                    writer.write(reply)  # sent now (a small reply never waits for drain)
                    timing.mark("send")
                    await writer.drain()
                writer.close()
            if marks is not None:
                spec = args.get("spec") if isinstance(args, dict) else None
                spec = spec if isinstance(spec, dict) else {}
                log.info("start.timing", cell=str(spec.get("cell_name")), exe=str(spec.get("name")),
                         ok=reply is not None and reply.startswith(b'{"ok":true'), us=timing.stages(marks))

    async def _dispatch(self, op: Any, args: dict[str, Any]) -> Any:
        rt = self.runtime
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "info":
            keeper = link(self.config.run_dir)
            return {**rt.info(), "keeper_pid": keeper.keeper_pid if keeper is not None else 0}
        if op == "allocate":
            return await rt.allocate(protocol.cell_spec_from_dict(_arg(args, "spec", dict)))
        if op == "free":
            return await rt.free(_arg(args, "name", str), _arg(args, "grace_s", (int, float), None))
        if op == "start":
            return await rt.start(protocol.executable_spec_from_dict(_arg(args, "spec", dict)))
        if op == "stop":
            return await rt.stop(
                _arg(args, "cell", str), _arg(args, "name", str), _arg(args, "grace_s", (int, float), None)
            )
        if op == "list":
            return rt.list(_arg(args, "prefix", str, ""), _arg(args, "stats", bool, False))
        if op == "inspect":
            return rt.inspect(_arg(args, "name", str))
        if op == "update_limits":
            limits = protocol.cell_spec_from_dict({"name": "x", "limits": _arg(args, "limits", dict)}).limits
            return rt.update_limits(_arg(args, "name", str), limits)
        if op == "freeze":
            return rt.freeze(_arg(args, "name", str))
        if op == "thaw":
            return rt.thaw(_arg(args, "name", str))
        if op == "find_pid":
            return rt.find_pid(_arg(args, "host_pid", int))
        if op == "purge_logs":
            runs, size = rt.purge_logs(_arg(args, "cell", str), _arg(args, "executable", str, ""))
            return {"runs": runs, "bytes": size}
        if op == "shutdown":
            self.kill_on_exit = bool(_arg(args, "kill_workloads", bool, False))
            if self.kill_on_exit:
                await rt.free_all()
            asyncio.get_running_loop().call_soon(self.stopping.set)
            return None
        raise InvalidArgument("op", f"unknown operation {op!r}")

    async def _events(
        self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        watcher: Watcher = self.runtime.watch(_arg(args, "prefix", str, ""))
        try:
            writer.write(protocol.ok(None))
            await writer.drain()
            eof = asyncio.ensure_future(reader.read(1))
            try:
                while True:
                    get = asyncio.ensure_future(watcher.queue.get())
                    done, _ = await asyncio.wait({get, eof}, return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        return
                    kind, info, dropped = get.result()
                    writer.write(
                        protocol.encode({"event": kind, "executable": to_dict(info), "dropped": dropped})
                    )
                    await writer.drain()
            finally:
                eof.cancel()
        finally:
            self.runtime.unwatch(watcher)

    async def _log_events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Stream this process's warnings and errors (``{"log": event}`` lines) until either side closes."""
        events = cast(AsyncGenerator[dict[str, Any], None], self.log_events.subscribe())
        # The generator subscribes when it first runs: let it run (up to its first wait, before the
        # reply below) so that nothing logged after the reply can be missed.
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        eof = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(protocol.ok(None))
            await writer.drain()
            while True:
                done, _ = await asyncio.wait({pending, eof}, return_when=asyncio.FIRST_COMPLETED)
                if pending not in done:
                    return
                writer.write(protocol.encode({"log": pending.result()}))
                await writer.drain()
                pending = asyncio.ensure_future(anext(events))
        finally:
            eof.cancel()
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending  # the generator has unsubscribed once this is done
            await events.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cells.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", default="{}", help="RuntimeConfig as JSON")
    config = RuntimeConfig.from_json(parser.parse_args(argv).config_json)
    for directory in (config.run_dir, config.state_dir):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    # 0750: cell and job names (the log tree's directories) are not every local user's to read
    os.makedirs(config.log_dir, mode=0o750, exist_ok=True)
    os.chmod(config.log_dir, 0o750)
    lock = os.open(
        os.path.join(config.run_dir, "supervisor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another supervisor holds the lock; exiting", file=sys.stderr)
        return 0
    log_events = DaemonLogBus(history=0, queue=RELAY_QUEUE)
    configure_logging(config.supervisor_log, log_events)
    _set_subreaper()
    try:
        asyncio.run(Supervisor(config, log_events).run())
    except Exception:
        log.exception("supervisor.crashed")
        raise
    log.info("supervisor.exited")
    return 0


if __name__ == "__main__":
    sys.exit(main())
