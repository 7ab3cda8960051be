"""``cellar files`` and ``cellar queue`` against a real cellard (main socket, admin)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import grpc
import pytest

from agent.cli.queue import SEND_BATCH, SEND_BATCH_BYTES, batches
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
from tests.support.cli import CELLAR, cellar, cli_env
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root


def test_queue_commands(local_daemon: Any, main_ch: grpc.Channel) -> None:
    cellar(local_daemon, "queue", "create", "cliq")
    cellar(local_daemon, "queue", "send", "cliq", "hello", "world")
    assert json.loads(cellar(local_daemon, "-o", "json", "queue", "length", "cliq").stdout)["length"] == 2
    rows = json.loads(cellar(local_daemon, "-o", "json", "queue", "receive", "cliq", "-n", "1", "--done").stdout)
    assert [r["payload"] for r in rows] == ["hello"]
    listed = json.loads(cellar(local_daemon, "-o", "json", "queue", "ls").stdout)
    assert {"name": "cliq", "length": 1, "owner": "host"}.items() <= next(q for q in listed if q["name"] == "cliq").items()
    bad = cellar(local_daemon, "queue", "length", "nope", ok=False)
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr
    cellar(local_daemon, "queue", "create", "--shared", "cliq-bus")  # found from another scope too
    other = (("cellar-scope", "cell:clicell"),)
    q = queue_pb2_grpc.QueueStub(main_ch)
    assert q.Locate(queue_pb2.LocateRequest(queue_name="cliq-bus"), metadata=other, timeout=10).id.high >> 56 == ord("q")
    with pytest.raises(grpc.RpcError) as hidden:
        q.Locate(queue_pb2.LocateRequest(queue_name="cliq"), metadata=other, timeout=10)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


def test_files_commands(local_daemon: Any, main_ch: grpc.Channel) -> None:
    f = file_pb2_grpc.FileStub(main_ch)
    md = (("cellar-scope", "cell:clicell"),)
    reply = f.Create(file_pb2.CreateRequest(path="/parigot/app/dir/note.txt", content="a note"), metadata=md)
    f.Close(file_pb2.CloseRequest(id=reply.id), metadata=md)
    rows = json.loads(cellar(local_daemon, "-o", "json", "files", "ls", "--scope", "cell:clicell").stdout)
    assert rows == [{"path": "/parigot/app/dir", "type": "dir", "size": 6, "modified": rows[0]["modified"]}]
    out = cellar(local_daemon, "files", "cat", "--scope", "cell:clicell", "/parigot/app/dir/note.txt").stdout
    assert out == "a note"
    cellar(local_daemon, "files", "rm", "--scope", "cell:clicell", "/parigot/app/dir/note.txt")
    gone = cellar(local_daemon, "files", "cat", "--scope", "cell:clicell", "/parigot/app/dir/note.txt", ok=False)
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


def test_queue_send_and_receive_in_batches(local_daemon: Any) -> None:
    """1203 messages (from arguments, then stdin lines) go in batched Sends, 1000 come back in one
    Receive and are marked done in one MarkDone; order and ids hold across the batches."""
    cellar(local_daemon, "queue", "create", "bulk")
    texts = [f"m{i}" for i in range(1203)]
    ids = [r["id"] for r in json.loads(cellar(local_daemon, "-o", "json", "queue", "send", "bulk", *texts).stdout)]
    assert len(set(ids)) == 1203
    got = json.loads(cellar(local_daemon, "-o", "json", "queue", "receive", "bulk", "-n", "1000", "--done").stdout)
    assert [r["id"] for r in got] == ids[:1000] and [r["payload"] for r in got] == texts[:1000]
    lines = subprocess.run([*CELLAR, "--addr", local_daemon.socket, "-o", "json", "queue", "send", "bulk", "--lines"],
                           input="x\n\ny z\n", capture_output=True, text=True, env=cli_env(), timeout=scaled(60))
    assert lines.returncode == 0, lines.stderr
    assert len(json.loads(lines.stdout)) == 3
    assert json.loads(cellar(local_daemon, "-o", "json", "queue", "length", "bulk").stdout)["length"] == 203 + 3
    rest = json.loads(cellar(local_daemon, "-o", "json", "queue", "receive", "bulk", "-n", "1000").stdout)
    assert [r["payload"] for r in rest] == texts[1000:] + ["x", "", "y z"]
    both = cellar(local_daemon, "queue", "send", "bulk", "--lines", "p", ok=False)
    assert both.returncode == 2 and "--lines" in both.stderr


def test_send_batches_are_bounded_in_count_and_bytes() -> None:
    assert [len(b) for b in batches([str(i) for i in range(1203)])] == [SEND_BATCH, SEND_BATCH, 203]
    big = "x" * (SEND_BATCH_BYTES // 2)
    assert [len(b) for b in batches(["a", big, big, "b"])] == [2, 2]  # a + big, then big + b
    assert [len(b) for b in batches(["y" * (2 * SEND_BATCH_BYTES), "z"])] == [1, 1]  # one too big goes alone
