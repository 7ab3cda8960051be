"""Health checks: probing running executables, their health state, and liveness restarts.

One asyncio task per running executable with a check (:class:`cells.spec.HealthCheck`), in the
supervisor's event loop. FIRST_PROBE_S after the start, then every ``interval_s``, it runs one probe,
cut at ``timeout_s``:

- ``exec``: the check's argv, spawned like an executable of the cell (the same launch path: the
  cell's namespaces, its mount view, the executable's security profile, uid and env) in a leaf of its
  own, ``<cell>/_probe.<name>`` (so a probe is never mistaken for the executable's process, and a
  probe left by a crashed supervisor is an unclaimed cgroup that reconcile removes). Exit 0 is
  healthy. The first line of its output is kept in the result (a probe is not a log run). At its timeout its leaf is killed.
- ``tcp``: a connect to 127.0.0.1:``port``; ``http``: GET ``path``, 2xx/3xx is healthy; ``grpc``:
  ``grpc.health.v1.Health/Check`` of ``service``, SERVING is healthy. In the cell's netns when it
  has one (the socket is made there by a helper thread, :mod:`observe.netnsenter`), else on the
  host's loopback. Sockets are non-blocking. ``cells`` imports no grpc, so the gRPC call is spoken
  here: an HTTP/2 connection preface, one HEADERS frame (HPACK literals, no Huffman) and one DATA
  frame out; frames in until the response message (a varint ``status``) or the stream's end.

The state (on :class:`cells.state.ExecutableInfo`): ``starting`` until the first success (failures
within ``start_period_s`` of the start do not count, Docker's rule), ``healthy`` after a success,
``unhealthy`` after ``retries`` consecutive failures. The transitions are the events ``healthy`` and
``unhealthy``. An unhealthy executable whose restart policy is not ``never`` is killed (SIGTERM, the
default grace, then its leaf's cgroup.kill) and its policy restarts it as after a crash, whatever its
exit code (``Executable.unhealthy``); under ``never`` it keeps running, marked unhealthy (Docker's
behaviour). A frozen cell is not probed (its state stays as it was). Probing ends with the run; a new run (or a run adopted by a successor supervisor: the
state is not persisted, the check is) starts at ``starting``.

Bounded: at most MAX_CONCURRENT_PROBES probes run at once over all executables, at most MAX_CELL_PROBES
of them for the executables of one top-level cell (so one cell's hanging probes delay its own checks,
never another cell's), and an interval is at least :data:`cells.spec.MIN_HEALTH_INTERVAL_S`: a flood of
checks cannot starve the supervisor nor the other cells.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from cells import namespaces as ns
from cells import profile
from cells.cgroup import CgroupBackend, kill_and_remove
from cells.errors import CellError
from cells.events import Events
from cells.holder import namespace_fds
from cells.model import Cell, Executable
from cells.reaper import Reaper
from cells.spawn import ExecRequest, default_env
from cells.spec import ExecutableSpec, HealthCheck
from cells.state import CellState, ExecutableState
from observe.netnsenter import open_socket

if TYPE_CHECKING:
    from cells.config import RuntimeConfig
    from cells.exits import Exits
    from cells.launch import Launcher

log = structlog.get_logger("cells.health")

#: Probes running at once, over all executables (more wait their turn).
MAX_CONCURRENT_PROBES = 64
#: The first probe of a run, this long after its start (then every interval): a server registered with the
#: ServerDispatcher is handed out once healthy, which should not take a whole interval (30 s by default).
FIRST_PROBE_S = 1.0
#: Probes running at once for the executables of one top-level cell (a tenant's share).
MAX_CELL_PROBES = 4
#: Leaf cgroup of an executable's exec probes inside its cell ('_' is not DNS: never a cell's name).
PROBE_CGROUP_PREFIX = "_probe."
#: The last probe's result is cut to this many characters.
MAX_RESULT = 200
#: Bytes of an HTTP or gRPC answer read at most.
MAX_ANSWER = 64 * 1024

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
GRPC_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def probe_leaf(cell_name: str, exe_name: str) -> str:
    return f"{cell_name}/{PROBE_CGROUP_PREFIX}{exe_name}"


class Health:
    """The health checks of one runtime's executables."""

    def __init__(self, config: RuntimeConfig, backend: CgroupBackend, reaper: Reaper, events: Events,
                 launcher: Launcher, exits: Exits, devnull: int) -> None:
        self._config = config
        self._backend = backend
        self._reaper = reaper
        self._events = events
        self._launcher = launcher
        self._exits = exits
        self._devnull = devnull
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)
        self._cell_slots: dict[str, asyncio.Semaphore] = {}  # by top-level cell, while it has probed executables
        self._tasks: dict[Executable, asyncio.Task[None]] = {}

    def watch(self, cell: Cell, exe: Executable, spec: ExecutableSpec) -> None:
        """Probe ``exe`` (a run just registered or adopted) while it runs, if ``spec`` has a check."""
        exe.info.health_check = {} if not spec.health.kind else _check_dict(spec.health)
        exe.info.health = STARTING if spec.health.kind else ""
        exe.info.health_failures = 0
        exe.info.health_result = ""
        if not spec.health.kind or exe in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run(cell, exe, spec))
        self._tasks[exe] = task
        task.add_done_callback(lambda t: self._done(exe, t))

    def _done(self, exe: Executable, task: asyncio.Task[None]) -> None:
        self._tasks.pop(exe, None)
        top = _top(exe.info.cell_name)
        if not any(_top(e.info.cell_name) == top for e in self._tasks):
            self._cell_slots.pop(top, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("health.task_failed", cell=exe.info.cell_name, exe=exe.info.name, error=repr(task.exception()))

    def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    @property
    def probing(self) -> int:
        """Executables being probed (tests: probing stops with the run)."""
        return len(self._tasks)

    # -- the loop and the state machine ------------------------------------------------------------
    async def _run(self, cell: Cell, exe: Executable, spec: ExecutableSpec) -> None:
        check = spec.health
        started = time.monotonic()
        delay = min(check.interval_s, FIRST_PROBE_S)  # ready soon after the start, not an interval later
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exe.done), delay)
            delay = check.interval_s
            if not self._running(exe):
                return
            if cell.info.state is not CellState.ACTIVE:
                continue  # frozen (no probe could answer; Docker skips paused containers too) or being freed
            cell_slots = self._cell_slots.setdefault(_top(cell.info.name), asyncio.Semaphore(MAX_CELL_PROBES))
            async with cell_slots, self._slots:
                if not self._running(exe):
                    return
                ok, result = await self._probe(cell, exe, spec)
            if not self._running(exe):
                return
            if await self._record(cell, exe, spec, ok, result, time.monotonic() - started < check.start_period_s):
                return

    @staticmethod
    def _running(exe: Executable) -> bool:
        return not exe.done.done() and exe.info.state is ExecutableState.RUNNING

    async def _record(self, cell: Cell, exe: Executable, spec: ExecutableSpec, ok: bool, result: str,
                      in_start_period: bool) -> bool:
        """One probe's outcome; True when probing ends (the run is being killed as unhealthy)."""
        info, check = exe.info, spec.health
        info.health_result = result[:MAX_RESULT]
        if ok:
            info.health_failures = 0
            if info.health != HEALTHY:
                info.health = HEALTHY
                log.info("exe.healthy", cell=info.cell_name, exe=info.name, run=info.run)
                self._events.emit("healthy", info)
            return False
        info.health_failed_probes += 1
        if in_start_period and info.health == STARTING:
            return False  # Docker: failures during the start period do not count
        info.health_failures += 1
        if info.health_failures < check.retries or info.health == UNHEALTHY:
            return False
        info.health = UNHEALTHY
        log.warning("exe.unhealthy", cell=info.cell_name, exe=info.name, run=info.run,
                    failures=info.health_failures, result=info.health_result)
        self._events.emit("unhealthy", info)
        if spec.restart.mode == "never":
            return False  # Docker: it keeps running, marked unhealthy
        await self._kill(exe, f"unhealthy: {info.health_failures} consecutive failed probes "
                              f"(last: {info.health_result})")
        return True

    async def _kill(self, exe: Executable, reason: str) -> None:
        """SIGTERM, the default grace, then cgroup.kill of its leaf; its restart policy restarts it."""
        exe.unhealthy = True
        exe.info.reason = reason
        log.warning("exe.killed_unhealthy", cell=exe.info.cell_name, exe=exe.info.name, reason=reason)
        self._exits.signal(exe, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exe.done), self._config.default_grace_s)
        except TimeoutError:
            if self._backend.exists(exe.leaf):
                with contextlib.suppress(OSError, CellError):
                    self._backend.kill(exe.leaf)

    # -- probes --------------------------------------------------------------------------------------
    async def _probe(self, cell: Cell, exe: Executable, spec: ExecutableSpec) -> tuple[bool, str]:
        check = spec.health
        if check.kind == "exec":
            return await self._exec_probe(cell, exe, spec)
        try:
            return await asyncio.wait_for(self._net_probe(cell, check), check.timeout_s)
        except TimeoutError:
            return False, f"timeout after {check.timeout_s:g}s"
        except OSError as exc:
            return False, os.strerror(exc.errno) if exc.errno else str(exc)
        except (ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            return False, f"bad answer: {exc}"

    async def _net_probe(self, cell: Cell, check: HealthCheck) -> tuple[bool, str]:
        reader, writer = await _connect(cell.info.netns or None, check.port)
        try:
            if check.kind == "tcp":
                return True, "connected"
            if check.kind == "http":
                return await _http_get(reader, writer, check.port, check.path)
            return await _grpc_check(reader, writer, check.port, check.service)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exec_probe(self, cell: Cell, exe: Executable, spec: ExecutableSpec) -> tuple[bool, str]:
        check = spec.health
        leaf = probe_leaf(cell.info.name, spec.name)
        started = time.monotonic()
        out_r = -1
        try:
            if not self._backend.exists(leaf):
                self._backend.create(leaf)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            pid, early = await self._spawn_probe(cell, spec, leaf, out_w)  # it closes out_w
        except (OSError, CellError) as exc:
            if out_r >= 0:
                os.close(out_r)
            with contextlib.suppress(Exception):
                await kill_and_remove(self._backend, leaf)
            return False, f"probe did not start: {exc}"[:MAX_RESULT]
        output = _Output(out_r)
        try:
            ok, result = await self._wait_probe(check, leaf, pid, early, started)
        finally:
            output.close()
        text = output.first_line()
        return ok, f"{result}: {text}" if text else result

    async def _wait_probe(self, check: HealthCheck, leaf: str, pid: int, early: int | None,
                          started: float) -> tuple[bool, str]:
        ended = self._reaper.exit_status(pid, early)
        remaining = max(0.0, check.timeout_s - (time.monotonic() - started))
        try:
            status = await asyncio.wait_for(asyncio.shield(ended), remaining)
        except TimeoutError:
            with contextlib.suppress(OSError, CellError):
                self._backend.kill(leaf)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), 5.0)
            with contextlib.suppress(Exception):
                await kill_and_remove(self._backend, leaf)
            return False, f"timeout after {check.timeout_s:g}s"
        with contextlib.suppress(Exception):
            await kill_and_remove(self._backend, leaf)  # what the probe left behind
        if os.WIFSIGNALED(status):
            return False, f"killed by signal {os.WTERMSIG(status)}"
        code = os.waitstatus_to_exitcode(status)
        return code == 0, f"exit {code}"

    async def _spawn_probe(self, cell: Cell, spec: ExecutableSpec, leaf: str, out: int) -> tuple[int, int | None]:
        """The check's argv in ``leaf``, contained as ``spec``'s executable is (cf. Launcher.launch),
        its output into ``out`` (closed here in every case)."""
        pid, _, early = await spawn_contained(self._config, self._launcher, cell, spec, spec.health.command, leaf,
                                              (self._devnull, out, out), [out])
        return pid, early


