"""A real headless Chromium (the distribution's package) driven over the DevTools protocol.

One browser per use (``with Chromium() as browser``), a fresh profile in a temp dir, every console
message, uncaught exception, log entry and dialog collected in ``events`` so a test can assert a
page ran clean. ``--no-sandbox`` because the suite runs as root (Chromium refuses its sandbox there).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websocket  # websocket-client

from tests.support import REPO
from tests.support.timeouts import scaled

INSTALL_HINT = "Chromium is missing: install it with `apt-get install -y chromium`"
ARTIFACTS = REPO / "build" / "test-artifacts"


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT)


class Chromium:
    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="cellar-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: websocket.WebSocket | None = None
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def __enter__(self) -> Chromium:
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--metrics-recording-only",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             "--window-size=1280,1000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            deadline = time.monotonic() + scaled(30)
            while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
                assert self.proc.poll() is None, f"chromium exited {self.proc.returncode}"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                pages = [t for t in json.load(reply) if t["type"] == "page"]
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=scaled(30),
                                                  suppress_origin=True)
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)
                if message["method"] == "Page.javascriptDialogOpening":  # never leave a page blocked
                    self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog",
                                             "params": {"accept": True}}))

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        seen = len(self.events)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + scaled(30)
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            assert time.monotonic() < deadline, f"{url} did not load"
            self.call("Runtime.evaluate", expression="1")  # pumps events

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)

    def problems(self) -> list[dict[str, Any]]:
        """Console errors, uncaught exceptions, error log entries and dialogs so far."""
        def bad(e: dict[str, Any]) -> bool:
            method, params = e["method"], e.get("params", {})
            if method in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening"):
                return True
            if method == "Runtime.consoleAPICalled":
                return params.get("type") in ("error", "assert")
            return method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"

        return [e for e in self.events if bad(e)]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path
