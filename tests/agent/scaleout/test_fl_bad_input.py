"""Bad input to the node-local combiner: each gets its documented answer, nothing half-stored remains,
cellard keeps serving. Calls go to the node-local endpoint's loopback TCP listener, as a workload's."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from proto.scaleout import scaleout_pb2 as pb
from proto.scaleout import scaleout_pb2_grpc
from tests.agent.scaleout.harness import STORE_CAP
from tests.support.cli import cellar
from tests.support.local import local_tcp

pytestmark = pytest.mark.root

MiB = 1 << 20
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def local(fl_daemon: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(local_tcp(fl_daemon)) as channel:
        yield channel


def md(client: str = "bad-1", **extra: str) -> tuple[tuple[str, str], ...]:
    return (("client", client), ("client-id", client), ("name", client), *((k.replace("_", "-"), v) for k, v in extra.items()))


def chunks(data: bytes) -> Iterator[pb.FileChunk]:
    for i in range(0, len(data), MiB):
        yield pb.FileChunk(data=data[i:i + MiB])


def upload(channel: grpc.Channel, data: bytes, metadata: Any) -> pb.ModelResponse:
    return scaleout_pb2_grpc.ModelServiceStub(channel).Upload(chunks(data), metadata=metadata, timeout=60)


def code_of(fn: Any) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def store_state(daemon: Any) -> tuple[list[str], list[str]]:
    root = Path(daemon.config["paths"]["state_dir"]) / "models"
    return sorted(os.listdir(root / "tmp")), sorted(p.name for p in (root / "blobs").glob("*/*"))


def model_ids(daemon: Any) -> set[str]:
    with daemon.channel() as ch:
        reply = fl_pb2_grpc.FederationStub(ch).ListModels(fl_pb2.ListFlModelsRequest(), timeout=10)
    return {m.model_id for m in reply.models}


@pytest.fixture(scope="module")
def shared_model(local: grpc.Channel) -> str:
    """A stored model for the combiner tests (xdist may run them in another worker than the upload test)."""
    reply = upload(local, b"shared model bytes", md(model_id="shared-m"))
    assert reply.status == pb.ModelStatus.OK or "already exists" in reply.message
    return "shared-m"


def test_model_service_bad_input(fl_daemon: Any, local: grpc.Channel) -> None:
    before = store_state(fl_daemon)
    data = os.urandom(2 * MiB)
    sha = hashlib.sha256(data).hexdigest()

    with pytest.raises(grpc.RpcError) as missing:
        upload(local, data, md())
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "model-id" in (missing.value.details() or "")

    bad = upload(local, data, md(model_id="bad-sum", checksum="0" * 64))
    assert bad.status == pb.ModelStatus.FAILED and "checksum mismatch" in bad.message
    assert "bad-sum" not in model_ids(fl_daemon)

    assert upload(local, data, md(model_id="dup", checksum=sha)).status == pb.ModelStatus.OK
    again = upload(local, os.urandom(MiB), md(model_id="dup"))
    assert again.status == pb.ModelStatus.FAILED and "already exists" in again.message
    got = list(scaleout_pb2_grpc.ModelServiceStub(local).Download(pb.ModelRequest(model_id="dup"), timeout=30))
    assert b"".join(c.data for c in got) == data  # the first upload stands

    with pytest.raises(grpc.RpcError) as big:
        upload(local, os.urandom(STORE_CAP + MiB), md(model_id="too-big"))
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_bytes" in (big.value.details() or "")

    with pytest.raises(grpc.RpcError) as badid:
        upload(local, data, md(model_id="../../etc/passwd"))
    assert badid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    download = scaleout_pb2_grpc.ModelServiceStub(local).Download
    for model_id in ("", "never-uploaded"):
        with pytest.raises(grpc.RpcError) as unknown:
            list(download(pb.ModelRequest(model_id=model_id), timeout=10))
        assert unknown.value.code() == grpc.StatusCode.UNAVAILABLE

    tmp, blobs = store_state(fl_daemon)
    assert tmp == [] and set(blobs) == set(before[1]) | {sha}  # nothing half-stored
    assert "too-big" not in model_ids(fl_daemon)
    assert fl_daemon.health() == "SERVING"


def test_download_of_a_model_still_arriving(fl_daemon: Any, local: grpc.Channel) -> None:
    release = threading.Event()

    def slow() -> Iterator[pb.FileChunk]:
        yield pb.FileChunk(data=b"x" * MiB)
        release.wait(30)
        yield pb.FileChunk(data=b"y")

    result: list[Any] = []
    stub = scaleout_pb2_grpc.ModelServiceStub(local)
    sender = threading.Thread(target=lambda: result.append(stub.Upload(slow(), metadata=md(model_id="slow"), timeout=60)))
    sender.start()
    try:
        for _ in range(200):
            if "slow" in model_ids(fl_daemon):
                break
            threading.Event().wait(0.05)
        with pytest.raises(grpc.RpcError) as arriving:
            list(stub.Download(pb.ModelRequest(model_id="slow"), timeout=10))
        assert arriving.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # the client retries this
    finally:
        release.set()
        sender.join(60)
    assert result and result[0].status == pb.ModelStatus.OK
    got = b"".join(c.data for c in stub.Download(pb.ModelRequest(model_id="slow"), timeout=30))
    assert got == b"x" * MiB + b"y"


def test_combiner_bad_input(fl_daemon: Any, local: grpc.Channel, shared_model: str) -> None:
    combiner = scaleout_pb2_grpc.CombinerClientStub(local)
    combiner.SendHeartbeat(pb.Heartbeat(client_id="bad-1"), metadata=md(), timeout=10)

    def code(call: Any, request: Any, metadata: Any = None) -> grpc.StatusCode:
        return code_of(lambda: call(request, metadata=md() if metadata is None else metadata, timeout=10))

    update = pb.ModelUpdate(client_id="bad-1", model_id=shared_model, model_update_id=shared_model)
    for meta in ("{not json", "[]", "{}", '{"training_metadata": {}}', '{"training_metadata": {"num_examples": "7"}}',
                 '{"training_metadata": {"num_examples": -1}}', '{"training_metadata": 3}'):
        update.meta = meta
        assert code(combiner.SendModelUpdate, update) == grpc.StatusCode.INVALID_ARGUMENT, meta
    update.meta = '{"training_metadata": {"num_examples": 7}}'
    update.model_update_id = "never-uploaded"
    assert code(combiner.SendModelUpdate, update) == grpc.StatusCode.NOT_FOUND
    update.model_update_id = shared_model
    update.correlation_id = "not-a-task-of-mine"
    assert code(combiner.SendModelUpdate, update) == grpc.StatusCode.NOT_FOUND
    update.correlation_id = ""
    assert code(combiner.SendModelUpdate, update) == grpc.StatusCode.OK

    # client identity: required, well-formed, and consistent between metadata and message
    assert code(combiner.SendHeartbeat, pb.Heartbeat(), ()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(combiner.SendHeartbeat, pb.Heartbeat(client_id="x/../y"), ()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(combiner.SendHeartbeat, pb.Heartbeat(client_id="someone-else")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(combiner.Announce, pb.ClientAnnounceRequest(client_id="bad-1", type="Reboot")) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code(combiner.Announce, pb.ClientAnnounceRequest(client_id="bad-1", type="VersionCheck",
                                                            parameters="{oops")) == grpc.StatusCode.INVALID_ARGUMENT
    newer = combiner.Announce(pb.ClientAnnounceRequest(client_id="bad-1", type="VersionCheck",
                                                       parameters='{"client-version": "1.1.0"}'), metadata=md(), timeout=10)
    assert '"success": false' in newer.parameters
    assert code(combiner.SendModelValidation, pb.ModelValidation(client_id="bad-1", data="{x")) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code(combiner.PollAndReport, pb.ActivityReport(node_id="bad-1", correlation_id="c", status="WEIRD")) == \
        grpc.StatusCode.INVALID_ARGUMENT
    unknown = combiner.PollAndReport(pb.ActivityReport(node_id="bad-1", correlation_id="made-up", status="RUNNING"),
                                     metadata=md(), timeout=10)
    assert (unknown.correlation_id, unknown.status) == ("made-up", "INTERRUPTED")

    # operator side: unknown clients, tasks and models
    with fl_daemon.channel() as ch:
        fed = fl_pb2_grpc.FederationStub(ch)
        push = fl_pb2.PushTaskRequest
        for call, request, expect in (
            (fed.PushTask, push(client_id="no-such-client", type="Fedn_ModelUpdate", model_id=shared_model), "NOT_FOUND"),
            (fed.PushTask, push(client_id="bad-1", type="Fedn_ModelUpdate", model_id="no-such-model"), "NOT_FOUND"),
            (fed.PushTask, push(client_id="bad-1", type="Fedn_ModelUpdate", model_id=shared_model, data="{x"),
             "INVALID_ARGUMENT"),
            (fed.PushTask, push(client_id="bad-1", type="Train", model_id=shared_model), "INVALID_ARGUMENT"),
            (fed.PushTask, push(client_id="bad-1", type="Fedn_ModelUpdate", model_id=shared_model, timeout_s=-1),
             "INVALID_ARGUMENT"),
            (fed.CancelTask, fl_pb2.CancelTaskRequest(correlation_id="no-such-task"), "NOT_FOUND"),
            (fed.ListRecords, fl_pb2.ListFlRecordsRequest(kind="nope"), "INVALID_ARGUMENT"),
        ):
            assert code_of(lambda call=call, request=request: call(request, timeout=10)).name == expect, request
        assert fed.ListRecords(fl_pb2.ListFlRecordsRequest(client_id="no-such-client"), timeout=10).records == []
    proc = cellar(fl_daemon, "fl", "push", "no-such-client", shared_model, ok=False)  # the CLI's one-line error
    assert proc.returncode == 1 and proc.stderr == "cellar: NOT_FOUND: client no-such-client: unknown (it has never " \
        "called this combiner)\n", proc.stderr
    # the operator API is not on the node-local endpoint
    assert code_of(lambda: fl_pb2_grpc.FederationStub(local).ListClients(fl_pb2.ListFlClientsRequest(), timeout=10)) \
        == grpc.StatusCode.UNIMPLEMENTED
    assert fl_daemon.health() == "SERVING"


def test_cancel_reaches_the_client(fl_daemon: Any, local: grpc.Channel, shared_model: str) -> None:
    combiner = scaleout_pb2_grpc.CombinerClientStub(local)
    poll = lambda **kw: combiner.PollAndReport(pb.ActivityReport(node_id="can-1", **kw),  # noqa: E731
                                               metadata=md("can-1"), timeout=10)
    assert poll().correlation_id == ""
    with fl_daemon.channel() as ch:
        fed = fl_pb2_grpc.FederationStub(ch)
        first = fed.PushTask(fl_pb2.PushTaskRequest(client_id="can-1", type="Fedn_Validation", model_id=shared_model), timeout=10)
        second = fed.PushTask(fl_pb2.PushTaskRequest(client_id="can-1", type="Fedn_Prediction", model_id=shared_model), timeout=10)
        assert poll().correlation_id == first.correlation_id
        assert fed.CancelTask(fl_pb2.CancelTaskRequest(correlation_id=first.correlation_id), timeout=10).cancel_requested
        reply = poll(correlation_id=first.correlation_id, status="RUNNING")
        assert (reply.correlation_id, reply.status) == (first.correlation_id, "INTERRUPTED")
        nxt = poll(correlation_id=first.correlation_id, status="INTERRUPTED", done=True)
        assert (nxt.correlation_id, nxt.type, nxt.status) == (second.correlation_id, "Fedn_Prediction", "NEW")
        tasks = {t.correlation_id: t.status for t in fed.ListTasks(fl_pb2.ListFlTasksRequest(client_id="can-1"),
                                                                   timeout=10).tasks}
    assert tasks == {first.correlation_id: "INTERRUPTED", second.correlation_id: "PENDING"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(client=st.text(max_size=40), text=st.text(max_size=200), blob=st.binary(max_size=4096),
       flag=st.booleans())
def test_fuzz_never_breaks_cellard(fl_daemon: Any, local: grpc.Channel, client: str, text: str, blob: bytes,
                                   flag: bool) -> None:
    combiner = scaleout_pb2_grpc.CombinerClientStub(local)
    safe = "".join(ch for ch in client if " " <= ch <= "~")  # what grpc lets a client put in metadata
    metadata = (("client-id", safe),)
    calls = [
        lambda: combiner.SendModelUpdate(pb.ModelUpdate(client_id=client, meta=text, model_update_id=text,
                                                        correlation_id=text), metadata=metadata, timeout=10),
        lambda: combiner.PollAndReport(pb.ActivityReport(node_id=client, correlation_id=text, status=text, done=flag,
                                                         response=text), metadata=metadata, timeout=10),
        lambda: combiner.Announce(pb.ClientAnnounceRequest(client_id=client, type=text, parameters=text),
                                  metadata=metadata, timeout=10),
        lambda: combiner.SendStatus(pb.Status(client_id=client, status=text), metadata=metadata, timeout=10),
        lambda: scaleout_pb2_grpc.ModelServiceStub(local).Upload(
            iter([pb.FileChunk(data=blob)]), metadata=(*metadata, ("model-id", safe[:30]), ("checksum", safe)), timeout=10),
        lambda: list(scaleout_pb2_grpc.ModelServiceStub(local).Download(pb.ModelRequest(model_id=text), timeout=10)),
    ]
    for call in calls:
        assert code_of(call) in ALLOWED
    assert store_state(fl_daemon)[0] == []


def test_task_stream_delivers_pushed_tasks(fl_daemon: Any, local: grpc.Channel, shared_model: str) -> None:
    """The legacy TaskStream mode: a pushed task arrives on the open stream; its result completes it."""
    combiner = scaleout_pb2_grpc.CombinerClientStub(local)
    combiner.SendHeartbeat(pb.Heartbeat(client_id="stream-1"), metadata=md("stream-1"), timeout=10)
    stream = combiner.TaskStream(pb.ClientAvailableMessage(client_id="stream-1"), metadata=md("stream-1"), timeout=30)
    with fl_daemon.channel() as ch:
        fed = fl_pb2_grpc.FederationStub(ch)
        pushed = fed.PushTask(fl_pb2.PushTaskRequest(client_id="stream-1", type="Fedn_Validation",
                                                     model_id=shared_model), timeout=10)
        task = next(iter(stream))
        stream.cancel()
        assert (task.correlation_id, task.type, task.model_id) == (pushed.correlation_id, "Fedn_Validation", shared_model)
        combiner.SendModelValidation(pb.ModelValidation(client_id="stream-1", model_id=shared_model, data='{"acc": 0.9}',
                                                        correlation_id=task.correlation_id),
                                     metadata=md("stream-1"), timeout=10)
        (done,) = fed.ListTasks(fl_pb2.ListFlTasksRequest(client_id="stream-1"), timeout=10).tasks
    assert done.status == "COMPLETED"
