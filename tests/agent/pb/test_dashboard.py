"""The saver's dashboard in a REAL headless Chromium, fed by a REAL cellard, and its attack surface.

One module: one cellar-saver (SQLite, --dashboard-listen with a token hash), one cellard reporting
to it every second, one cell with a listening executable, one Chromium launch.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from proto.aurae import runtime_pb2, runtime_pb2_grpc
from proto.cellar.v1 import inventory_pb2, inventory_pb2_grpc, report_pb2
from proto.pb import workerServer_pb2 as pb
from proto.pb import workerServer_pb2_grpc
from tests.agent.pb.browser import Chromium
from tests.agent.pb.conftest import Saver, free_port
from tests.support.cellard import Cellard, start_cellard, teardown
from tests.support.timeouts import wait_for

pytestmark = pytest.mark.root

LISTEN = ("import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
          "time.sleep(600)")
EVIL_HOST = "<script>window.__xss=1</script>evil"
EVIL_CELL = '<img src=x onerror="window.__xss=2">'


@dataclass
class Fleet:
    saver: Saver
    daemon: Cellard
    token: str
    http_port: int
    app_port: int

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read().decode()
        finally:
            conn.close()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def latest(saver: Saver) -> dict[str, Any]:
    with saver.channel() as ch:
        listed = inventory_pb2_grpc.MachinesStub(ch).List(inventory_pb2.ListMachinesRequest(full=True), timeout=5)
    return {m.hostname: m for m in listed.machines}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("dashboard")
    token = secrets.token_hex(32)
    http_port = free_port()
    saver = Saver(str(tmp / "saver.sqlite"), free_port(), tmp / "saver.log", extra=(
        "--dashboard-listen", f"127.0.0.1:{http_port}", "--dashboard-refresh", "1",
        "--dashboard-token-sha256", hashlib.sha256(token.encode()).hexdigest()))
    saver.start()
    daemon = None
    try:
        daemon = start_cellard({"reporter": {"savers": [saver.address], "insecure": True, "poll_s": 0.5,
                                             "interval_s": 1}})
        app_port = free_port()
        with daemon.channel() as ch:
            rt = runtime_pb2_grpc.CellServiceStub(ch)
            rt.Allocate(runtime_pb2.AllocateCellRequest(cell=runtime_pb2.Cell(name="web", isolate_network=True)),
                        timeout=30)
            rt.Start(runtime_pb2.StartCellRequest(executable=runtime_pb2.Executable(
                cell_name="web", name="srv", argv=["python3", "-c", LISTEN, str(app_port)])), timeout=30)
        hostile = pb.Machine(uuid="evil-1", hostname=EVIL_HOST, cells=[report_pb2.ReportCell(
            name=EVIL_CELL, state="active", executables=[report_pb2.ReportExecutable(name="</td><b>x", state="running")])])
        with saver.channel() as ch:
            reply = workerServer_pb2_grpc.WorkerSaverStub(ch).SaveMachine(pb.SaveMachineReq(machine=hostile), timeout=5)
            assert reply.status == pb.SaveMachineRes.ACCEPTED
        yield Fleet(saver, daemon, token, http_port, app_port)
    finally:
        if daemon is not None:
            teardown(daemon)
        saver.stop()


def _reported(fleet: Fleet) -> Any:
    """The cellard's machine once the saver holds its cell, a port of srv and three usage samples."""
    def ready() -> Any:
        m = latest(fleet.saver).get(socket.gethostname())
        if m is None or m.reports < 3:
            return None
        assert not m.machine.ifaces  # a listing carries cells, not the interfaces
        with fleet.saver.channel() as ch:
            shown = inventory_pb2_grpc.MachinesStub(ch).Show(inventory_pb2.ShowMachineRequest(uuid=m.uuid), timeout=5)
        ifaces = shown.latest.machine.ifaces
        ports = [p for i in ifaces for a in i.address for p in a.ports if p.port == fleet.app_port]
        cells = [c for c in m.machine.cells if c.name == "web" and c.executables]
        return m if ports and cells and m.machine.usage.at_ns else None

    return wait_for(ready, "the cellard's report with cell web, port and usage", timeout=60)


