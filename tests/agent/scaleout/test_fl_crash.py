"""cellard killed with SIGKILL in the middle of an upload: after a restart the half-sent model is gone
(no temp file, no blob, not listed), while stored models, queued tasks and records are all still there."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from proto.scaleout import scaleout_pb2 as pb
from proto.scaleout import scaleout_pb2_grpc
from tests.agent.scaleout.harness import restart_daemon, start_daemon, stop_daemon
from tests.support.local import local_tcp

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture
def daemon() -> Iterator[Any]:
    d = start_daemon()
    yield d
    stop_daemon(d)


def test_sigkill_mid_upload_leaves_nothing_half_stored(daemon: Any) -> None:
    meta = (("client-id", "crash-1"),)
    with grpc.insecure_channel(local_tcp(daemon)) as local, daemon.channel() as main:
        models = scaleout_pb2_grpc.ModelServiceStub(local)
        kept = models.Upload(iter([pb.FileChunk(data=b"k" * MiB)]), metadata=(*meta, ("model-id", "kept")), timeout=30)
        assert kept.status == pb.ModelStatus.OK
        scaleout_pb2_grpc.CombinerClientStub(local).SendHeartbeat(pb.Heartbeat(client_id="crash-1"), metadata=meta,
                                                                  timeout=10)
        queued = fl_pb2_grpc.FederationStub(main).PushTask(
            fl_pb2.PushTaskRequest(client_id="crash-1", type="Fedn_ModelUpdate", model_id="kept"), timeout=10)

        sent = threading.Event()

        def endless() -> Iterator[pb.FileChunk]:
            yield pb.FileChunk(data=b"h" * MiB)
            sent.set()
            threading.Event().wait(60)  # never finishes: cellard dies first

        errors: list[Exception] = []
        sender = threading.Thread(target=lambda: _call(lambda: models.Upload(
            endless(), metadata=(*meta, ("model-id", "half")), timeout=60), errors))
        sender.start()
        tmp = Path(daemon.config["paths"]["state_dir"]) / "models" / "tmp"
        assert sent.wait(30)
        for _ in range(400):
            if os.listdir(tmp):
                break
            threading.Event().wait(0.05)
        assert os.listdir(tmp), "the upload never reached cellard"
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(30)
        sender.join(90)
    assert errors and isinstance(errors[0], grpc.RpcError)

    restart_daemon(daemon)
    assert os.listdir(tmp) == []
    with daemon.channel() as main:
        fed = fl_pb2_grpc.FederationStub(main)
        assert [m.model_id for m in fed.ListModels(fl_pb2.ListFlModelsRequest(), timeout=10).models] == ["kept"]
        (task,) = fed.ListTasks(fl_pb2.ListFlTasksRequest(), timeout=10).tasks
        assert (task.correlation_id, task.status) == (queued.correlation_id, "NEW")
        (client,) = fed.ListClients(fl_pb2.ListFlClientsRequest(), timeout=10).clients
        assert client.client_id == "crash-1" and not client.online  # not seen since this cellard started
    blobs = list((tmp.parent / "blobs").glob("*/*"))
    assert len(blobs) == 1 and blobs[0].stat().st_size == MiB


def _call(fn: Any, errors: list[Exception]) -> None:
    try:
        fn()
    except Exception as exc:  # the test inspects it
        errors.append(exc)
