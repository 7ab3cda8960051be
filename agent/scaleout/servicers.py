"""gRPC adapters of the Scaleout backend: the seed's ``scaleout.CombinerClient`` and
``scaleout.ModelService`` (for the official ``scaleout`` client) and cellar's ``cellar.v1.Federation``
(for the operator). Thin: identity and proto <-> domain here, behaviour in combiner.py / models.py,
error -> status in agent.core.status.

Client identity: metadata ``client-id`` (else ``client``), as the official client sends on every call,
else the message's own ``client_id``; when both are present they must agree. ``name`` names it. A
client id is only a name: the first caller to use it claims it (:meth:`Combiner.claim`) and any other
caller naming it gets PERMISSION_DENIED. The caller is its certificate identity over mTLS, else its
scope (:func:`agent.auth.identity.caller_scope`: a cell, ``user:<uid>`` or ``host`` on the node-local
endpoint, by the kernel's word).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import structlog
from google.protobuf.json_format import MessageToJson

from agent.auth.authz import current_cert_identity
from agent.auth.identity import caller_scope
from agent.core.app import App
from agent.core.status import maps_errors
from agent.scaleout.backend import scaleout_for
from agent.scaleout.combiner import Combiner, Task, check_client_id, check_json
from agent.scaleout.errors import (
    InvalidArgument,
    MissingModelId,
    ModelUnavailable,
    NotFound,
    PermissionDenied,
    UploadRejected,
)
from agent.scaleout.models import check_model_id
from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from proto.scaleout import scaleout_pb2 as pb
from proto.scaleout import scaleout_pb2_grpc

log = structlog.get_logger("agent.scaleout")

#: The protocol this combiner speaks: the scaleout 1.0.0-1.0.2 clients (1.0.3+ call PollAndReportAsync).
PROTOCOL_VERSION = "1.0.0"


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if not key.endswith("-bin"):
            out.setdefault(key, value if isinstance(value, str) else value.decode(errors="replace"))
    return out


def client_of(context: grpc.aio.ServicerContext[Any, Any], body_id: str = "") -> tuple[str, str]:
    """(client id, name) of the caller."""
    md = _metadata(context)
    cid = md.get("client-id") or md.get("client") or body_id
    if not cid:
        raise InvalidArgument("client-id: metadata client-id (or client) or the message's client_id is required")
    check_client_id(cid)
    if body_id and body_id != cid:
        raise InvalidArgument(f"client_id: message says {body_id[:80]!r} but metadata client-id is {cid!r}")
    name = md.get("name", "")[:128]
    return cid, name if name.isprintable() else ""


def principal_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who the caller is for client-id claims: its scope, or over mTLS ``cert:<identity>`` (plus the
    scope an admin relays for a workload: a downstream cellard fronting this combiner for its cells)."""
    try:
        scope = caller_scope(context)
    except PermissionError as exc:
        raise PermissionDenied(str(exc)) from None
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    ident = current_cert_identity()
    if ident is None:
        return scope
    return f"cert:{ident}" if scope == "host" else f"cert:{ident}/{scope}"


def _version_compatible(version: str) -> bool:
    parts = version.split(".")
    return len(parts) >= 3 and parts[0] == "1" and parts[1] == "0" and parts[2].isdigit() and int(parts[2]) < 3


def num_examples(meta: str) -> int:
    """``training_metadata.num_examples`` of a ModelUpdate's ``meta`` JSON (the combiner weighs by it)."""
    parsed = check_json(meta, "meta")
    training = parsed.get("training_metadata") if isinstance(parsed, dict) else None
    examples = training.get("num_examples") if isinstance(training, dict) else None
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 0:
        raise InvalidArgument("meta: expected JSON with training_metadata.num_examples, a non-negative integer")
    return examples


def _json(message: Any) -> str:
    return MessageToJson(message, preserving_proto_field_name=True, indent=None)


def task_request(task: Task) -> pb.TaskRequest:
    return pb.TaskRequest(
        model_id=task.model_id, data=task.data, correlation_id=task.correlation_id,
        timestamp=datetime.fromtimestamp(task.created_ns / 1e9, UTC).isoformat(), session_id=task.session_id,
        round_id=task.round_id, type=task.type, status="NEW", client_id=task.client_id,
    )


