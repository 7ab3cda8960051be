"""Group commit for report writes: reports that arrive while a write is in flight are stored
together in the next transaction. One commit (one fsync on PostgreSQL) then serves many reporters,
which is what lets one saver keep up with thousands of machines; a lone report is written at once.
Under overload, reports whose callers already gave up are dropped before the write, so the saver
spends its time on reports someone still waits for.
"""

from __future__ import annotations

import asyncio

from agent.pb.saver.store import MachineStore, NewReport

MAX_BATCH = 256


class Batcher:
    def __init__(self, store: MachineStore, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[NewReport, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def save(self, report: NewReport) -> None:
        """Store ``report`` (in some batch); raise what refused it (StoreError, TooManyMachines)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="saver-batcher")
        await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            batch = [(r, f) for r, f in batch if not f.done()]  # a caller gone (deadline): not worth a write
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self.store.save_many, [r for r, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except BaseException as exc:  # the whole transaction failed: every report of it
                results = [exc] * len(batch)
            for (_, future), error in zip(batch, results, strict=True):
                if future.done():  # its caller went away (deadline, cancelled)
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
