"""``cellar fl ...``: the node-local Scaleout Edge combiner, from the operator's side.

``clients``, ``tasks``, ``records`` and ``models`` list what the combiner knows (observer);
``push`` queues a task for a client and ``cancel`` withdraws it (operator). ``upload`` and
``download`` move a model through ``scaleout.ModelService`` exactly as the official client does
(1 MiB chunks, SHA-256 ``checksum`` metadata), e.g. to seed the initial model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click

from agent.cli.connection import Target
from agent.cli.output import emit_object, emit_rows, structured
from proto.cellar.v1 import fl_pb2, fl_pb2_grpc
from proto.scaleout import scaleout_pb2, scaleout_pb2_grpc

CHUNK_BYTES = 1 << 20
TASK_TYPES = {"train": "Fedn_ModelUpdate", "validate": "Fedn_Validation", "predict": "Fedn_Prediction"}


def _when(ns: int) -> str | None:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ns else None


def task_row(t: fl_pb2.FlTask) -> dict[str, Any]:
    return {
        "correlation_id": t.correlation_id, "client": t.client_id, "type": t.type, "model_id": t.model_id,
        "status": t.status, "cancel_requested": t.cancel_requested, "created": _when(t.created_ns),
        "started": _when(t.started_ns), "finished": _when(t.finished_ns), "session_id": t.session_id,
        "round_id": t.round_id, "timeout_s": t.timeout_s or None, "data": t.data, "response": t.response,
    }


def _federation(target: Target) -> tuple[Any, fl_pb2_grpc.FederationStub]:
    channel = target.channel()
    return channel, fl_pb2_grpc.FederationStub(channel)


@click.group()
def fl() -> None:
    """Federated learning: the node-local Scaleout combiner's clients, tasks, records and models."""


@fl.command("clients")
@click.pass_obj
def clients(target: Target) -> None:
    """List clients (online = heartbeat or poll within 30 s)."""
    channel, stub = _federation(target)
    with channel:
        reply = stub.ListClients(fl_pb2.ListFlClientsRequest(), timeout=target.timeout)
    rows = [{"client_id": c.client_id, "name": c.name, "state": "online" if c.online else "offline",
             "connected": c.connected, "queued": c.queued, "last_seen": _when(c.last_seen_ns), "version": c.version}
            for c in reply.clients]
    emit_rows(target.output, rows)


@fl.command("tasks")
@click.option("--client", "client_id", default="", help="only this client's tasks")
@click.option("--active", is_flag=True, help="only NEW, PENDING and RUNNING tasks")
@click.pass_obj
def tasks(target: Target, client_id: str, active: bool) -> None:
    """List tasks, oldest first."""
    channel, stub = _federation(target)
    with channel:
        reply = stub.ListTasks(fl_pb2.ListFlTasksRequest(client_id=client_id, active_only=active), timeout=target.timeout)
    emit_rows(target.output, [task_row(t) for t in reply.tasks],
              ["correlation_id", "client", "type", "model_id", "status", "created", "finished"])


@fl.command("push")
@click.argument("client_id")
@click.argument("model_id", required=False, default="")
@click.option("--type", "task_type", default="train", show_default=True,
              help="train, validate, predict, a Fedn_* name or Custom_<name>")
@click.option("--data", default="", help='JSON object for the client, e.g. {"client_settings": {"epochs": 1}}')
@click.option("--session", "session_id", default="")
@click.option("--round", "round_id", default="")
@click.option("--timeout", "timeout_s", type=float, default=0.0, help="seconds the client may run it (0 = no limit)")
@click.pass_obj
def push(target: Target, client_id: str, model_id: str, task_type: str, data: str, session_id: str, round_id: str,
         timeout_s: float) -> None:
    """Queue a task for CLIENT_ID on MODEL_ID (a stored model); prints its correlation id."""
    request = fl_pb2.PushTaskRequest(client_id=client_id, type=TASK_TYPES.get(task_type, task_type), model_id=model_id,
                                     data=data, session_id=session_id, round_id=round_id, timeout_s=timeout_s)
    channel, stub = _federation(target)
    with channel:
        task = stub.PushTask(request, timeout=target.timeout)
    emit_object(target.output, task_row(task))


@fl.command("cancel")
@click.argument("correlation_id")
@click.pass_obj
def cancel(target: Target, correlation_id: str) -> None:
    """Cancel a task: never delivered if still queued, else interrupted at the client's next report."""
    channel, stub = _federation(target)
    with channel:
        task = stub.CancelTask(fl_pb2.CancelTaskRequest(correlation_id=correlation_id), timeout=target.timeout)
    emit_object(target.output, task_row(task))


@fl.command("records")
@click.option("--kind", default="", help="status, model_update, model_validation, model_prediction, model_metric, "
                                         "attributes, telemetry or announce")
@click.option("--client", "client_id", default="")
@click.option("--after", "after_id", type=int, default=0, help="only records with a larger id")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True)
@click.pass_obj
def records(target: Target, kind: str, client_id: str, after_id: int, limit: int) -> None:
    """List what clients reported (updates, validations, metrics, status, telemetry ...)."""
    channel, stub = _federation(target)
    with channel:
        reply = stub.ListRecords(fl_pb2.ListFlRecordsRequest(kind=kind, client_id=client_id, after_id=after_id,
                                                             limit=limit), timeout=target.timeout)
    rows = [{"id": r.id, "kind": r.kind, "client": r.client_id, "correlation_id": r.correlation_id or None,
             "model_id": r.model_id or None, "time": _when(r.ts_ns),
             "body": json.loads(r.body) if structured(target.output) and r.body else r.body}
            for r in reply.records]
    emit_rows(target.output, rows, ["id", "kind", "client", "correlation_id", "model_id", "time"])


@fl.command("models")
@click.pass_obj
def models(target: Target) -> None:
    """List stored models (least recently used are evicted first when the store is full)."""
    channel, stub = _federation(target)
    with channel:
        reply = stub.ListModels(fl_pb2.ListFlModelsRequest(), timeout=target.timeout)
    rows = [{"model_id": m.model_id, "size": m.size, "sha256": m.sha256 or None,
             "state": "arriving" if m.arriving else "stored", "created": _when(m.created_ns),
             "last_used": _when(m.last_used_ns)} for m in reply.models]
    emit_rows(target.output, rows, ["model_id", "size", "state", "sha256", "last_used"])
    if not structured(target.output):
        click.echo(f"# {reply.used_bytes} of {reply.max_bytes} bytes used", err=True)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK_BYTES):
            digest.update(data)
    return digest.hexdigest()


def _chunks(path: str) -> Iterator[scaleout_pb2.FileChunk]:
    with open(path, "rb") as fh:
        while data := fh.read(CHUNK_BYTES):
            yield scaleout_pb2.FileChunk(data=data)


@fl.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--id", "model_id", default="", help="model id (default: a new uuid)")
@click.pass_obj
def upload(target: Target, path: str, model_id: str) -> None:
    """Store the model file PATH (as the Scaleout client uploads: 1 MiB chunks, SHA-256 checked)."""
    model_id = model_id or str(uuid.uuid4())
    metadata = (("model-id", model_id), ("checksum", _file_sha256(path)))
    started = time.monotonic()
    channel = target.channel()
    with channel:
        reply = scaleout_pb2_grpc.ModelServiceStub(channel).Upload(_chunks(path), metadata=metadata,
                                                                   timeout=max(target.timeout, 3600))
    status = scaleout_pb2.ModelStatus.Name(reply.status)
    emit_object(target.output, {"model_id": model_id, "status": status, "message": reply.message,
                                "seconds": round(time.monotonic() - started, 3)})
    if reply.status != scaleout_pb2.ModelStatus.OK:
        raise SystemExit(1)


@fl.command("download")
@click.argument("model_id")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.pass_obj
def download(target: Target, model_id: str, path: str) -> None:
    """Fetch model MODEL_ID into PATH, verifying the server's SHA-256 ``checksum``."""
    digest = hashlib.sha256()
    tmp = f"{path}.part"
    channel = target.channel()
    try:
        with channel, open(tmp, "wb") as fh:
            call = scaleout_pb2_grpc.ModelServiceStub(channel).Download(
                scaleout_pb2.ModelRequest(model_id=model_id), timeout=max(target.timeout, 3600))
            for chunk in call:
                digest.update(chunk.data)
                fh.write(chunk.data)
            expected = dict(call.trailing_metadata() or ()).get("checksum", "")
        if expected and expected != digest.hexdigest():
            raise click.ClickException(f"checksum mismatch: server {expected}, received {digest.hexdigest()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    emit_object(target.output, {"model_id": model_id, "path": path, "sha256": digest.hexdigest()})
