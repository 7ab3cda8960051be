"""Upstream mode: a cellard whose ``[front."scaleout.*"]`` tables name a second, REAL cellard relays the
official client's calls there; the front's own combiner and model store are bypassed. The operator API
(``cellar.v1.Federation``) is fronted too, so ``cellar fl`` on the front shows the upstream's state."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.scaleout.harness import start_daemon, stop_daemon
from tests.support.cli import cellar_json
from tests.support.local import local_tcp

pytestmark = pytest.mark.root

FRONTED = ("scaleout.CombinerClient", "scaleout.ModelService", "cellar.v1.Federation")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Any, Any]]:
    upstream = start_daemon()
    try:
        front = start_daemon({"front": {name: {"upstream": "unix:" + upstream.socket} for name in FRONTED}})
    except BaseException:
        stop_daemon(upstream)
        raise
    yield front, upstream
    try:
        stop_daemon(front)
    finally:
        stop_daemon(upstream)


def own_rows(daemon: Any, table: str) -> int:
    """Rows in ``daemon``'s own combiner database (read directly: its Federation API is fronted)."""
    db = sqlite3.connect(Path(daemon.config["paths"]["state_dir"]) / "scaleout.db")
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def test_official_client_through_a_front(pair: tuple[Any, Any], run_client: Any, tmp_path: Path) -> None:
    front, upstream = pair
    seed = tmp_path / "seed.bin"
    seed.write_bytes(os.urandom(2 * 2**20 + 3))
    assert cellar_json(upstream, "fl", "upload", str(seed), "--id", "up-seed")["status"] == "OK"

    client = run_client(local_tcp(front), "via-front")  # the client knows only the front's endpoint
    assert client.wait_for("version_check")["success"] is True
    client.wait_for("ready")
    assert [c["client_id"] for c in cellar_json(upstream, "fl", "clients")] == ["via-front"]
    assert cellar_json(front, "fl", "clients")[0]["client_id"] == "via-front"  # Federation is fronted too ...
    assert own_rows(front, "clients") == 0  # ... and the front's own combiner never saw the client

    cid = cellar_json(upstream, "fl", "push", "via-front", "up-seed")["correlation_id"]
    assert client.wait_for("task")["correlation_id"] == cid
    assert client.wait_for("downloaded")["size"] == seed.stat().st_size  # checksum trailer relayed and verified
    up = client.wait_for("uploaded")
    assert up["status"] == "OK"
    client.wait_for("disconnected")
    assert client.finish() == 0

    (task,) = cellar_json(upstream, "fl", "tasks")
    assert (task["correlation_id"], task["status"]) == (cid, "COMPLETED")
    assert up["model_id"] in {m["model_id"] for m in cellar_json(upstream, "fl", "models")}
    assert own_rows(front, "tasks") == 0 and own_rows(front, "records") == 0
    own_models = Path(front.config["paths"]["state_dir"]) / "models" / "blobs"
    assert list(own_models.glob("*/*")) == []
    kinds = {r["kind"] for r in cellar_json(upstream, "fl", "records", "--client", "via-front")}
    assert {"model_update", "model_metric", "status", "telemetry", "attributes"} <= kinds
