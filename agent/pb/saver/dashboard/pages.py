"""The dashboard's HTML, rendered on the server.

Why the standard library and not a template engine: a handful of pages of tables, no new
dependency in a root agent's package, and one rule that is easy to review: every value from a
report goes through :func:`esc` (or :func:`href` for a path segment) and nothing else is
interpolated. Pages work without JavaScript; ``static/dashboard.js`` only refreshes ``<main>``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from agent.pb.saver.dashboard import charts
from agent.pb.saver.store import FleetPoint
from proto.pb import workerServer_pb2 as pb


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def href(*segments: str, **query: str) -> str:
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    query = {k: v for k, v in query.items() if v}
    return esc(path + ("?" + urlencode(query) if query else ""))


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def age(ns: int, now_ns: int) -> str:
    s = max(0, (now_ns - ns) // 1_000_000_000)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago" if s < 172800 else f"{s // 86400}d ago"


def stamp(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


@dataclass
class MachineRow:
    machine: pb.Machine
    received_at_ns: int
    peer: str
    reports: int

    def state(self, now_ns: int, stale_after_s: float) -> str:
        return "online" if now_ns - self.received_at_ns <= stale_after_s * 1e9 else "stale"

    def matches(self, q: str) -> bool:
        m = self.machine
        words = [m.hostname, m.uuid, m.api_address, m.os]
        words += [c.name for c in m.cells] + [e.name for c in m.cells for e in c.executables]
        return any(q in w.lower() for w in words)


def layout(title: str, body: str, refresh_s: int) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)} · cellar</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\">"
            "<script src=\"/static/dashboard.js\" defer></script></head><body>"
            "<header><a class=\"brand\" href=\"/\">cellar fleet</a></header>"
            f"<main id=\"live\" data-refresh=\"{int(refresh_s)}\">{body}</main></body></html>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


MAX_ROWS = 500  # a page of a 10,000-machine fleet stays small; the search narrows it


def overview(rows: list[MachineRow], fleet: list[FleetPoint], *, q: str, state: str, now_ns: int,
             stale_after_s: float, refresh_s: int) -> str:
    matching = [r for r in rows if (not q or r.matches(q.lower()))
                and (not state or r.state(now_ns, stale_after_s) == state)]
    shown = matching[:MAX_ROWS]
    online = sum(r.state(now_ns, stale_after_s) == "online" for r in rows)
    cells = sum(len(r.machine.cells) for r in rows)
    exes = sum(len(c.executables) for r in rows for c in r.machine.cells)
    options = "".join(f'<option value="{v}"{" selected" if v == state else ""}>{label}</option>'
                      for v, label in (("", "any state"), ("online", "online"), ("stale", "stale")))
    form = (f'<form class="filter" method="get" action="/"><input type="search" name="q" value="{esc(q)}" '
            f'placeholder="hostname, uuid, cell, executable" maxlength="256"><select name="state">{options}</select>'
            '<button type="submit">Filter</button></form>')
    summary = (f'<p class="summary"><span id="machines-count">{len(rows)}</span> machines, {online} online; '
               f'{cells} cells, {exes} executables</p>')
    body_rows = []
    for r in shown:
        m = r.machine
        st = r.state(now_ns, stale_after_s)
        body_rows.append([
            f'<a href="{href("machine", m.uuid)}">{esc(m.hostname or "(no hostname)")}</a>',
            f"<code>{esc(m.uuid)}</code>", esc(m.api_address or "-"),
            f'<span title="{esc(stamp(r.received_at_ns))}">{esc(age(r.received_at_ns, now_ns))}</span>',
            f'<span class="state {st}">{st}</span>' + (' <span class="state error">error</span>' if m.error else ""),
            str(len(m.cells)), str(sum(len(c.executables) for c in m.cells)), str(m.cpus or "-"),
            esc(f"{size(m.usage.memory_used_bytes)} / {size(m.memory_bytes)}" if m.memory_bytes else "-"),
        ])
    grid = table(["Hostname", "UUID", "API address", "Last report", "State", "Cells", "Executables", "CPUs",
                  "Memory"], body_rows, "machines")
    cpu = charts.svg([(p.at_ns, p.cpu_cores) for p in fleet], "Fleet CPU (cores)", "cores")
    mem = charts.svg([(p.at_ns, float(p.memory_used_bytes)) for p in fleet], "Fleet memory in use", "bytes")
    more = (f'<p class="summary">Showing {len(shown)} of {len(matching)} matching machines: refine the search.</p>'
            if len(matching) > len(shown) else "")
    return f'<h1>Fleet</h1>{summary}<div class="charts">{cpu}{mem}</div>{form}{more}{grid}'


def _limits(cell: object) -> str:
    parts = []
    if getattr(cell, "cpu_max_millicores", 0):
        parts.append(f"cpu {cell.cpu_max_millicores / 1000:g}")  # type: ignore[attr-defined]
    if getattr(cell, "memory_max_bytes", 0):
        parts.append(f"mem {size(cell.memory_max_bytes)}")  # type: ignore[attr-defined]
    if getattr(cell, "pids_max", 0):
        parts.append(f"pids {cell.pids_max}")  # type: ignore[attr-defined]
    return ", ".join(parts) or "none"


def machine_page(row: MachineRow, history: list[pb.Machine], *, now_ns: int, stale_after_s: float) -> str:
    """``history``: the stored reports of this machine, oldest first (the latest included)."""
    m = row.machine
    st = row.state(now_ns, stale_after_s)
    facts = [("UUID", m.uuid), ("State", st), ("Last report", f"{stamp(row.received_at_ns)} ({age(row.received_at_ns, now_ns)})"),
             ("Reported from", row.peer), ("API address", m.api_address or "-"), ("OS", m.os), ("Kernel", m.kernel),
             ("cellar", m.cellar_version), ("cgroup mode", m.cgroup_mode), ("CPUs", m.cpus),
             ("Memory", f"{size(m.usage.memory_used_bytes)} used of {size(m.memory_bytes)}"),
             ("Reports kept", row.reports)]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    error = f'<p class="error">Report error: {esc(m.error)}</p>' if m.error else ""
    cpu, memory, per_cell = charts.machine_series(history)
    chart_html = (charts.svg(cpu, "Machine CPU (cores)", "cores")
                  + charts.svg(memory, "Machine memory in use", "bytes")
                  + "".join(charts.svg(per_cell.get(c.name, []), f"Cell {c.name} CPU (cores)", "cores")
                            for c in m.cells))
    usage = {c.cell: c for c in m.usage.cells}
    cell_rows = []
    for c in m.cells:
        u = usage.get(c.name)
        exes = "".join(
            f'<li><span class="exe">{esc(e.name)}</span> <span class="state {esc(e.state)}">{esc(e.state)}</span>'
            + (f" pid {e.pid}" if e.pid else "") + (f", {e.restarts} restarts" if e.restarts else "")
            + (f', health <span class="state {esc(e.health)}">{esc(e.health)}</span>' if e.health else "")
            + (f", last exit {esc(e.exit)}" if e.exit else "") + "</li>"
            for e in c.executables)
        cell_rows.append([esc(c.name), f'<span class="state {esc(c.state)}">{esc(c.state)}</span>', esc(_limits(c)),
                          esc(size(u.memory_bytes)) if u else "-", f"<ul>{exes}</ul>" if exes else "-"])
    iface_rows = [[esc(i.name), esc(i.state or "-"), esc(i.netns or "host"),
                   esc(", ".join(a.ip for a in i.address) or "-"), esc(i.error)] for i in m.ifaces]
    port_rows = [[esc(a.ip), str(p.port), esc(p.protocol or "-"), esc(p.cell or "-"), esc(p.executable or "-"),
                  esc(p.process or "-"), str(p.pid or "-"), esc(p.service)]
                 for i in m.ifaces for a in i.address for p in a.ports]
    return (f'<h1>{esc(m.hostname or m.uuid)}</h1><p><a href="/">&larr; fleet</a></p>{error}<dl class="facts">{dl}</dl>'
            f'<div class="charts">{chart_html}</div>'
            f'<h2>Cells</h2>{table(["Cell", "State", "Limits", "Memory", "Executables"], cell_rows, "cells")}'
            f'<h2>Listening ports</h2>'
            f'{table(["Address", "Port", "Protocol", "Cell", "Executable", "Process", "PID", "Service"], port_rows, "ports")}'
            f'<h2>Interfaces</h2>{table(["Name", "State", "Network namespace", "Addresses", "Error"], iface_rows, "ifaces")}')


def login_page(failed: bool) -> str:
    note = '<p class="error">That token is not valid.</p>' if failed else ""
    return ('<h1>Sign in</h1>' + note + '<form method="post" action="/login" class="login">'
            '<label>Access token <input type="password" name="token" autocomplete="current-password" '
            'maxlength="512" required></label> <button type="submit">Sign in</button></form>')


def message_page(text: str) -> str:
    return f"<h1>{esc(text)}</h1>"
