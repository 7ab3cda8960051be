"""``cellar queue``: the node-local durable queue (queue.v1.Queue) from the operator's side.

Payloads sent from here are ``google.protobuf.StringValue``; received payloads of that type (or
BytesValue) print as text, anything else as its type URL and size. Message ids print as 32 hex digits.
Messages travel in batches, one RPC for many (``send`` up to :data:`SEND_BATCH` a Send, ``receive -n``
one Receive and one MarkDone): each RPC is one commit (one fsync) in cellard.
"""

from __future__ import annotations

import datetime as dt
import sys

import click
from google.protobuf import wrappers_pb2
from google.protobuf.any_pb2 import Any as AnyPb

from agent.cli.connection import Target
from agent.cli.output import emit_object, emit_rows
from proto.cellar.v1 import queues_pb2, queues_pb2_grpc
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc

SEND_BATCH = 500  # messages per SendRequest
SEND_BATCH_BYTES = 1 << 20  # and payload bytes per SendRequest (gRPC's default limit is 4 MiB)


def hex_id(raw: IdRaw) -> str:
    return f"{raw.high:016x}{raw.low:016x}"


def parse_id(text: str) -> IdRaw:
    if len(text) != 32:
        raise click.BadParameter(f"expected 32 hex digits, got {text!r}")
    try:
        return IdRaw(high=int(text[:16], 16), low=int(text[16:], 16))
    except ValueError:
        raise click.BadParameter(f"expected 32 hex digits, got {text!r}") from None


def payload_text(payload: AnyPb) -> str:
    for kind in (wrappers_pb2.StringValue, wrappers_pb2.BytesValue):
        value = kind()
        if payload.Is(value.DESCRIPTOR) and payload.Unpack(value):
            return value.value if isinstance(value.value, str) else value.value.decode(errors="replace")
    return f"<{payload.type_url}: {len(payload.value)} bytes>"


def _locate(stub: queue_pb2_grpc.QueueStub, name: str, timeout: float) -> IdRaw:
    return stub.Locate(queue_pb2.LocateRequest(queue_name=name), timeout=timeout).id


def _ns(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ns else "-"


@click.group()
def queue() -> None:
    """List, create, delete, send to and receive from node-local queues."""


@queue.command("ls")
@click.pass_obj
def ls(target: Target) -> None:
    """Every queue: name, id, creating scope, messages not yet done."""
    with target.channel() as ch:
        reply = queues_pb2_grpc.QueuesStub(ch).List(queues_pb2.ListQueuesRequest(), timeout=target.timeout)
    rows = [{"name": q.name, "id": hex_id(q.id), "owner": q.owner, "length": q.length, "created": _ns(q.created_unix_ns)}
            for q in reply.queues]
    emit_rows(target.output, rows, ["name", "length", "owner", "created", "id"])


@queue.command("create")
@click.argument("name")
@click.option("--shared", is_flag=True, help="every scope (cells, users) finds it; only this caller may delete it")
@click.pass_obj
def create(target: Target, name: str, shared: bool) -> None:
    """Create queue NAME (in the caller's scope unless --shared)."""
    with target.channel() as ch:
        reply = queue_pb2_grpc.QueueStub(ch).CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name, shared=shared),
                                                         timeout=target.timeout)
    emit_object(target.output, {"name": name, "id": hex_id(reply.id)})


@queue.command("rm")
@click.argument("name")
@click.pass_obj
def rm(target: Target, name: str) -> None:
    """Delete queue NAME with its messages (only the scope that created it may)."""
    with target.channel() as ch:
        stub = queue_pb2_grpc.QueueStub(ch)
        qid = _locate(stub, name, target.timeout)
        stub.DeleteQueue(queue_pb2.DeleteQueueRequest(id=qid), timeout=target.timeout)
    emit_object(target.output, {"deleted": name, "id": hex_id(qid)})


def batches(texts: list[str]) -> list[list[queue_pb2.QueueMsg]]:
    """``texts`` as StringValue messages, cut into SendRequests of at most SEND_BATCH messages and
    about SEND_BATCH_BYTES (a single larger message goes alone)."""
    out: list[list[queue_pb2.QueueMsg]] = [[]]
    size = 0
    for text in texts:
        msg = queue_pb2.QueueMsg()
        msg.payload.Pack(wrappers_pb2.StringValue(value=text))
        n = msg.ByteSize()
        if out[-1] and (len(out[-1]) >= SEND_BATCH or size + n > SEND_BATCH_BYTES):
            out.append([])
            size = 0
        out[-1].append(msg)
        size += n
    return out


@queue.command("send")
@click.argument("name")
@click.argument("payloads", nargs=-1)
@click.option("--lines", is_flag=True, help="read stdin: one message per line (sent in batches)")
@click.pass_obj
def send(target: Target, name: str, payloads: tuple[str, ...], lines: bool) -> None:
    """Send each PAYLOAD (text; none = one message read from stdin, or one per line with --lines) to
    queue NAME; prints the new message ids in order."""
    if lines and payloads:
        raise click.UsageError("--lines reads the messages from stdin: give no PAYLOAD")
    texts = list(payloads) or (sys.stdin.read().splitlines() if lines else [sys.stdin.read()])
    ids: list[IdRaw] = []
    with target.channel() as ch:
        stub = queue_pb2_grpc.QueueStub(ch)
        qid = _locate(stub, name, target.timeout)
        for msgs in batches(texts) if texts else []:
            ids += stub.Send(queue_pb2.SendRequest(id=qid, msg=msgs), timeout=target.timeout).succeed
    emit_rows(target.output, [{"id": hex_id(m)} for m in ids], ["id"])


@queue.command("receive")
@click.argument("name")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--done", is_flag=True, help="mark the received messages done (acknowledge them)")
@click.pass_obj
def receive(target: Target, name: str, limit: int, done: bool) -> None:
    """Receive up to LIMIT of the oldest visible messages of queue NAME (one Receive; with --done, one
    MarkDone of them all)."""
    with target.channel() as ch:
        stub = queue_pb2_grpc.QueueStub(ch)
        qid = _locate(stub, name, target.timeout)
        reply = stub.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=limit), timeout=target.timeout)
        if done and reply.message:
            stub.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[m.msg_id for m in reply.message]), timeout=target.timeout)
    rows = [{"id": hex_id(m.msg_id), "receive_count": m.receive_count, "sent": _ns(m.sent.ToNanoseconds()),
             "payload": payload_text(m.payload)} for m in reply.message]
    emit_rows(target.output, rows, ["id", "receive_count", "sent", "payload"])


@queue.command("done")
@click.argument("name")
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
def mark_done(target: Target, name: str, ids: tuple[str, ...]) -> None:
    """Mark messages IDS of queue NAME done; prints the ids that matched nothing."""
    raws = [parse_id(i) for i in ids]
    with target.channel() as ch:
        stub = queue_pb2_grpc.QueueStub(ch)
        qid = _locate(stub, name, target.timeout)
        reply = stub.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=raws), timeout=target.timeout)
    emit_rows(target.output, [{"unmodified": hex_id(m)} for m in reply.unmodified], ["unmodified"])


@queue.command("length")
@click.argument("name")
@click.pass_obj
def length(target: Target, name: str) -> None:
    """Messages of queue NAME not yet marked done."""
    with target.channel() as ch:
        stub = queue_pb2_grpc.QueueStub(ch)
        qid = _locate(stub, name, target.timeout)
        reply = stub.Length(queue_pb2.LengthRequest(id=qid), timeout=target.timeout)
    emit_object(target.output, {"name": name, "length": reply.length})
