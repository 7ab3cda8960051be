"""Helpers for the node-local endpoint attack tests: a client subprocess that runs as any uid, is
optionally moved into a cell between connecting and calling, and reports each call's outcome.

The client imports grpc as root (the interpreter may live under a 0700 home), connects, then drops to
``uid`` (the connection's SO_PEERCRED stays the uid at connect time, so it connects after dropping).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from typing import Any

from tests.security.workload import run_client
from tests.support.timeouts import scaled

NOBODY = 65534

#: argv: socket uid actions-json wait. Prints "ready" once connected (when wait), reads a line, calls.
CLIENT = r"""
import json, os, sys, grpc
from proto.parigot.file.v1 import file_pb2 as F, file_pb2_grpc as FG
from proto.sky import AgentService_pb2_grpc as AG, Common_pb2 as C, RunJob_pb2 as RJ, StageInFile_pb2 as SF
from proto.cellar.v1 import logs_pb2 as L, logs_pb2_grpc as LG
from agent.local.jobs.ids import format_file_id, parse_file_id
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw as I
sock, uid, actions, mode = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
if uid:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
if mode == "join":  # moved into a cell before it connects
    print("ready", flush=True)
    sys.stdin.readline()
ch = grpc.insecure_channel(sock if ":" in sock.split("/")[0] else "unix:" + sock)
grpc.channel_ready_future(ch).result(timeout=10)
if mode == "wait":  # moved after it connected
    print("ready", flush=True)
    sys.stdin.readline()
f, agent = FG.FileStub(ch), AG.AgentStub(ch)
out = []
def fid(s):
    return format_file_id(s.high, s.low)
for op, *args in actions:
    try:
        if op == "stat":
            r = f.Stat(F.StatRequest(path=args[0]), timeout=10)
            out.append(["OK", [e.path for e in r.entries], r.file_info.size])
        elif op == "write":
            r = f.Create(F.CreateRequest(path=args[0], content=args[1]), timeout=10)
            f.Close(F.CloseRequest(id=r.id), timeout=10)
            out.append(["OK", fid(r.id)])
        elif op == "create":  # left open
            r = f.Create(F.CreateRequest(path=args[0]), timeout=10)
            out.append(["OK", fid(r.id)])
        elif op == "read":
            r = f.Open(F.OpenRequest(path=args[0]), timeout=10)
            try:
                d = f.Read(F.ReadRequest(id=r.id, buf=b"\0" * 2048), timeout=10).data
            finally:
                f.Close(F.CloseRequest(id=r.id), timeout=10)
            out.append(["OK", d.decode(errors="replace")])
        elif op in ("read_id", "close_id"):
            h, l = parse_file_id(args[0])
            if op == "read_id":
                out.append(["OK", f.Read(F.ReadRequest(id=I(high=h, low=l), buf=b"\0" * 16), timeout=10).data.decode()])
            else:
                f.Close(F.CloseRequest(id=I(high=h, low=l)), timeout=10)
                out.append(["OK"])
        elif op == "delete":
            f.Delete(F.DeleteRequest(path=args[0]), timeout=10)
            out.append(["OK"])
        elif op == "stage":
            r = agent.StageInFiles(SF.StageInFilesRequest(job=C.JobId(uuid=args[0]),
                                   files=[C.FileId(uuid=u) for u in args[1]]), timeout=30)
            out.append(["OK", [s.file.uuid for s in r.success_files]])
        elif op == "run":
            r = agent.RunJob(RJ.RunJobRequest(job=C.JobId(uuid=args[0])), timeout=30)
            out.append(["OK", RJ.ResponseCode.Name(r.code), r.phase])
        elif op == "logs":
            recs = [rec for b in LG.LogsStub(ch).Read(L.ReadLogsRequest(cell_name=args[0], executable_name=args[1]),
                                                       timeout=10) for rec in b.records]
            out.append(["OK", [rec.data.decode(errors="replace") for rec in recs if rec.channel == L.LOG_CHANNEL_STDOUT]])
        elif op == "follow":  # until the exit record
            lines, stream = [], LG.LogsStub(ch).Read(L.ReadLogsRequest(cell_name=args[0], executable_name=args[1],
                                                                       follow=True), timeout=60)
            for b in stream:
                lines += [rec.data.decode(errors="replace") for rec in b.records if rec.channel == L.LOG_CHANNEL_STDOUT]
                if any(rec.channel == L.LOG_CHANNEL_EXIT for rec in b.records):
                    stream.cancel()
                    break
            out.append(["OK", lines])
        elif op == "exit":
            os._exit(0)  # leave without closing anything (file handles stay "open")
        else:
            out.append(["BAD_OP"])
    except grpc.RpcError as e:
        md = dict(e.trailing_metadata() or ())
        out.append([e.code().name, md.get("parigot-error-name", ""), e.details()])
print(json.dumps(out), flush=True)
"""



def call(sock: str, actions: list[list[Any]], uid: int = 0, move_to: str | None = None,
         join: str | None = None) -> list[list[Any]]:
    """Run CLIENT as ``uid`` against ``sock``; when ``move_to`` (a cgroup leaf), move it there after it
    connected and before it calls; when ``join``, move it there before it connects (a workload of that
    cell). One result per action: ``["OK", ...]`` or ``[code, parigot name, details]``."""
    mode = "wait" if move_to else "join" if join else "go"
    move_to = move_to or join
    out = run_client([sys.executable, "-c", CLIENT, sock, str(uid), json.dumps(actions), mode], move_to,
                     ready=move_to is not None)
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else []  # type: ignore[no-any-return]


def connection_of_a_dead_process(sock: str) -> socket.socket:
    """A connection to ``sock`` made by a process that has exited since (its fd handed to us)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    code = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "time.sleep(0.5)\n"  # cellard has accepted (and bound) the connection by now
            "socket.send_fds(socket.socket(fileno=int(sys.argv[2])), [b'x'], [s.fileno()])\n")
    subprocess.run([sys.executable, "-c", code, sock, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                   check=True, timeout=scaled(30))
    theirs.close()
    _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
    ours.close()
    return socket.socket(fileno=fds[0])


def relay(listen_path: str, upstream: socket.socket) -> threading.Thread:
    """Serve ONE connection on ``listen_path`` by splicing it to ``upstream`` (threads; ends with either)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(listen_path)
    server.listen(1)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        conn, _ = server.accept()
        server.close()
        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread
