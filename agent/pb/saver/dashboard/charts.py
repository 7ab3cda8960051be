"""Small inline SVG line charts, drawn on the server from the stored report history.

No chart library (nothing to fetch, nothing to audit, readable without JavaScript); CPU comes from
consecutive reports' cumulative counters (cores = delta CPU time / delta wall time).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from proto.pb import workerServer_pb2 as pb

Point = tuple[int, float]  # (wall clock ns, value)
WIDTH, HEIGHT, PAD = 480, 120, 4
MAX_POINTS = 500


def cpu_series(counters: Sequence[tuple[int, int]]) -> list[Point]:
    """(at_ns, cumulative CPU us), oldest first -> (at_ns, cores) for each consecutive pair."""
    out: list[Point] = []
    for (t0, c0), (t1, c1) in zip(counters, counters[1:], strict=False):
        if t1 > t0 and c1 >= c0:  # a counter reset (reboot) or clock step: no point
            out.append((t1, (c1 - c0) * 1000 / (t1 - t0)))
    return out


def machine_series(history: Sequence[pb.Machine]) -> tuple[list[Point], list[Point], dict[str, list[Point]]]:
    """Machine CPU (cores), machine memory (bytes) and per-cell CPU from reports, oldest first."""
    sampled = [m for m in history if m.usage.at_ns]
    cpu = cpu_series([(m.usage.at_ns, m.usage.cpu_usage_us) for m in sampled])
    memory = [(m.usage.at_ns, float(m.usage.memory_used_bytes)) for m in sampled]
    per_cell: dict[str, list[tuple[int, int]]] = {}
    for m in sampled:
        for c in m.usage.cells:
            per_cell.setdefault(c.cell, []).append((m.usage.at_ns, c.cpu_usage_us))
    return cpu, memory, {name: cpu_series(points) for name, points in per_cell.items()}


def label(value: float, unit: str) -> str:
    """``2.2 GiB`` for bytes, ``1.5 cores`` otherwise."""
    if unit == "bytes":
        for name in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or name == "TiB":
                return f"{value:.3g} {name}"
            value /= 1024
    return f"{value:.3g} {unit}"


def svg(points: Sequence[Point], title: str, unit: str) -> str:
    """A line chart; ``data-points`` says how many points it draws (0: an empty frame with a note)."""
    points = list(points)[-MAX_POINTS:]
    head = (f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
            f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'data-points="{len(points)}">')
    if not points:
        return head + f'<text x="{PAD}" y="{HEIGHT // 2}">no samples yet</text></svg></figure>'
    t0, t1 = points[0][0], points[-1][0]
    peak = max(v for _, v in points)
    top = peak or 1.0
    span = max(1, t1 - t0)

    def xy(t: int, v: float) -> tuple[float, float]:
        x = PAD + (WIDTH - 2 * PAD) * ((t - t0) / span if len(points) > 1 else 0.5)
        return round(x, 1), round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * v / top, 1)

    coords = [xy(t, v) for t, v in points]
    line = " ".join(f"{x},{y}" for x, y in coords)
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="2"><title>{escape(label(v, unit))}</title></circle>'
                   for (x, y), (_, v) in zip(coords, points, strict=True))
    return (head + f'<polyline points="{line}"/>{dots}'
            f'<text x="{PAD}" y="12">max {escape(label(peak, unit))}</text></svg></figure>')