async def spawn_contained(config: RuntimeConfig, launcher: Launcher, cell: Cell, spec: ExecutableSpec,
                          argv: Sequence[str], leaf: str, stdio: tuple[int, int, int], close_in_parent: list[int],
                          setup: Callable[[], None] | None = None,
                          extra_env: Sequence[tuple[str, str]] = ()) -> tuple[int, int, int | None]:
    """``argv`` in the leaf cgroup ``leaf`` of ``cell``, contained as ``spec``'s executable is (its
    namespaces, mount view, security profile, uid and env; cf. Launcher.launch): exec probes and exec
    sessions (:mod:`cells.exec`). ``close_in_parent`` is closed in every case. ``setup`` (run in the child
    before the joins' profile steps) forces the fork path. Returns (pid, pid in its namespace, early status)."""
    ns_fds: list[tuple[int, int]] = []
    pidns_fd = None
    handed = False  # the spawn closes ``close_in_parent``, also when it fails
    try:
        if cell.info.holder_pid:
            ns_fds = namespace_fds(cell.info.holder_pid)
            pidns_fd = ns.open_ns(cell.info.holder_pid, "pid")
            ns_fds.append((pidns_fd, 0))
        elif cell.info.netns:
            ns_fds = [(os.open(f"/run/netns/{cell.info.netns}", os.O_RDONLY | os.O_CLOEXEC), ns.CLONE_NEWNET)]
        exe_profile = profile.for_executable(cell.spec, spec)
        if not cell.info.isolate_process and not exe_profile.privileged:
            ns_fds.append((await launcher._view_fd(cell), ns.CLONE_NEWNS))
        req = ExecRequest(
            argv=argv,
            env=default_env(spec.cell_name, spec.name,
                            [*config.local_endpoint_env.items(), *spec.env, *extra_env]),
            setup=setup,
            cgroup_procs=launcher.backend.procs_files(leaf),
            namespaces=[(fd, kind) for fd, kind in ns_fds if kind],
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            cwd=spec.cwd,
            uid=spec.uid if spec.uid is not None else config.default_uid,
            gid=spec.gid if spec.uid is not None or spec.gid is not None else config.default_gid,
            pidns_fd=pidns_fd,
            close_in_parent=close_in_parent,
            exec_timeout_s=config.exec_timeout_s,
            profile=exe_profile,
            share_memory=not launcher._memory_limited(spec.cell_name),
        )
        handed = True
        return await launcher._exec(req)
    finally:
        if not handed:
            for fd in close_in_parent:
                os.close(fd)
        for fd, _ in ns_fds:
            os.close(fd)


