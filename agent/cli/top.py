"""``cellar top``: cells by resource use, refreshed live, as ``docker stats`` and ``top`` show them.

CPU % is a rate: the CPU time a cell used between two samples over the wall time between them (100% =
one CPU, as docker stats), beside its quota; memory against its ``memory.max``; pids against
``pids.max``; OOM kills; PSI (some, avg10) for cpu, memory and io. On a terminal: a rich table redrawn
every ``--interval`` until Ctrl-C. Otherwise plain text, one table per sample (``top -b``), by
default a single one; ``-o json``: NDJSON, one object per cell and sample.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from agent.cli.complete import cell_names
from agent.cli.connection import Target
from agent.cli.describe import cpu_limit
from agent.cli.human import rfc3339_ns, size, usage
from agent.cli.output import printable, stream_record, structured, table
from agent.cli.units import Duration
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc, types_pb2

SORT_KEYS = ("cpu", "memory", "pids", "name")


@dataclass(frozen=True)
class Sample:
    """One cell's numbers at one time."""

    wall_ns: int
    cpu_us: int


def cell_row(info: cells_pb2.CellInfo, cpu_percent: float | None, now_ns: int) -> dict[str, Any]:
    """The JSON object of one cell in one sample (``top -o json``)."""
    st, spec = info.stats, info.cell
    quota = cpu_limit(spec)
    return {
        "time": rfc3339_ns(now_ns),
        "cell": info.name,
        "cpu_percent": None if cpu_percent is None else round(cpu_percent, 1),
        "cpu_limit_percent": None if quota is None else round(quota * 100, 1),
        "memory": st.memory_current,
        "memory_max": spec.memory_max if spec.HasField("memory_max") else None,
        "pids": st.pids_current,
        "pids_max": spec.pids_max if spec.HasField("pids_max") else None,
        "oom_kills": st.oom_kills,
        "psi_cpu": round(st.pressure.cpu_some_avg10, 2),
        "psi_memory": round(st.pressure.memory_some_avg10, 2),
        "psi_io": round(st.pressure.io_some_avg10, 2),
        "running": sum(e.state == types_pb2.EXECUTABLE_STATE_RUNNING for e in info.executables),
    }


def _sort_key(sort: str) -> Any:
    if sort == "name":
        return lambda r: (r["cell"],)
    field = {"cpu": "cpu_percent", "memory": "memory", "pids": "pids"}[sort]
    return lambda r: (-(r[field] or 0), r["cell"])


def shown_row(r: dict[str, Any]) -> dict[str, Any]:
    """A person's view of :func:`cell_row`."""
    cpu = "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%"
    if r["cpu_limit_percent"] is not None:
        cpu += f" / {r['cpu_limit_percent']:g}%"
    return {"cell": r["cell"], "cpu": cpu, "memory": usage(r["memory"], r["memory_max"]),
            "pids": f"{r['pids']} / {r['pids_max']}" if r["pids_max"] else str(r["pids"]),
            "oom": r["oom_kills"], "psi cpu/mem/io": f"{r['psi_cpu']:.1f}/{r['psi_memory']:.1f}/{r['psi_io']:.1f}",
            "running": r["running"]}


class Sampler:
    """Asks cellard for every cell's stats and turns cumulative CPU time into a rate."""

    def __init__(self, stub: cells_pb2_grpc.CellsStub, prefix: str, timeout: float) -> None:
        self._stub, self._prefix, self._timeout = stub, prefix, timeout
        self._last: dict[str, Sample] = {}

    def sample(self) -> list[dict[str, Any]]:
        reply = self._stub.List(cells_pb2.ListCellsRequest(prefix=self._prefix, include_stats=True),
                                timeout=self._timeout)
        now = time.time_ns()
        rows, seen = [], {}
        for info in reply.cells:
            current = Sample(now, info.stats.cpu_usage_us)
            before = self._last.get(info.name)
            rate = None
            if before is not None and current.wall_ns > before.wall_ns:
                rate = max(0.0, (current.cpu_us - before.cpu_us) * 1000 * 100 / (current.wall_ns - before.wall_ns))
            seen[info.name] = current
            rows.append(cell_row(info, rate, now))
        self._last = seen
        return rows


def _rich_table(rows: list[dict[str, Any]], header: str) -> Any:
    from rich.table import Table

    out = Table(title=header, title_justify="left", box=None, header_style="bold")
    for name, justify in (("CELL", "left"), ("CPU", "right"), ("MEMORY", "right"), ("PIDS", "right"),
                          ("OOM", "right"), ("PSI CPU/MEM/IO", "right"), ("RUNNING", "right")):
        out.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        shown = shown_row(r)
        out.add_row(*(printable(str(v)) for v in shown.values()),
                    style="red" if r["oom_kills"] else None)
    return out


def _header(rows: list[dict[str, Any]], interval: float, live: bool = False) -> str:
    total = sum(r["memory"] for r in rows)
    text = f"cellar top - {time.strftime('%H:%M:%S')}  {len(rows)} cells, memory {size(total)}"
    return text + (f", every {interval:g}s (Ctrl-C quits)" if live else "")


@click.command()
@click.argument("prefix", default="", shell_complete=cell_names)
@click.option("--interval", "-d", type=Duration(maximum=3600, positive=True), default=2.0, show_default=True,
              help="seconds between samples (top -d)")
@click.option("--sort", type=click.Choice(SORT_KEYS), default="cpu", show_default=True,
              help="order: most CPU, memory or pids first, or by name")
@click.option("--iterations", "-n", type=click.IntRange(1, None),
              help="stop after N samples (default: until Ctrl-C on a terminal, 1 otherwise)")
@click.pass_obj
def top(target: Target, prefix: str, interval: float, sort: str, iterations: int | None) -> None:
    """Cells by CPU (a rate, beside the quota), memory (against memory.max), pids, OOM kills and PSI."""
    live = target.output == "table" and sys.stdout.isatty()
    if iterations is None and not live:
        iterations = 1
    key = _sort_key(sort)
    with target.channel() as channel:
        sampler = Sampler(cells_pb2_grpc.CellsStub(channel), prefix, target.timeout)
        sampler.sample()  # the first sample gives no rate: the baseline
        time.sleep(min(interval, 1.0))
        try:
            if live:
                _live(sampler, key, interval, iterations)
            else:
                for n in range(iterations or 1):
                    if n:
                        time.sleep(interval)
                    rows = sorted(sampler.sample(), key=key)
                    if structured(target.output):
                        for r in rows:
                            click.echo(stream_record(target.output, r))
                    else:
                        click.echo(_header(rows, interval))
                        click.echo(table([shown_row(r) for r in rows],
                                         ["cell", "cpu", "memory", "pids", "oom", "psi cpu/mem/io", "running"]))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            pass


def _live(sampler: Sampler, key: Any, interval: float, iterations: int | None) -> None:
    from rich.console import Console
    from rich.live import Live

    rows = sorted(sampler.sample(), key=key)
    with Live(_rich_table(rows, _header(rows, interval, live=True)), console=Console(), auto_refresh=False,
              screen=False) as view:
        view.refresh()
        done = 1
        while iterations is None or done < iterations:
            time.sleep(interval)
            rows = sorted(sampler.sample(), key=key)
            view.update(_rich_table(rows, _header(rows, interval, live=True)), refresh=True)
            done += 1
