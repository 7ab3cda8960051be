"""The dashboard's HTML without a server: hostile report fields come out escaped, big fleets paged."""

from __future__ import annotations

from html.parser import HTMLParser

from agent.pb.saver.dashboard import pages
from proto.cellar.v1 import report_pb2
from proto.pb import workerServer_pb2 as pb

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class Tags(HTMLParser):
    """Every tag and attribute name as a browser's tokenizer sees them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, [name for name, _ in attrs]))


def _row(**kw: object) -> pages.MachineRow:
    return pages.MachineRow(pb.Machine(**kw), received_at_ns=1, peer=EVIL, reports=1)  # type: ignore[arg-type]


def test_every_report_field_is_escaped_on_both_pages() -> None:
    evil_machine = dict(
        uuid=EVIL, hostname=EVIL, os=EVIL, kernel=EVIL, cellar_version=EVIL, cgroup_mode=EVIL, api_address=EVIL,
        error=EVIL,
        ifaces=[pb.Iface(name=EVIL, state=EVIL, netns=EVIL, error=EVIL, address=[pb.Address(ip="10.0.0.1", ports=[
            pb.Port(port=80, service=EVIL, protocol="tcp", cell=EVIL, executable=EVIL, process=EVIL)])])],
        cells=[report_pb2.ReportCell(name=EVIL, state=EVIL, executables=[report_pb2.ReportExecutable(
            name=EVIL, state=EVIL, health=EVIL, exit=EVIL)])],
        usage=report_pb2.ReportUsage(at_ns=5, cells=[report_pb2.ReportCellUsage(cell=EVIL)]),
    )
    row = _row(**evil_machine)
    for html in (pages.overview([row], [], q=EVIL, state="", now_ns=2, stale_after_s=1, refresh_s=5),
                 pages.machine_page(row, [row.machine], now_ns=2, stale_after_s=1)):
        assert "<script>" not in html and "<img" not in html
        assert "&lt;script&gt;" in html
        tags = Tags(html).tags
        assert not [t for t, _ in tags if t in ("script", "img", "iframe")]
        assert not [(t, a) for t, attrs in tags for a in attrs if a.startswith("on")]  # no event handlers


def test_a_large_fleet_is_shown_a_page_at_a_time() -> None:
    rows = [_row(uuid=f"m-{i}", hostname=f"web-{i}") for i in range(pages.MAX_ROWS + 20)]
    html = pages.overview(rows, [], q="", state="", now_ns=2, stale_after_s=1, refresh_s=5)
    assert html.count('href="/machine/') == pages.MAX_ROWS and "refine the search" in html
    one = pages.overview(rows, [], q="web-7", state="", now_ns=2, stale_after_s=1, refresh_s=5)
    assert "refine the search" not in one and 'href="/machine/m-7"' in one
