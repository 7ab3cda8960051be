"""The OFFICIAL Scaleout client's OWN loop (PyPI scaleout==1.0.0, its own venv, a real process) against
cellard's node-local loopback endpoint. Nothing of ours decides when it calls what: it checks its version
(library entry), announces Connect, polls with PollAndReport every second, receives the task pushed with
``cellar fl push``, downloads the model (checksum verified by the client), runs the compute package's
train callback, uploads the update (checksum verified by cellard), sends the model update, a metric,
statuses and telemetry, reports the task COMPLETED by itself, and on SIGTERM disconnects. All of it is
read back through ``cellar fl`` (the waits in between poll the same Federation RPCs directly: cheaper than
a CLI process per probe).

Two entries: ``ImporterClient.start()`` (the library's client class, as ``client start`` builds it) and
the ``scaleout client start --combiner`` console script itself; see client_loop.py for why the CLI needs
``SCALEOUT_CHECK_COMPATIBILITY=false`` and its ids set in the package's ``startup``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from tests.agent.scaleout.client_loop import ClientLoop, Mode, start_client_loop, wait_until
from tests.support.cli import cellar, cellar_json
from tests.support.local import local_tcp
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root


@pytest.fixture
def client_loop(scaleout_venv: Path, tmp_path: Path) -> Iterator[Callable[..., ClientLoop]]:
    started: list[ClientLoop] = []

    def start(addr: str, client_id: str, mode: Mode) -> ClientLoop:
        workdir = tmp_path / f"edge-{client_id}"
        workdir.mkdir()
        loop = start_client_loop(scaleout_venv, workdir, addr, client_id, f"{client_id}-name", mode)
        started.append(loop)
        return loop

    yield start
    for loop in started:
        loop.stop()


def client_row(daemon: Any, client_id: str) -> dict[str, Any]:
    (row,) = [c for c in cellar_json(daemon, "fl", "clients") if c["client_id"] == client_id]
    return row


def announces(daemon: Any, client_id: str) -> list[str]:
    return [r["body"]["type"] for r in cellar_json(daemon, "fl", "records", "--client", client_id, "--kind", "announce")]


def seen(fed: fl_pb2_grpc.FederationStub, client_id: str) -> fl_pb2.FlClient | None:
    rows = [c for c in fed.ListClients(fl_pb2.ListFlClientsRequest(), timeout=10).clients if c.client_id == client_id]
    return rows[0] if rows else None


def connected(fed: fl_pb2_grpc.FederationStub, client_id: str) -> fl_pb2.FlClient | None:
    row = seen(fed, client_id)
    return row if row is not None and row.connected else None


def finished(fed: fl_pb2_grpc.FederationStub, client_id: str, correlation_id: str) -> fl_pb2.FlTask | None:
    tasks = fed.ListTasks(fl_pb2.ListFlTasksRequest(client_id=client_id), timeout=10).tasks
    done = [t for t in tasks if t.correlation_id == correlation_id and t.status not in ("NEW", "PENDING", "RUNNING")]
    return done[0] if done else None


@pytest.mark.parametrize("mode", ["library", "cli"])
def test_official_client_loop_trains_a_pushed_task(fl_daemon: Any, client_loop: Callable[..., ClientLoop],
                                                   tmp_path: Path, mode: Mode) -> None:
    client_id = f"loop-{mode}"
    seed = os.urandom(2 * 2**20 + 7)  # > one 1 MiB chunk each way
    (tmp_path / "seed.bin").write_bytes(seed)
    seed_id = f"seed-{mode}"
    assert cellar_json(fl_daemon, "fl", "upload", str(tmp_path / "seed.bin"), "--id", seed_id)["status"] == "OK"

    loop = client_loop(local_tcp(fl_daemon), client_id, mode)
    with fl_daemon.channel() as channel:
        fed = fl_pb2_grpc.FederationStub(channel)
        # It announces itself, then stays online by its own polling (1.0.0's loop sends no SendHeartbeat).
        first = wait_until(lambda: connected(fed, client_id), "Connect", loop)
        wait_until(lambda: (c := seen(fed, client_id)) is not None and c.last_seen_ns > first.last_seen_ns,
                   "a later poll", loop)

        row = client_row(fl_daemon, client_id)
        assert (row["state"], row["connected"], row["name"]) == ("online", True, f"{client_id}-name")
        expected = ["VersionCheck", "Connect"] if mode == "library" else ["Connect"]
        assert announces(fl_daemon, client_id) == expected
        assert row["version"] == ("1.0.0" if mode == "library" else "")

        settings = {"client_settings": {"epochs": 2, "num_examples": 42}}
        pushed = cellar_json(fl_daemon, "fl", "push", client_id, seed_id, "--data", json.dumps(settings),
                             "--session", "s1", "--round", "r1")
        cid = pushed["correlation_id"]
        wait_until(lambda: finished(fed, client_id, cid), f"task {cid} to finish", loop)

    (task,) = [t for t in cellar_json(fl_daemon, "fl", "tasks", "--client", client_id) if t["correlation_id"] == cid]
    assert task["status"] == "COMPLETED" and task["started"], task
    records = cellar_json(fl_daemon, "fl", "records", "--client", client_id)
    (update,) = [r for r in records if r["kind"] == "model_update"]
    assert update["correlation_id"] == cid
    meta = json.loads(update["body"]["meta"])
    assert meta["training_metadata"] == {"num_examples": 42, "epochs": 2}
    assert json.loads(meta["config"]) == settings
    update_id = update["model_id"]

    back = tmp_path / "update.bin"
    cellar(fl_daemon, "fl", "download", update_id, str(back))
    assert back.read_bytes() == seed[::-1]  # the train callback's output, byte for byte
    models = {m["model_id"]: m for m in cellar_json(fl_daemon, "fl", "models")}
    assert models[update_id]["sha256"] == hashlib.sha256(seed[::-1]).hexdigest()

    (metric,) = [r for r in records if r["kind"] == "model_metric"]
    assert {m["key"]: m["value"] for m in metric["body"]["metrics"]} == {"loss": 0.25, "bytes": float(len(seed))}
    assert (metric["body"]["model_id"], metric["body"]["session_id"], metric["body"]["round_id"]) == (seed_id, "s1", "r1")
    statuses = [r["body"]["status"] for r in records if r["kind"] == "status"]
    assert any(f"training request for model_id {seed_id}" in s for s in statuses), statuses
    assert "Model update completed." in statuses
    assert any(r["kind"] == "telemetry" for r in records)

    assert loop.stop() == 0  # SIGTERM: the client's graceful exit
    assert announces(fl_daemon, client_id) == [*expected, "Disconnect"]
    after = client_row(fl_daemon, client_id)
    assert (after["state"], after["connected"]) == ("offline", False)


def test_bare_cli_direct_attach_fails_in_the_client(fl_daemon: Any, client_loop: Callable[..., ClientLoop]) -> None:
    """``scaleout client start --combiner H --combiner-port P`` alone: 1.0.0 sets the EdgeClient's id only
    from the discovery service's answer, so its first call (the version check) carries ``client-id: None``,
    which grpc rejects before sending; the client logs it and exits. cellard never hears of it."""
    loop = client_loop(local_tcp(fl_daemon), "loop-bare", "cli-bare")
    loop.proc.wait(scaled(60))
    assert "Could not initialize GRPC connection: bad argument type for built-in operation" in loop.log_text()
    assert all(c["client_id"] != "loop-bare" for c in cellar_json(fl_daemon, "fl", "clients"))