class CombinerClientService(scaleout_pb2_grpc.CombinerClientServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def combiner(self) -> Combiner:
        return scaleout_for(self.app).combiner

    def _client(self, context: grpc.aio.ServicerContext[Any, Any], body_id: str = "") -> tuple[str, str]:
        """(client id, name) of the caller, once the client id is known to be the caller's own."""
        cid, name = client_of(context, body_id)
        self.combiner.claim(cid, principal_of(context))
        return cid, name

    @maps_errors
    async def Announce(
        self, request: pb.ClientAnnounceRequest,
        context: grpc.aio.ServicerContext[pb.ClientAnnounceRequest, pb.Response],
    ) -> pb.Response:
        cid, name = self._client(context, request.client_id)
        if request.type == "VersionCheck":
            params = check_json(request.parameters or "{}", "parameters")
            version = str(params.get("client-version", "")) if isinstance(params, dict) else ""
            ok = _version_compatible(version)
            self.combiner.announce(cid, name, "VersionCheck", version[:64])
            msg = (f"client {version} is compatible with combiner protocol {PROTOCOL_VERSION}" if ok else
                   f"client version {version or '(none)'} not supported: this combiner speaks scaleout 1.0.0-1.0.2")
            return pb.Response(response=msg, parameters=json.dumps({"success": ok, "version": PROTOCOL_VERSION}))
        if request.type in ("Connect", "Disconnect"):
            self.combiner.announce(cid, name, request.type)
            log.info("scaleout.announce", client_id=cid, type=request.type)
            return pb.Response(response=f"{request.type} of {cid} recorded")
        raise InvalidArgument(f"type: expected VersionCheck, Connect or Disconnect, got {request.type[:40]!r}")

    @maps_errors
    async def SendHeartbeat(
        self, request: pb.Heartbeat, context: grpc.aio.ServicerContext[pb.Heartbeat, pb.Response]
    ) -> pb.Response:
        cid, name = self._client(context, request.client_id)
        self.combiner.seen(cid, name)
        return pb.Response(response="Heartbeat received")

    @maps_errors
    async def PollAndReport(
        self, request: pb.ActivityReport, context: grpc.aio.ServicerContext[pb.ActivityReport, pb.TaskRequest]
    ) -> pb.TaskRequest:
        cid, name = self._client(context, request.node_id)
        self.combiner.seen(cid, name)
        got = self.combiner.poll_and_report(cid, request.correlation_id, request.status, request.done, request.response)
        if got is None:
            return pb.TaskRequest()
        if isinstance(got, tuple):
            return pb.TaskRequest(correlation_id=got[0], status=got[1], client_id=cid)
        return task_request(got)

    @maps_errors
    async def TaskStream(
        self, request: pb.ClientAvailableMessage,
        context: grpc.aio.ServicerContext[pb.ClientAvailableMessage, pb.TaskRequest],
    ) -> AsyncIterator[pb.TaskRequest]:
        cid, name = self._client(context, request.client_id)
        combiner = self.combiner
        while not self.app.stopping.is_set():
            combiner.seen(cid, name)
            task = combiner.next_task(cid)
            if task is not None:
                yield task_request(task)
                continue
            await combiner.wait_for_task(cid, 5.0)

    @maps_errors
    async def SendStatus(
        self, request: pb.Status, context: grpc.aio.ServicerContext[pb.Status, pb.Response]
    ) -> pb.Response:
        cid, _ = self._client(context, request.client_id)
        self.combiner.add_record("status", cid, body=_json(request))
        return pb.Response(response="Status received")

    @maps_errors
    async def SendModelUpdate(
        self, request: pb.ModelUpdate, context: grpc.aio.ServicerContext[pb.ModelUpdate, pb.Response]
    ) -> pb.Response:
        cid, _ = self._client(context, request.client_id)
        examples = num_examples(request.meta)
        if request.config:
            check_json(request.config, "config")
        check_model_id(request.model_update_id, "model_update_id")
        backend = scaleout_for(self.app)
        try:  # uploaded first; still arriving -> FAILED_PRECONDITION (the client retries)
            backend.models.info(request.model_update_id)
        except ModelUnavailable:
            raise NotFound(f"model_update_id: model {request.model_update_id} was never uploaded") from None
        backend.combiner.result_for(cid, request.correlation_id)
        backend.combiner.add_record("model_update", cid, correlation_id=request.correlation_id,
                                    model_id=request.model_update_id, body=_json(request))
        log.info("scaleout.model_update", client_id=cid, model_update_id=request.model_update_id,
                 correlation_id=request.correlation_id, num_examples=examples)
        return pb.Response(response=f"model update {request.model_update_id} received")

    async def _result(
        self, kind: str, request: Any, context: grpc.aio.ServicerContext[Any, pb.Response]
    ) -> pb.Response:
        cid, _ = self._client(context, request.client_id)
        if request.data:
            check_json(request.data, "data")
        self.combiner.result_for(cid, request.correlation_id)
        self.combiner.add_record(kind, cid, correlation_id=request.correlation_id, model_id=request.model_id,
                                 body=_json(request))
        return pb.Response(response=f"{kind.replace('_', ' ')} received")

    @maps_errors
    async def SendModelValidation(
        self, request: pb.ModelValidation, context: grpc.aio.ServicerContext[pb.ModelValidation, pb.Response]
    ) -> pb.Response:
        return await self._result("model_validation", request, context)

    @maps_errors
    async def SendModelPrediction(
        self, request: pb.ModelPrediction, context: grpc.aio.ServicerContext[pb.ModelPrediction, pb.Response]
    ) -> pb.Response:
        return await self._result("model_prediction", request, context)

    async def _record(
        self, kind: str, request: Any, context: grpc.aio.ServicerContext[Any, pb.Response]
    ) -> pb.Response:
        cid, _ = self._client(context, request.client_id)
        self.combiner.add_record(kind, cid, model_id=getattr(request, "model_id", ""), body=_json(request))
        return pb.Response(response=f"{kind.replace('_', ' ')} received")

    @maps_errors
    async def SendModelMetric(
        self, request: pb.ModelMetric, context: grpc.aio.ServicerContext[pb.ModelMetric, pb.Response]
    ) -> pb.Response:
        return await self._record("model_metric", request, context)

    @maps_errors
    async def SendAttributeMessage(
        self, request: pb.AttributeMessage,
        context: grpc.aio.ServicerContext[pb.AttributeMessage, pb.Response],
    ) -> pb.Response:
        return await self._record("attributes", request, context)

    @maps_errors
    async def SendTelemetryMessage(
        self, request: pb.TelemetryMessage,
        context: grpc.aio.ServicerContext[pb.TelemetryMessage, pb.Response],
    ) -> pb.Response:
        return await self._record("telemetry", request, context)


class ModelService(scaleout_pb2_grpc.ModelServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    @maps_errors
    async def Upload(self, request_iterator: AsyncIterator[pb.FileChunk],
                     context: grpc.aio.ServicerContext[pb.FileChunk, pb.ModelResponse]) -> pb.ModelResponse:
        md = _metadata(context)
        model_id = md.get("model-id", "")
        if not model_id:
            raise MissingModelId("model-id: metadata required on Upload")
        store = scaleout_for(self.app).models
        try:
            upload = store.begin_upload(model_id)
        except UploadRejected as exc:
            return pb.ModelResponse(status=pb.ModelStatus.FAILED, message=str(exc))
        try:
            async for chunk in request_iterator:
                upload.write(chunk.data)
            info = await upload.commit(md.get("checksum") or None)
        except UploadRejected as exc:
            log.info("scaleout.upload_rejected", model_id=model_id, reason=str(exc))
            return pb.ModelResponse(status=pb.ModelStatus.FAILED, message=str(exc))
        finally:
            upload.abort()
        return pb.ModelResponse(status=pb.ModelStatus.OK,
                                message=f"model {model_id} stored ({info.size} bytes, sha256 {info.sha256})")

    @maps_errors
    async def Download(
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext[pb.ModelRequest, pb.FileChunk]
    ) -> AsyncIterator[pb.FileChunk]:
        info, chunks = scaleout_for(self.app).models.chunks(request.model_id)
        context.set_trailing_metadata((("checksum", info.sha256),))
        try:
            for data in chunks:
                yield pb.FileChunk(data=data)
        finally:
            chunks.close()


def _task_pb(task: Task) -> fl_pb2.FlTask:
    return fl_pb2.FlTask(
        correlation_id=task.correlation_id, client_id=task.client_id, type=task.type, model_id=task.model_id,
        data=task.data, session_id=task.session_id, round_id=task.round_id, status=task.status,
        created_ns=task.created_ns, started_ns=task.started_ns, finished_ns=task.finished_ns,
        timeout_s=task.timeout_s, cancel_requested=task.cancel_requested, response=task.response, seq=task.seq,
    )


class FederationService(fl_pb2_grpc.FederationServicer):
    """The operator's view of the combiner (cellar extension)."""

    def __init__(self, app: App) -> None:
        self.app = app

    @maps_errors
    async def PushTask(
        self, request: fl_pb2.PushTaskRequest,
        context: grpc.aio.ServicerContext[fl_pb2.PushTaskRequest, fl_pb2.FlTask],
    ) -> fl_pb2.FlTask:
        backend = scaleout_for(self.app)
        if request.type in ("Fedn_ModelUpdate", "Fedn_Validation", "Fedn_Prediction") or request.model_id:
            try:
                backend.models.info(check_model_id(request.model_id))  # the client will download it
            except ModelUnavailable:
                raise NotFound(f"model {request.model_id}: not in the model store (upload it first)") from None
        task = backend.combiner.push(request.client_id, request.type, request.model_id, request.data,
                                     request.session_id, request.round_id, request.timeout_s)
        return _task_pb(task)

    @maps_errors
    async def CancelTask(
        self, request: fl_pb2.CancelTaskRequest,
        context: grpc.aio.ServicerContext[fl_pb2.CancelTaskRequest, fl_pb2.FlTask],
    ) -> fl_pb2.FlTask:
        return _task_pb(scaleout_for(self.app).combiner.cancel(request.correlation_id))

    @maps_errors
    async def ListClients(
        self, request: fl_pb2.ListFlClientsRequest,
        context: grpc.aio.ServicerContext[fl_pb2.ListFlClientsRequest, fl_pb2.ListFlClientsResponse],
    ) -> fl_pb2.ListFlClientsResponse:
        clients = scaleout_for(self.app).combiner.clients()
        return fl_pb2.ListFlClientsResponse(clients=[
            fl_pb2.FlClient(client_id=c.client_id, name=c.name, online=c.online, connected=c.connected,
                            last_seen_ns=c.last_seen_ns, first_seen_ns=c.first_seen_ns, version=c.version,
                            queued=c.queued)
            for c in clients
        ])

    @maps_errors
    async def ListTasks(
        self, request: fl_pb2.ListFlTasksRequest,
        context: grpc.aio.ServicerContext[fl_pb2.ListFlTasksRequest, fl_pb2.ListFlTasksResponse],
    ) -> fl_pb2.ListFlTasksResponse:
        tasks = scaleout_for(self.app).combiner.tasks(request.client_id, include_done=not request.active_only)
        return fl_pb2.ListFlTasksResponse(tasks=[_task_pb(t) for t in tasks])

    @maps_errors
    async def ListRecords(
        self, request: fl_pb2.ListFlRecordsRequest,
        context: grpc.aio.ServicerContext[fl_pb2.ListFlRecordsRequest, fl_pb2.ListFlRecordsResponse],
    ) -> fl_pb2.ListFlRecordsResponse:
        records = scaleout_for(self.app).combiner.records(request.kind, request.client_id, request.after_id,
                                                           request.limit or 1000)
        return fl_pb2.ListFlRecordsResponse(records=[
            fl_pb2.FlRecord(id=r.id, kind=r.kind, client_id=r.client_id, correlation_id=r.correlation_id,
                            model_id=r.model_id, body=r.body, ts_ns=r.ts_ns)
            for r in records
        ])

    @maps_errors
    async def ListModels(
        self, request: fl_pb2.ListFlModelsRequest,
        context: grpc.aio.ServicerContext[fl_pb2.ListFlModelsRequest, fl_pb2.ListFlModelsResponse],
    ) -> fl_pb2.ListFlModelsResponse:
        store = scaleout_for(self.app).models
        models = [fl_pb2.FlModel(model_id=m.model_id, sha256=m.sha256, size=m.size, created_ns=m.created_ns,
                                 last_used_ns=m.last_used_ns) for m in store.stored()]
        models += [fl_pb2.FlModel(model_id=mid, size=size, arriving=True) for mid, size in store.arriving()]
        return fl_pb2.ListFlModelsResponse(models=models, used_bytes=store.used_bytes(), max_bytes=store.max_bytes)
