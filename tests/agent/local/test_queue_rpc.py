"""queue.v1.Queue through the node-local endpoint: the contract's errors with parigot trailers,
at-least-once delivery, and durability across SIGKILL of cellard (restarted on the same config)."""

from __future__ import annotations

import itertools
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
from tests.support.api import restart, running_cellard
from tests.support.local import local_socket, parigot_error
from tests.support.timeouts import wait_for

pytestmark = pytest.mark.root
S = grpc.StatusCode
ERR = queue_pb2.QueueErr


def msg(text: str) -> queue_pb2.QueueMsg:
    m = queue_pb2.QueueMsg()
    m.payload.Pack(wrappers_pb2.StringValue(value=text))
    return m


def text(m: queue_pb2.QueueMsg) -> str:
    v = wrappers_pb2.StringValue()
    assert m.payload.Unpack(v)
    return v.value


def expect(name: str, status: grpc.StatusCode, call: Any) -> None:
    assert parigot_error(call) == (status, ERR.Value(name), name)


@pytest.fixture
def q(local_ch: grpc.Channel) -> queue_pb2_grpc.QueueStub:
    return queue_pb2_grpc.QueueStub(local_ch)


def new_queue(q: queue_pb2_grpc.QueueStub) -> tuple[str, IdRaw]:
    name = f"q{secrets.token_hex(4)}"
    return name, q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name), timeout=10).id


@pytest.mark.parametrize("name", ["", "1abc", "_x", ",x", "a b", "a/b", "a:b", "ä", "x" * 256, "a\x00"])
def test_invalid_names(q: queue_pb2_grpc.QueueStub, name: str) -> None:
    expect("InvalidName", S.INVALID_ARGUMENT, lambda: q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name)))
    expect("InvalidName", S.INVALID_ARGUMENT, lambda: q.Locate(queue_pb2.LocateRequest(queue_name=name)))


def test_create_locate_delete(q: queue_pb2_grpc.QueueStub) -> None:
    name, qid = new_queue(q)
    assert qid.high >> 56 == ord("q")
    expect("AlreadyExists", S.ALREADY_EXISTS, lambda: q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name=name)))
    assert q.Locate(queue_pb2.LocateRequest(queue_name=name)).id == qid
    q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("a")]))
    assert q.DeleteQueue(queue_pb2.DeleteQueueRequest(id=qid)).id == qid
    expect("NotFound", S.NOT_FOUND, lambda: q.Locate(queue_pb2.LocateRequest(queue_name=name)))
    expect("NotFound", S.NOT_FOUND, lambda: q.DeleteQueue(queue_pb2.DeleteQueueRequest(id=qid)))
    for call in (lambda: q.Length(queue_pb2.LengthRequest(id=qid)),
                 lambda: q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=1)),
                 lambda: q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("x")])),
                 lambda: q.MarkDone(queue_pb2.MarkDoneRequest(id=qid))):
        expect("NotFound", S.NOT_FOUND, call)
    _, again = new_queue(q)  # cascade left nothing behind: a new queue starts empty
    assert q.Length(queue_pb2.LengthRequest(id=again)).length == 0


def test_send_assigns_ids_and_reports_missing_payloads(q: queue_pb2_grpc.QueueStub) -> None:
    _, qid = new_queue(q)
    empty = queue_pb2.QueueMsg(receive_count=7, msg_id=IdRaw(high=ord("m") << 56, low=7))
    reply = q.Send(queue_pb2.SendRequest(id=qid, msg=[msg("a"), empty, msg("b")]))
    assert len(reply.succeed) == 2 and all(i.high >> 56 == ord("m") for i in reply.succeed)
    assert list(reply.fail) == [empty] and reply.failed_on == empty.msg_id  # the message, not the queue
    assert q.Length(queue_pb2.LengthRequest(id=qid)).length == 2


def test_receive_oldest_first_and_mark_done(q: queue_pb2_grpc.QueueStub) -> None:
    _, qid = new_queue(q)
    assert list(q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=5)).message) == []  # empty: OK
    ids = list(q.Send(queue_pb2.SendRequest(id=qid, msg=[msg(str(i)) for i in range(5)])).succeed)
    got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=3)).message
    assert [text(m) for m in got] == ["0", "1", "2"] and [m.msg_id for m in got] == ids[:3]
    assert all(m.receive_count == 0 and m.id == qid and m.sent.seconds > 0 for m in got)  # none before
    bogus = IdRaw(high=ord("m") << 56, low=12345)
    done = q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[ids[0], ids[1], bogus]))
    assert list(done.unmodified) == [bogus]
    assert q.Length(queue_pb2.LengthRequest(id=qid)).length == 3
    # visibility timeout 0 (this daemon): the not-done message comes back on the very next Receive
    again = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=10)).message
    assert [text(m) for m in again] == ["2", "3", "4"] and again[0].receive_count == 1
    assert list(q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=ids[:2])).unmodified) == ids[:2]


# ------------------------------------------------------------------------------- crash durability


@pytest.fixture
def crashy() -> Iterator[Any]:
    with running_cellard({"queue": {"visibility_timeout_s": 2.0}}) as daemon:
        yield daemon


def kill_and_restart(daemon: Any) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    restart(daemon)


def test_sigkill_loses_nothing_acknowledged_and_redelivers_after_the_timeout(crashy: Any) -> None:
    def stub() -> tuple[grpc.Channel, queue_pb2_grpc.QueueStub]:
        ch = grpc.insecure_channel("unix:" + local_socket(crashy))
        return ch, queue_pb2_grpc.QueueStub(ch)

    ch, q = stub()
    qid = q.CreateQueue(queue_pb2.CreateQueueRequest(queue_name="durable"), timeout=10).id
    sent = list(q.Send(queue_pb2.SendRequest(id=qid, msg=[msg(str(i)) for i in range(10)]), timeout=10).succeed)
    ch.close()
    kill_and_restart(crashy)  # between Send and Receive

    ch, q = stub()
    assert q.Locate(queue_pb2.LocateRequest(queue_name="durable"), timeout=10).id == qid
    assert q.Length(queue_pb2.LengthRequest(id=qid), timeout=10).length == 10
    got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=6), timeout=10).message
    assert [m.msg_id for m in got] == sent[:6]
    q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=[m.msg_id for m in got[:3]]), timeout=10)  # ack 0-2
    received_at = time.monotonic()
    ch.close()
    kill_and_restart(crashy)  # between Receive and MarkDone of 3-5

    ch, q = stub()
    assert q.Length(queue_pb2.LengthRequest(id=qid), timeout=10).length == 7, "acknowledged stay gone"
    early = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=10), timeout=10).message
    if time.monotonic() - received_at < 2.0:  # still hidden: only never-received messages come
        assert [text(m) for m in early] == ["6", "7", "8", "9"]
    deadline = time.monotonic() + 30
    redelivered: list[queue_pb2.QueueMsg] = [m for m in early if text(m) in ("3", "4", "5")]
    while len(redelivered) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
        redelivered += [m for m in q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=10), timeout=10).message
                        if text(m) in ("3", "4", "5")]
    assert sorted(text(m) for m in redelivered) == ["3", "4", "5"]
    assert all(m.receive_count == 1 for m in redelivered)  # one delivery before this one
    ch.close()


def test_sigkill_during_concurrent_group_committed_writes_loses_nothing_acknowledged(crashy: Any) -> None:
    """6 senders and 2 receive+mark-done consumers on their own connections (so their writes share
    commits) while cellard is SIGKILLed: every acknowledged Send is in the file after the restart,
    unless it was acknowledged done or its MarkDone was in flight (committed or not: the client cannot
    know), and nothing acknowledged done is."""
    with grpc.insecure_channel("unix:" + local_socket(crashy)) as ch:
        qid = queue_pb2_grpc.QueueStub(ch).CreateQueue(queue_pb2.CreateQueueRequest(queue_name="group"), timeout=10).id
    sent: set[tuple[int, int]] = set()
    done: set[tuple[int, int]] = set()
    in_flight: set[tuple[int, int]] = set()  # MarkDone sent, no answer: may or may not have committed
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n: int) -> None:
        with grpc.insecure_channel("unix:" + local_socket(crashy)) as ch:
            q = queue_pb2_grpc.QueueStub(ch)
            for i in itertools.count():
                if stop.is_set():
                    return
                try:
                    reply = q.Send(queue_pb2.SendRequest(id=qid, msg=[msg(f"{n}-{i}")]), timeout=10)
                except grpc.RpcError:
                    return  # cellard died: this one was never acknowledged
                with lock:
                    sent.update((m.high, m.low) for m in reply.succeed)

    def consumer() -> None:
        with grpc.insecure_channel("unix:" + local_socket(crashy)) as ch:
            q = queue_pb2_grpc.QueueStub(ch)
            while not stop.is_set():
                try:
                    got = q.Receive(queue_pb2.ReceiveRequest(id=qid, message_limit=5), timeout=10).message
                    ids = [m.msg_id for m in got]
                    with lock:
                        in_flight.update((m.high, m.low) for m in ids)
                    left = q.MarkDone(queue_pb2.MarkDoneRequest(id=qid, msg=ids), timeout=10).unmodified
                except grpc.RpcError:
                    return
                with lock:
                    done.update((m.high, m.low) for m in ids if m not in left)
                    in_flight.difference_update((m.high, m.low) for m in ids)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(sent) >= 300 and len(done) >= 30, "acknowledged sends and mark-dones")
        crashy.proc.send_signal(signal.SIGKILL)
        crashy.proc.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    restart(crashy)
    db = sqlite3.connect(f"file:{crashy.config['paths']['state_dir']}/queue.db?mode=ro", uri=True)
    try:
        stored = {(int(h), int(lo)) for h, lo in db.execute("SELECT high, low FROM messages")}
    finally:
        db.close()
    assert not done & stored, "a message acknowledged done came back"
    assert sent - done - in_flight <= stored, f"{len(sent - done - in_flight - stored)} acknowledged sends lost"
