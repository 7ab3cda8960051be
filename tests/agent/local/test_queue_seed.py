"""queue.v1.Queue as parigot's own proto documents it (api/proto/queue/v1/queue.proto), each test
quoting the comment it holds cellar to, against a REAL cellard (visibility timeout 0: a message not
marked done is delivered again on the very next Receive)."""

from __future__ import annotations

import secrets
import time

import grpc
import pytest
from google.protobuf import any_pb2, wrappers_pb2

from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc

pytestmark = pytest.mark.root


@pytest.fixture
def q(local_ch: grpc.Channel) -> queue_pb2_grpc.QueueStub:
    return queue_pb2_grpc.QueueStub(local_ch)


def msg(text: str, msg_id: IdRaw | None = None) -> queue_pb2.QueueMsg:
    m = queue_pb2.QueueMsg(msg_id=msg_id)
    m.payload.Pack(wrappers_pb2.StringValue(value=text))
    return m


def new_queue(q: queue_pb2_grpc.QueueStub) -> IdRaw:
    return q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=f"s{secrets.token_hex(4)}"), timeout=10).id


def receive_one(q: queue_pb2_grpc.QueueStub, qid: IdRaw) -> queue_pb2.QueueMsg:
    [m] = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=1), timeout=10).message
    return m


def test_receive_count_counts_the_deliveries_before_this_one_and_received_is_the_first(
        q: queue_pb2_grpc.QueueStub) -> None:
    """"ReceiveCount is an approximation of the number of times this messages has been delivered
    before this delivery." / "ReceiveTime is an approximation to the first time the message was
    received. If the message has never been received before, this will be the zero value." """
    qid = new_queue(q)
    q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("x")]), timeout=10)
    before = time.time_ns()
    first = receive_one(q, qid)
    after = time.time_ns()
    assert first.receive_count == 0
    assert first.received.ToNanoseconds() == 0
    time.sleep(0.05)
    second = receive_one(q, qid)
    assert second.receive_count == 1
    assert before <= second.received.ToNanoseconds() <= after
    time.sleep(0.05)
    third = receive_one(q, qid)
    assert third.receive_count == 2
    assert third.received == second.received  # still the first receive


def test_names_may_hold_a_comma(q: queue_pb2_grpc.QueueStub) -> None:
    """InvalidName: "Identifiers must contain only ascii alphanumeric characters and the symbols ".",
    ",","_" and "-".  The first letter of a queue name must be an alphabetic character." """
    name = f"a,b.c_d-{secrets.token_hex(2)},"
    qid = q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name), timeout=10).id
    assert q.Locate(queue_pb2.LocateRequest(queue_name=name), timeout=10).id == qid
    with pytest.raises(grpc.RpcError) as bad:
        q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=",ab"), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_message_without_payload_is_refused_and_one_without_sender_is_not(q: queue_pb2_grpc.QueueStub) -> None:
    """NoPayload: "an attempt was made to create a message a nil payload.  Payloads are mandatory
    and senders are optional." An empty Any (no type, no bytes) is no payload either."""
    qid = new_queue(q)
    unset = queue_pb2.QueueMsg(msg_id=IdRaw(high=1, low=1))
    empty_any = queue_pb2.QueueMsg(msg_id=IdRaw(high=1, low=2), payload=any_pb2.Any())
    reply = q.Send(queue_pb2.SendRequest(id=qid, msg=[unset, empty_any, msg("no sender")]), timeout=10)
    assert list(reply.fail) == [unset, empty_any] and len(reply.succeed) == 1
    assert q.Length(queue_pb2.LengthRequest(id=qid), timeout=10).length == 1
    got = receive_one(q, qid)
    assert not got.HasField("sender") and got.payload.Is(wrappers_pb2.StringValue.DESCRIPTOR)


def test_failed_on_names_the_message_not_the_queue(q: queue_pb2_grpc.QueueStub) -> None:
    """SendResponse: "If the queue msg id is an error then we are using the error_detail_msg to
    return the value.  Note that the message id you provide here will changed once we send you the
    success notification using your id." The id a caller gave its failed message is the one named."""
    qid = new_queue(q)
    mine = IdRaw(high=ord("m") << 56, low=42)
    reply = q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("ok", IdRaw(high=ord("m") << 56, low=41)),
                                                      queue_pb2.QueueMsg(msg_id=mine)]), timeout=10)
    assert reply.failed_on == mine and reply.failed_on != qid
    assert len(reply.succeed) == 1 and reply.succeed[0] != IdRaw(high=ord("m") << 56, low=41)  # server-assigned
