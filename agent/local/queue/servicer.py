"""queue.v1.Queue: proto <-> :class:`agent.local.queue.store.QueueStore`; errors are parigot's.

Every call acts as the caller's scope (:func:`agent.auth.identity.caller_scope`), which decides which
queues it can see (see the store). ``CreateQueueRequest.shared`` (cellar's field 10) makes a queue
every scope can find.

Send: "Payloads are mandatory and senders are optional" (parigot's NoPayload): a message whose
``payload`` is unset or an empty Any (no type) comes back in ``fail``, and ``failed_on`` names the
first such *message* (the ``msg_id`` its sender gave it); the others are stored and their
server-assigned ids listed in ``succeed``, in order.

Send, Receive and MarkDone are group-committed (:meth:`QueueStore.write`): concurrent calls share one
transaction and one fsync, and each is answered only after the commit that holds it. Every one of them
takes many messages per call (``SendRequest.msg``, ``ReceiveRequest.message_limit`` up to 1000,
``MarkDoneRequest.msg``): a client that batches pays one round trip for many messages.
"""

from __future__ import annotations

import grpc
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.timestamp_pb2 import Timestamp

from agent.auth.identity import caller_scope
from agent.core import counters
from agent.local.parigot import parigot_method
from agent.local.queue.store import Message, Outgoing, QueueStore
from proto.cellar.v1 import queues_pb2, queues_pb2_grpc
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc

SERVICE_NAME = "queue.v1.Queue"
LIST_SERVICE_NAME = "cellar.v1.Queues"


def _id(pair: tuple[int, int]) -> IdRaw:
    return IdRaw(high=pair[0], low=pair[1])


def _pair(raw: IdRaw) -> tuple[int, int]:
    return raw.high, raw.low


def _ts(ns: int) -> Timestamp | None:
    if not ns:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def to_proto(msg: Message) -> queue_pb2.QueueMsg:
    out = queue_pb2.QueueMsg(
        id=_id(msg.queue), msg_id=_id(msg.id), receive_count=msg.receive_count,
        received=_ts(msg.received_ns), sent=_ts(msg.sent_ns), payload=AnyPb.FromString(msg.payload),
    )
    if msg.sender is not None:
        out.sender.CopyFrom(AnyPb.FromString(msg.sender))
    return out


class QueueService(queue_pb2_grpc.QueueServicer):
    def __init__(self, store: QueueStore) -> None:
        self.store = store

    @parigot_method
    async def CreateQueue(  # noqa: N802
        self, request: queue_pb2.CreateQueueRequest,
        context: grpc.aio.ServicerContext[queue_pb2.CreateQueueRequest, queue_pb2.CreateQueueResponse],
    ) -> queue_pb2.CreateQueueResponse:
        qid = await self.store.run(self.store.create, caller_scope(context), request.queue_name, request.shared)
        return queue_pb2.CreateQueueResponse(id=_id(qid))

    @parigot_method
    async def Locate(  # noqa: N802
        self, request: queue_pb2.LocateRequest,
        context: grpc.aio.ServicerContext[queue_pb2.LocateRequest, queue_pb2.LocateResponse],
    ) -> queue_pb2.LocateResponse:
        qid = await self.store.run(self.store.locate, caller_scope(context), request.queue_name)
        return queue_pb2.LocateResponse(id=_id(qid))

    @parigot_method
    async def DeleteQueue(  # noqa: N802
        self, request: queue_pb2.DeleteQueueRequest,
        context: grpc.aio.ServicerContext[queue_pb2.DeleteQueueRequest, queue_pb2.DeleteQueueResponse],
    ) -> queue_pb2.DeleteQueueResponse:
        qid = await self.store.run(self.store.delete, caller_scope(context), _pair(request.id))
        return queue_pb2.DeleteQueueResponse(id=_id(qid))

    @parigot_method
    async def Send(  # noqa: N802
        self, request: queue_pb2.SendRequest,
        context: grpc.aio.ServicerContext[queue_pb2.SendRequest, queue_pb2.SendResponse],
    ) -> queue_pb2.SendResponse:
        outgoing = [
            Outgoing(
                m.payload.SerializeToString() if m.HasField("payload") and m.payload.type_url else None,
                m.sender.SerializeToString() if m.HasField("sender") else None,
            )
            for m in request.msg
        ]
        ids = await self.store.write(self.store.send_op, caller_scope(context), _pair(request.id), outgoing)
        reply = queue_pb2.SendResponse()
        counters.QUEUE_SENT.inc(sum(mid is not None for mid in ids))
        for msg, mid in zip(request.msg, ids, strict=True):
            if mid is None:
                if not reply.fail:
                    reply.failed_on.CopyFrom(msg.msg_id)
                reply.fail.append(msg)
            else:
                reply.succeed.append(_id(mid))
        return reply

    @parigot_method
    async def Receive(  # noqa: N802
        self, request: queue_pb2.ReceiveRequest,
        context: grpc.aio.ServicerContext[queue_pb2.ReceiveRequest, queue_pb2.ReceiveResponse],
    ) -> queue_pb2.ReceiveResponse:
        msgs = await self.store.write(self.store.receive_op, caller_scope(context), _pair(request.id),
                                     request.message_limit)
        counters.QUEUE_RECEIVED.inc(len(msgs))
        return queue_pb2.ReceiveResponse(id=request.id, message=[to_proto(m) for m in msgs])

    @parigot_method
    async def MarkDone(  # noqa: N802
        self, request: queue_pb2.MarkDoneRequest,
        context: grpc.aio.ServicerContext[queue_pb2.MarkDoneRequest, queue_pb2.MarkDoneResponse],
    ) -> queue_pb2.MarkDoneResponse:
        unmodified = await self.store.write(self.store.mark_done_op, caller_scope(context), _pair(request.id),
                                            [_pair(m) for m in request.msg])
        counters.QUEUE_ACKNOWLEDGED.inc(max(0, len(request.msg) - len(unmodified)))
        return queue_pb2.MarkDoneResponse(id=request.id, unmodified=[_id(m) for m in unmodified])

    @parigot_method
    async def Length(  # noqa: N802
        self, request: queue_pb2.LengthRequest,
        context: grpc.aio.ServicerContext[queue_pb2.LengthRequest, queue_pb2.LengthResponse],
    ) -> queue_pb2.LengthResponse:
        n = await self.store.run(self.store.length, caller_scope(context), _pair(request.id))
        return queue_pb2.LengthResponse(id=request.id, length=n)


class QueuesService(queues_pb2_grpc.QueuesServicer):
    """cellar.v1.Queues: the listing queue.v1 lacks (main listeners only; for ``cellar queue ls``): every
    scope's queues, each with its creating scope as ``owner``."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store

    @parigot_method
    async def List(  # noqa: N802
        self, request: queues_pb2.ListQueuesRequest,
        context: grpc.aio.ServicerContext[queues_pb2.ListQueuesRequest, queues_pb2.ListQueuesResponse],
    ) -> queues_pb2.ListQueuesResponse:
        infos = await self.store.run(self.store.list)
        return queues_pb2.ListQueuesResponse(queues=[
            queues_pb2.QueueSummary(name=q.name, id=_id(q.id), owner=q.owner, length=q.length, created_unix_ns=q.created_ns)
            for q in infos
        ])