class _Output:
    """The start of a probe's output (stdout and stderr), read as it comes; the rest is read and dropped
    (a probe never blocks on a full pipe, and is never a log run)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._head = bytearray()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)
        self._open = True

    def _read(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        if len(self._head) < MAX_RESULT:
            self._head += chunk[:MAX_RESULT - len(self._head)]

    def close(self) -> None:
        if self._open:
            self._open = False
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)

    def first_line(self) -> str:
        lines = bytes(self._head).decode("utf-8", "replace").strip().splitlines()
        return lines[0].strip()[:MAX_RESULT] if lines else ""


def _top(cell_name: str) -> str:
    return cell_name.split("/", 1)[0]


def _check_dict(check: HealthCheck) -> dict[str, object]:
    from cells.state import to_dict

    out: dict[str, object] = to_dict(check)
    return out


# -- the network probes ------------------------------------------------------------------------------


async def _connect(netns: str | None, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to 127.0.0.1:``port`` in ``netns`` (None: ours); the socket is non-blocking."""
    if netns is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        sock = await asyncio.to_thread(open_socket, netns, socket.AF_INET, socket.SOCK_STREAM, 0)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return await asyncio.open_connection(sock=sock, limit=MAX_ANSWER)
    except BaseException:
        sock.close()
        raise


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int,
                    path: str) -> tuple[bool, str]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: cellar-health\r\n"
                 "Accept: */*\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    line = (await reader.readline()).decode("latin-1").strip()
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f"not an HTTP answer: {line[:60]!r}"
    code = int(parts[1])
    return 200 <= code < 400, f"HTTP {code}"


