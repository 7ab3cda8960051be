"""file.v1.File: proto <-> :class:`agent.local.files.store.FileStore`, in the caller's scope.

The scope comes from :func:`agent.auth.identity.caller_scope`: a workload on the local endpoint always
works in its own cell's tree; on cellard's main listeners it is ``host`` unless an admin names one
with metadata ``cellar-scope``. Errors are parigot's (:mod:`agent.local.parigot`): status + trailers.

``LoadTestData`` copies host files into the tree, so it is refused (DispatchError, UNIMPLEMENTED) on
the local endpoint and for non-admins, and reads only regular files below ``dir_path``; a directory
holding no file at all is NoDataFoundError, as in the seed.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent.auth.authz import current_role
from agent.auth.identity import caller_identity, caller_scope
from agent.local.files.errors import FileError
from agent.local.files.store import MAX_BUF, FileStore, Stat
from agent.local.parigot import parigot_method
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from proto.parigot.protosupport.v1.protosupport_pb2 import IdRaw

SERVICE_NAME = "file.v1.File"


def _id(fid: tuple[int, int]) -> IdRaw:
    return IdRaw(high=fid[0], low=fid[1])


def _ts(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def file_info(st: Stat) -> file_pb2.FileInfo:
    return file_pb2.FileInfo(
        path=st.path, is_dir=st.is_dir, size=min(st.size, 2**31 - 1),
        create_time=_ts(st.create_ns), mod_time=_ts(st.mod_ns),
    )


def _conn(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The connection a handle is tied to (released when it closes): the node-local endpoint's, or a
    proxied main-socket or mTLS peer's (``unix:<run_dir>/internal/p<N>``, ``.../s<N>``)."""
    ident = caller_identity(context)
    if ident.conn:
        return ident.conn
    peer = context.peer() if ident.transport == "main" else ""
    return peer if peer.startswith("unix:") and ("/internal/p" in peer or "/internal/s" in peer) else ""


def _scope(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return caller_scope(context)
    except ValueError as exc:
        raise FileError("InvalidPathError", str(exc)) from None


class FileService(file_pb2_grpc.FileServicer):
    def __init__(self, store: FileStore) -> None:
        self.store = store

    @parigot_method
    async def Create(  # noqa: N802
        self, request: file_pb2.CreateRequest,
        context: grpc.aio.ServicerContext[file_pb2.CreateRequest, file_pb2.CreateResponse],
    ) -> file_pb2.CreateResponse:
        scope, conn = _scope(context), _conn(context)
        path, fid, truncated = await self.store.run(self.store.create, scope, request.path, request.content.encode(),
                                                    conn)
        return file_pb2.CreateResponse(path=path, id=_id(fid), truncated=truncated)

    @parigot_method
    async def Open(  # noqa: N802
        self, request: file_pb2.OpenRequest,
        context: grpc.aio.ServicerContext[file_pb2.OpenRequest, file_pb2.OpenResponse],
    ) -> file_pb2.OpenResponse:
        path, fid = await self.store.run(self.store.open_file, _scope(context), request.path, _conn(context))
        return file_pb2.OpenResponse(path=path, id=_id(fid))

    @parigot_method
    async def Close(  # noqa: N802
        self, request: file_pb2.CloseRequest,
        context: grpc.aio.ServicerContext[file_pb2.CloseRequest, file_pb2.CloseResponse],
    ) -> file_pb2.CloseResponse:
        fid = await self.store.run(self.store.close_file, _scope(context), (request.id.high, request.id.low))
        return file_pb2.CloseResponse(id=_id(fid))

    @parigot_method
    async def Read(  # noqa: N802
        self, request: file_pb2.ReadRequest,
        context: grpc.aio.ServicerContext[file_pb2.ReadRequest, file_pb2.ReadResponse],
    ) -> file_pb2.ReadResponse:
        data = await self.store.run(self.store.read, _scope(context), (request.id.high, request.id.low), len(request.buf))
        return file_pb2.ReadResponse(id=request.id, num_read=len(data), data=data)

    @parigot_method
    async def Write(  # noqa: N802
        self, request: file_pb2.WriteRequest,
        context: grpc.aio.ServicerContext[file_pb2.WriteRequest, file_pb2.WriteResponse],
    ) -> file_pb2.WriteResponse:
        n = await self.store.run(self.store.write, _scope(context), (request.id.high, request.id.low), request.buf)
        return file_pb2.WriteResponse(id=request.id, num_write=n)

    @parigot_method
    async def Delete(  # noqa: N802
        self, request: file_pb2.DeleteRequest,
        context: grpc.aio.ServicerContext[file_pb2.DeleteRequest, file_pb2.DeleteResponse],
    ) -> file_pb2.DeleteResponse:
        path, fid = await self.store.run(self.store.delete, _scope(context), request.path)
        return file_pb2.DeleteResponse(path=path, id=_id(fid))

    @parigot_method
    async def Stat(  # noqa: N802
        self, request: file_pb2.StatRequest,
        context: grpc.aio.ServicerContext[file_pb2.StatRequest, file_pb2.StatResponse],
    ) -> file_pb2.StatResponse:
        st = await self.store.run(self.store.stat, _scope(context), request.path)
        return file_pb2.StatResponse(file_info=file_info(st), entries=[file_info(e) for e in st.entries])

    @parigot_method
    async def LoadTestData(  # noqa: N802
        self, request: file_pb2.LoadTestDataRequest,
        context: grpc.aio.ServicerContext[file_pb2.LoadTestDataRequest, file_pb2.LoadTestDataResponse],
    ) -> file_pb2.LoadTestDataResponse:
        if caller_identity(context).transport != "main" or current_role() != "admin":
            raise FileError("DispatchError", "LoadTestData copies host files: admin on cellard's main socket only")
        scope = _scope(context)
        errors = await self.store.run(
            load_test_data, self.store, scope, request.dir_path, request.mount_location, request.return_on_fail
        )
        return file_pb2.LoadTestDataResponse(error_path=errors)


def load_test_data(store: FileStore, scope: str, dir_path: str, mount: str, return_on_fail: bool) -> list[str]:
    """Copy every regular file below host directory ``dir_path`` to ``mount`` (a /parigot/app/ path)."""
    from agent.local.files.paths import parse_path

    parse_path(mount.rstrip("/") + "/")
    if not os.path.isabs(dir_path) or not os.path.isdir(dir_path):
        raise FileError("NotExistError", f"dir_path: {dir_path!r} is not a directory")
    errors: list[str] = []
    found = False
    for dirpath, dirnames, filenames in os.walk(dir_path):
        dirnames.sort()
        for name in sorted(filenames):
            found = True
            src = os.path.join(dirpath, name)
            target = mount.rstrip("/") + "/" + os.path.relpath(src, dir_path)
            try:
                with open(src, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
                    _, fid, _ = store.create(scope, target)
                    try:
                        while chunk := fh.read(MAX_BUF):
                            store.write(scope, fid, chunk)
                    finally:
                        store.close_file(scope, fid)
            except (OSError, FileError):
                errors.append(src)
                if return_on_fail:
                    return errors
    if not found:  # the seed's answer for a directory with nothing to load
        raise FileError("NoDataFoundError", f"dir_path: {dir_path!r} holds no file")
    return errors
