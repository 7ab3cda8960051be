"""Builders of the fronted services this package owns (file.v1.File, queue.v1.Queue).

Each opens its backend on first use and keeps it on the App (``app.files``, ``app.queue``), so the main
server and the local endpoint share one backend, and other services (the job agent) can reach it.
:func:`close_backends` closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agent.core.app import App

if TYPE_CHECKING:
    import grpc

    from agent.core.services import Service
    from agent.local.files.store import FileStore
    from agent.local.queue.store import QueueStore

_Servicer = TypeVar("_Servicer")


def _service(name: str, add: Callable[[_Servicer, grpc.aio.Server], None], servicer: _Servicer) -> Service:
    from agent.core.services import Service

    return Service(name, lambda server: add(servicer, server))


def file_store(app: App) -> FileStore:
    if app.files is None:
        from agent.local.files.store import FileStore

        app.files = FileStore(os.path.join(app.config.paths.state_dir, "files")).open()
    return app.files


_releases: set[asyncio.Task[Any]] = set()


def release_connection(app: App, key: str) -> None:
    """Connection ``key`` (a proxied peer address) closed: close the file handles opened on it, on the
    file store's thread (see agent.local.files.store.FileStore.release_connection)."""
    files = app.files
    if files is None or not key:
        return
    task = asyncio.get_running_loop().create_task(files.run(files.release_connection, key))
    _releases.add(task)
    task.add_done_callback(_releases.discard)


def queue_store(app: App) -> QueueStore:
    if app.queue is None:
        from agent.local.queue.store import QueueStore

        q = app.config.queue
        app.queue = QueueStore(
            os.path.join(app.config.paths.state_dir, "queue.db"),
            visibility_timeout_s=q.visibility_timeout_s,
            synchronous=q.synchronous,
        ).open()
    return app.queue


def file_service(app: App) -> Service:
    from agent.local.files.servicer import SERVICE_NAME, FileService
    from proto.parigot.file.v1 import file_pb2_grpc

    return _service(SERVICE_NAME, file_pb2_grpc.add_FileServicer_to_server, FileService(file_store(app)))


def queue_service(app: App) -> Service:
    from agent.local.queue.servicer import SERVICE_NAME, QueueService
    from proto.parigot.queue.v1 import queue_pb2_grpc

    return _service(SERVICE_NAME, queue_pb2_grpc.add_QueueServicer_to_server, QueueService(queue_store(app)))


def close_backends(app: App) -> None:
    for name in ("files", "queue", "scaleout"):
        backend = getattr(app, name)
        if backend is not None:
            backend.close()
            setattr(app, name, None)


def queues_list_service(app: App) -> Service:
    """cellar.v1.Queues (listing): main listeners only, never on the local endpoint."""
    from agent.local.queue.servicer import LIST_SERVICE_NAME, QueuesService
    from proto.cellar.v1 import queues_pb2_grpc

    return _service(LIST_SERVICE_NAME, queues_pb2_grpc.add_QueuesServicer_to_server, QueuesService(queue_store(app)))
