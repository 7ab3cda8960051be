"""The OFFICIAL Scaleout client (PyPI scaleout==1.0.0, its own venv, a real process) against cellard's
node-local endpoint (loopback TCP): version check, connect, heartbeats, a task pushed with
``cellar fl push`` received through PollAndReport, model download (checksum verified by the client),
an update uploaded (checksum verified by cellard) and reported; all of it visible through ``cellar fl``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import cellar, cellar_json
from tests.support.local import local_tcp

pytestmark = pytest.mark.root


def seed_model(daemon: Any, tmp_path: Path, model_id: str, size: int = 3 * 2**20 + 5) -> bytes:
    data = os.urandom(size)
    path = tmp_path / f"{model_id}.bin"
    path.write_bytes(data)
    out = cellar_json(daemon, "fl", "upload", str(path), "--id", model_id)
    assert out["status"] == "OK", out
    return data


def test_official_client_runs_a_task_end_to_end(fl_daemon: Any, run_client: Any, tmp_path: Path) -> None:
    seed = seed_model(fl_daemon, tmp_path, "seed-e2e")
    client = run_client(local_tcp(fl_daemon), "edge-1")
    check = client.wait_for("version_check")
    assert check["success"] is True and check["server_version"] == "1.0.0"
    client.wait_for("ready")

    (row,) = [c for c in cellar_json(fl_daemon, "fl", "clients") if c["client_id"] == "edge-1"]
    assert row["state"] == "online" and row["connected"] is True and row["name"] == "edge-1-name"
    assert row["version"] == "1.0.0"

    pushed = cellar_json(fl_daemon, "fl", "push", "edge-1", "seed-e2e", "--data", '{"client_settings": {"epochs": 1}}',
                         "--session", "s1", "--round", "r1")
    assert pushed["status"] == "NEW" and pushed["type"] == "Fedn_ModelUpdate"
    cid = pushed["correlation_id"]

    task = client.wait_for("task")
    assert (task["correlation_id"], task["model_id"], task["type"], task["status"]) == (
        cid, "seed-e2e", "Fedn_ModelUpdate", "NEW")
    assert json.loads(task["data"]) == {"client_settings": {"epochs": 1}}
    assert client.wait_for("running_ack")["correlation_id"] == ""  # nothing to interrupt
    got = client.wait_for("downloaded")
    assert got["size"] == len(seed) and got["checksum"] == hashlib.sha256(seed).hexdigest()
    up = client.wait_for("uploaded")
    assert up["status"] == "OK" and up["checksum"] in up["message"]
    client.wait_for("update_sent")
    assert client.wait_for("done_reported")["next_correlation_id"] == ""
    client.wait_for("disconnected")
    assert client.finish() == 0

    (done,) = [t for t in cellar_json(fl_daemon, "fl", "tasks", "--client", "edge-1") if t["correlation_id"] == cid]
    assert done["status"] == "COMPLETED" and json.loads(done["response"]) == {"num_examples": 42}
    models = {m["model_id"]: m for m in cellar_json(fl_daemon, "fl", "models")}
    assert models[up["model_id"]]["sha256"] == up["checksum"]
    back = tmp_path / "update.bin"
    cellar(fl_daemon, "fl", "download", up["model_id"], str(back))
    assert back.read_bytes() == seed[::-1]  # what the client uploaded, byte for byte

    records = cellar_json(fl_daemon, "fl", "records", "--client", "edge-1")
    kinds = [r["kind"] for r in records]
    for kind in ("announce", "model_update", "model_metric", "telemetry", "attributes", "status"):
        assert kind in kinds, kinds
    (update,) = [r for r in records if r["kind"] == "model_update"]
    assert update["correlation_id"] == cid and update["model_id"] == up["model_id"]
    assert json.loads(update["body"]["meta"])["training_metadata"]["num_examples"] == 42
    (metric,) = [r for r in records if r["kind"] == "model_metric"]
    assert metric["body"]["metrics"] == [{"key": "loss", "value": 0.25}]
    announces = [r["body"]["type"] for r in records if r["kind"] == "announce"]
    assert announces == ["VersionCheck", "Connect", "Disconnect"]
    (after,) = [c for c in cellar_json(fl_daemon, "fl", "clients") if c["client_id"] == "edge-1"]
    assert after["state"] == "offline" and after["connected"] is False  # Disconnect

    table = cellar(fl_daemon, "fl", "tasks").stdout
    assert cid in table and "COMPLETED" in table
