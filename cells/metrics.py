"""Per-cell and per-executable metrics in Prometheus form, computed at scrape time.

The view users know from cAdvisor's per-cgroup metrics: CPU seconds, memory bytes, pids, OOM kills,
pressure stall time per cell; state, starts and log volume per executable. :class:`CellCollector`
is a ``prometheus_client`` custom collector: on each scrape it asks ``fetch`` (the runtime's
``list(stats=True)``, made synchronous and time-bounded by the caller) for a fresh snapshot, at most
once per ``cache_s`` so several scrapers or a fast one cost the supervisor one listing a second.

Log counters come from the log store itself (:class:`LogCounter`): one reading position per
executable run advances incrementally over the records written since the last scrape, bounded per
scrape, so a busy log is counted over several scrapes rather than stalling one. No gRPC here: the
HTTP endpoint and the RPC counters live in :mod:`agent.core.metrics`.

In ``cells`` because its data is the runtime's cell listing (:class:`cells.state.CellInfo`); the log
counts read the store through :mod:`observe.logread`, which ``cells`` may import (never the reverse).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cells.state import CellInfo, ExecutableState
from observe.logread import GAP_REASON, Position
from observe.logstore import InvalidName, run_dir
from observe.records import Stream

#: Log records decoded per scrape at most, over all executables (bounds a scrape's time).
LOG_RECORD_BUDGET = 200_000

STREAM_LABELS = {Stream.STDOUT: "stdout", Stream.STDERR: "stderr"}


@dataclass
class LogTotals:
    """What one executable wrote since cellard started counting (its current run's history included)."""

    lines: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    bytes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    dropped: int = 0  # lines the writer could not store (disk full): LOST records it wrote
    rotated: int = 0  # lines rotated away before they were counted (the counter skipped them)


class _RunCursor:
    """An open reading position in one run directory; counts what it passes into ``totals``."""

    def __init__(self, directory: Path, run: int) -> None:
        self.run = run
        self.pos = Position(directory, 0, None)

    def advance(self, totals: LogTotals, budget: int) -> int:
        """Count up to ``budget`` new records; returns how many were read."""
        used = 0
        while used < budget and not self.pos.done:
            records, moved = self.pos.step(min(10_000, budget - used))
            used += len(records)
            for rec in records:
                label = STREAM_LABELS.get(rec.stream)
                if label is not None:
                    totals.bytes[label] += len(rec.data)
                    if not rec.partial:
                        totals.lines[label] += 1
                elif rec.stream is Stream.LOST:
                    if rec.data == GAP_REASON:
                        totals.rotated += rec.lost
                    else:
                        totals.dropped += rec.lost
            if not moved:
                break
        return used

    def close(self) -> None:
        self.pos.close()


class LogCounter:
    """Log lines/bytes/dropped per executable, read incrementally from ``log_root``."""

    def __init__(self, log_root: Path, budget: int = LOG_RECORD_BUDGET) -> None:
        self.log_root = Path(log_root)
        self.budget = budget
        self.totals: dict[tuple[str, str], LogTotals] = {}
        self._cursors: dict[tuple[str, str], list[_RunCursor]] = {}

    def update(self, cells: list[CellInfo]) -> None:
        seen: set[tuple[str, str]] = set()
        budget = self.budget
        for cell in cells:
            for exe in cell.executables:
                key = (cell.name, exe.name)
                seen.add(key)
                if exe.run <= 0:
                    continue
                cursors = self._cursors.setdefault(key, [])
                totals = self.totals.setdefault(key, LogTotals())
                if not cursors or cursors[-1].run != exe.run:
                    try:
                        directory = run_dir(self.log_root, cell.name, exe.name, exe.run)
                    except InvalidName:
                        continue
                    cursors.append(_RunCursor(directory, exe.run))
                # Finish older runs first (their lines came first), then the current one. An older
                # run read to its end with budget to spare is complete (EXIT read, or a lost run
                # that will never get one): drop its cursor.
                while budget > 0:
                    budget -= cursors[0].advance(totals, budget)
                    if len(cursors) == 1 or budget <= 0:
                        break
                    cursors.pop(0).close()
        for key in set(self._cursors) - seen:
            for cursor in self._cursors.pop(key):
                cursor.close()
            self.totals.pop(key, None)

    def close(self) -> None:
        for cursors in self._cursors.values():
            for cursor in cursors:
                cursor.close()
        self._cursors.clear()


class CellCollector(Collector):
    """Prometheus collector over the runtime's cells; ``fetch`` raises on failure (runtime down, timeout)."""

    def __init__(
        self,
        fetch: Callable[[], list[CellInfo]],
        log_root: Path | None = None,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.cache_s = cache_s
        self.clock = clock
        self.logs = LogCounter(log_root) if log_root is not None else None
        self._lock = threading.RLock()  # scrapes come from the HTTP server's threads
        self._cells: list[CellInfo] = []
        self._ok = False
        self._taken = float("-inf")
        self._scrape_s = 0.0

    def snapshot(self) -> tuple[list[CellInfo], bool]:
        """The cells (cached ``cache_s``) and whether the last fetch succeeded."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> tuple[list[CellInfo], bool]:
        """Fetch again when the cache is older than ``cache_s``; the caller holds the lock."""
        now = self.clock()
        if now - self._taken >= self.cache_s:
            started = time.monotonic()
            try:
                self._cells, self._ok = self.fetch(), True
            except Exception:  # any failure: report runtime_up 0, keep serving the endpoint
                self._cells, self._ok = [], False
            if self.logs is not None and self._ok:
                self.logs.update(self._cells)
            self._taken = now
            self._scrape_s = time.monotonic() - started
        return self._cells, self._ok

    def describe(self) -> list[object]:
        return []  # unchecked collector: families depend on the runtime's answer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._lock:  # build every family from one consistent snapshot
            cells, ok = self._refresh()
            families: list[GaugeMetricFamily | CounterMetricFamily] = [
                GaugeMetricFamily("cellar_runtime_up", "1 when the supervisor answered the last listing", value=int(ok)),
                GaugeMetricFamily("cellar_collect_duration_seconds", "time the last listing and log count took",
                                  value=self._scrape_s),
                *cell_families(cells),
            ]
            if self.logs is not None:
                families += log_families(self.logs.totals)
        yield from families


def cell_families(cells: list[CellInfo]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The per-cell and per-executable families of one listing (pure: easy to test)."""
    c = ["cell"]
    cpu = CounterMetricFamily("cellar_cell_cpu_usage_seconds", "CPU time used by the cell (cpu.stat usage_usec)", labels=c)
    cpu_user = CounterMetricFamily("cellar_cell_cpu_user_seconds", "user CPU time of the cell", labels=c)
    cpu_sys = CounterMetricFamily("cellar_cell_cpu_system_seconds", "system CPU time of the cell", labels=c)
    mem = GaugeMetricFamily("cellar_cell_memory_usage_bytes", "memory charged to the cell (memory.current)", labels=c)
    peak = GaugeMetricFamily("cellar_cell_memory_peak_bytes", "highest memory usage of the cell", labels=c)
    pids = GaugeMetricFamily("cellar_cell_pids", "processes and threads in the cell (pids.current)", labels=c)
    ooms = CounterMetricFamily("cellar_cell_oom_kills", "OOM kills in the cell (memory.events oom_kill)", labels=c)
    stall = CounterMetricFamily(
        "cellar_cell_pressure_stall_seconds", "time some task of the cell stalled on a resource (PSI some total)",
        labels=["cell", "resource"],
    )
    frozen = GaugeMetricFamily("cellar_cell_frozen", "1 while the cell is frozen", labels=c)
    state = GaugeMetricFamily(
        "cellar_executable_state", "1 for the executable's current state", labels=["cell", "executable", "state"]
    )
    starts = CounterMetricFamily("cellar_executable_starts", "runs of the executable (its run number)",
                                 labels=["cell", "executable"])
    restarts = CounterMetricFamily("cellar_executable_restarts",
                                   "runs its restart policy started since the Start that began the series",
                                   labels=["cell", "executable"])
    limits = list(limit_families(cells))
    for cell in cells:
        frozen.add_metric([cell.name], 1 if cell.state.value == "frozen" else 0)
        s = cell.stats
        if s is not None:
            cpu.add_metric([cell.name], s.cpu_usage_us / 1e6)
            cpu_user.add_metric([cell.name], s.cpu_user_us / 1e6)
            cpu_sys.add_metric([cell.name], s.cpu_system_us / 1e6)
            mem.add_metric([cell.name], s.memory_current)
            peak.add_metric([cell.name], s.memory_peak)
            pids.add_metric([cell.name], s.pids_current)
            ooms.add_metric([cell.name], s.oom_kills)
            if s.pressure is not None:
                for resource, total in (("cpu", s.pressure.cpu_some_total_us), ("memory", s.pressure.memory_some_total_us),
                                        ("io", s.pressure.io_some_total_us)):
                    stall.add_metric([cell.name, resource], total / 1e6)
        for exe in cell.executables:
            for st in ExecutableState:
                state.add_metric([cell.name, exe.name, st.value], 1 if exe.state is st else 0)
            starts.add_metric([cell.name, exe.name], exe.run)
            restarts.add_metric([cell.name, exe.name], exe.restarts)
    yield from (cpu, cpu_user, cpu_sys, mem, peak, pids, ooms, stall, frozen, state, starts, restarts)
    yield from health_families(cells)
    yield from limits


#: cpu.max's period when a quota is given without one (the kernel's default).
DEFAULT_CPU_PERIOD_US = 100_000


def limit_families(cells: list[CellInfo]) -> Iterator[GaugeMetricFamily]:
    """Each cell's limits as set (its spec): a series only where a limit is, so ``usage / limit``
    (saturation) is empty for an unlimited cell instead of a division by a sentinel."""
    c = ["cell"]
    mem_max = GaugeMetricFamily("cellar_cell_memory_max_bytes", "the cell's memory.max (hard limit)", labels=c)
    mem_high = GaugeMetricFamily("cellar_cell_memory_high_bytes", "the cell's memory.high (throttling above)",
                                 labels=c)
    cores = GaugeMetricFamily("cellar_cell_cpu_limit_cores", "the cell's CPU limit in cores (cpu.max quota / period)",
                              labels=c)
    quota = GaugeMetricFamily("cellar_cell_cpu_quota_seconds", "the cell's cpu.max quota per period", labels=c)
    period = GaugeMetricFamily("cellar_cell_cpu_period_seconds", "the cell's cpu.max period", labels=c)
    pids_max = GaugeMetricFamily("cellar_cell_pids_max", "the cell's pids.max", labels=c)
    for cell in cells:
        lim = cell.spec.get("limits") or {}
        for family, key in ((mem_max, "memory_max"), (mem_high, "memory_high"), (pids_max, "pids_max")):
            if lim.get(key) is not None:
                family.add_metric([cell.name], lim[key])
        if lim.get("cpu_max_quota_us") is not None:
            period_us = lim.get("cpu_max_period_us") or DEFAULT_CPU_PERIOD_US
            quota.add_metric([cell.name], lim["cpu_max_quota_us"] / 1e6)
            period.add_metric([cell.name], period_us / 1e6)
            cores.add_metric([cell.name], lim["cpu_max_quota_us"] / period_us)
    yield from (mem_max, mem_high, cores, quota, period, pids_max)


def health_families(cells: list[CellInfo]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The running executables with a health check (:mod:`cells.health`): healthy 1/0 (0 while starting
    or unhealthy), and their failed probes (of the current run: a restart counts from 0 again)."""
    labels = ["cell", "executable"]
    healthy = GaugeMetricFamily("cellar_executable_healthy",
                                "1 while the executable's health check passes, 0 while starting or unhealthy",
                                labels=labels)
    failed = CounterMetricFamily("cellar_executable_health_failed_probes",
                                 "failed health probes of the executable's current run", labels=labels)
    for cell in cells:
        for exe in cell.executables:
            if exe.health and exe.state is ExecutableState.RUNNING:
                healthy.add_metric([cell.name, exe.name], 1 if exe.health == "healthy" else 0)
                failed.add_metric([cell.name, exe.name], exe.health_failed_probes)
    yield from (healthy, failed)


def log_families(totals: dict[tuple[str, str], LogTotals]) -> Iterator[CounterMetricFamily]:
    labels = ["cell", "executable", "stream"]
    lines = CounterMetricFamily("cellar_executable_log_lines", "log lines captured (stdout/stderr)", labels=labels)
    size = CounterMetricFamily("cellar_executable_log_bytes", "log bytes captured (line data)", labels=labels)
    dropped = CounterMetricFamily(
        "cellar_executable_log_dropped_lines", "lines the log store could not keep (disk full)",
        labels=["cell", "executable"],
    )
    rotated = CounterMetricFamily(
        "cellar_executable_log_uncounted_lines", "lines rotated away before they were counted",
        labels=["cell", "executable"],
    )
    for (cell, exe), t in sorted(totals.items()):
        for stream in ("stdout", "stderr"):
            lines.add_metric([cell, exe, stream], t.lines[stream])
            size.add_metric([cell, exe, stream], t.bytes[stream])
        dropped.add_metric([cell, exe], t.dropped)
        rotated.add_metric([cell, exe], t.rotated)
    yield from (lines, size, dropped, rotated)
