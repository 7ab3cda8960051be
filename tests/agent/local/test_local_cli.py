"""``cellar files`` and ``cellar queue`` against a real cellard (main socket, admin)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.parigot.queue.v1 import queue_pb2, queue_pb2_grpc
from tests.support.cli import cellar

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