# gRPC over HTTP/2 (RFC 9113, RFC 7541): just enough for one unary call.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0, 1, 3, 4, 6, 7
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = bytearray([first | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def grpc_health_request(port: int, service: str) -> bytes:
    """The bytes a client sends for ``grpc.health.v1.Health/Check(service)`` on stream 1."""
    headers = b"".join(_hpack_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("user-agent", "cellar-health")))
    svc = service.encode()
    message = (b"\x0a" + _varint(len(svc)) + svc) if svc else b""
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    return (_PREFACE + _frame(_SETTINGS, 0, 0) + _frame(_HEADERS, _END_HEADERS, 1, headers)
            + _frame(_DATA, _END_STREAM, 1, body))


def _health_status(message: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, a varint); 0 (UNKNOWN) when absent."""
    i, status = 0, 0
    while i < len(message):
        key = message[i]
        i += 1
        if key & 0x07 != 0:
            raise ValueError("unexpected wire type in HealthCheckResponse")
        value, shift = 0, 0
        while True:
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if key >> 3 == 1:
            status = value
    return status


async def _grpc_check(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int,
                      service: str) -> tuple[bool, str]:
    writer.write(grpc_health_request(port, service))
    await writer.drain()
    data = bytearray()
    while True:
        head = await reader.readexactly(9)
        size, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if size > MAX_ANSWER:
            raise ValueError(f"a frame of {size} bytes")
        payload = await reader.readexactly(size)
        if kind == _SETTINGS and not flags & _ACK:
            writer.write(_frame(_SETTINGS, _ACK, 0))
        elif kind == _PING and not flags & _ACK:
            writer.write(_frame(_PING, _ACK, 0, payload))
        elif kind == _GOAWAY:
            return False, "the server closed the connection (GOAWAY)"
        elif kind == _RST_STREAM and stream == 1:
            return False, "the server reset the call"
        elif kind == _DATA and stream == 1:
            if flags & _PADDED:
                payload = payload[1:len(payload) - payload[0]]
            data += payload
            if len(data) > MAX_ANSWER:
                raise ValueError("an oversized answer")
        if stream == 1 and kind in (_DATA, _HEADERS) and flags & _END_STREAM:
            break
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[1:5], "big"):
            break  # the whole response message is here
    if len(data) < 5:
        return False, "no HealthCheckResponse (unknown service, or the call failed)"
    message = bytes(data[5:5 + int.from_bytes(data[1:5], "big")])
    status = _health_status(message)
    name = GRPC_STATUS.get(status, str(status)) if message else "UNKNOWN (no status: an unknown service?)"
    return status == 1, name