def test_dashboard_in_chromium_shows_the_fleet_the_machine_and_its_charts(fleet: Fleet) -> None:
    summary = _reported(fleet)
    base = f"http://127.0.0.1:{fleet.http_port}"
    with Chromium() as browser:
        browser.navigate(base + "/")  # no token yet: refused, nothing of the fleet shown
        statuses = [e["params"]["response"]["status"] for e in browser.events
                    if e["method"] == "Network.responseReceived" and e["params"]["type"] == "Document"]
        assert statuses == [401] and browser.evaluate("document.title").startswith("Sign in")
        assert socket.gethostname() not in browser.evaluate("document.body.innerText")
        browser.events.clear()  # the 401 is logged as a console error, rightly; the rest must be clean
        browser.call("Network.setExtraHTTPHeaders", headers=fleet.auth())
        browser.navigate(base + "/")
        text = browser.evaluate("document.body.innerText")
        assert socket.gethostname() in text and summary.uuid in text
        assert int(browser.evaluate("document.querySelector('.chart svg').dataset.points")) >= 0
        # hostile report fields are text, never markup: no script ran, the characters are shown
        assert EVIL_HOST in text
        assert browser.evaluate("window.__xss === undefined")
        # live refresh: the page replaces <main> from the server while it stays open
        browser.wait_for("document.getElementById('live').dataset.refreshed", timeout=15)
        assert socket.gethostname() in browser.evaluate("document.body.innerText")

        browser.navigate(f"{base}/machine/{summary.uuid}")
        rows = browser.evaluate("Array.from(document.querySelectorAll('table.ports tbody tr'))"
                                ".map(r => Array.from(r.cells).map(c => c.innerText))")
        assert [r for r in rows if r[1] == str(fleet.app_port) and r[3] == "web" and r[4] == "srv"], rows
        cells = browser.evaluate("document.querySelector('table.cells').innerText")
        assert "web" in cells and "srv" in cells and "running" in cells
        points = browser.evaluate("Array.from(document.querySelectorAll('.chart svg')).map(s => +s.dataset.points)")
        assert points[0] >= 1 and browser.evaluate("document.querySelectorAll('.chart circle').length") >= 1
        shot = browser.screenshot("dashboard-machine.png")
        assert shot.stat().st_size > 10_000

        browser.navigate(f"{base}/machine/evil-1")
        assert EVIL_CELL in browser.evaluate("document.querySelector('table.cells').innerText")
        assert browser.evaluate("document.querySelectorAll('table.cells img, main script').length") == 0
        assert browser.evaluate("window.__xss === undefined")
        assert browser.problems() == []


def test_without_a_valid_token_every_page_is_refused(fleet: Fleet) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {fleet.token}"},
                    {"Cookie": "cellar_dashboard=wrong"}, {"Authorization": "Bearer " + "x" * 10_000}):
        for path in ("/", "/machine/evil-1", "/machine/../../etc/passwd"):
            status, head, body = fleet.request("GET", path, headers)
            assert status == 401, (headers, path)
            assert "evil" not in body and head["www-authenticate"].startswith("Bearer")
    status, head, _ = fleet.request("GET", "/", fleet.auth())
    assert status == 200 and "script-src 'self'" in head["content-security-policy"]


def test_login_sets_an_httponly_cookie_and_the_dashboard_stays_read_only(fleet: Fleet) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert fleet.request("POST", "/login", form, b"token=wrong")[0] == 401
    status, head, _ = fleet.request("POST", "/login", form, f"token={fleet.token}".encode())
    assert status == 303 and "HttpOnly" in head["set-cookie"] and "SameSite=Strict" in head["set-cookie"]
    cookie = head["set-cookie"].split(";")[0]
    assert fleet.request("GET", "/", {"Cookie": cookie})[0] == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert fleet.request(method, "/", fleet.auth(), b"x")[0] == 405
    assert fleet.request("POST", "/login", {**form, "Content-Length": "100000000"})[0] == 413
    status, _, body = fleet.request("GET", "/?q=" + "a" * 5000, fleet.auth())
    assert status == 400 and "query" in body
    status, _, body = fleet.request("GET", "/?state=%3Cscript%3E", fleet.auth())
    assert status == 400 and "state:" in body and "<script>" not in body
    assert fleet.request("GET", "/?" + "&".join(f"k{i}=v" for i in range(50)), fleet.auth())[0] == 400
    assert fleet.request("GET", "/static/../main.py", fleet.auth())[0] == 404
    assert fleet.request("GET", "/machine/" + "u" * 500, fleet.auth())[0] == 400


def test_floods_and_malformed_requests_do_not_take_the_dashboard_down(fleet: Fleet) -> None:
    socks = []
    try:
        for _ in range(100):  # more idle connections than it serves at once
            socks.append(socket.create_connection(("127.0.0.1", fleet.http_port), timeout=5))
        with socket.create_connection(("127.0.0.1", fleet.http_port), timeout=5) as s:
            s.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
            s.recv(100)  # 414 or closed: either way an answer, not a hang
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: fleet.request("GET", "/", fleet.auth())[0] == 200, "the dashboard after a flood", timeout=20)
    assert fleet.saver.proc is not None and fleet.saver.proc.poll() is None
    time.sleep(0)  # the saver keeps serving gRPC as well
    with fleet.saver.channel() as ch:
        grpc.channel_ready_future(ch).result(timeout=5)
