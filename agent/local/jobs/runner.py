"""Stage files and run jobs, each in a cell of its own: the job agent's core (no gRPC here).

Convention (the seed names no command): the job's entry is a staged file called ``run.sh`` (run
with ``/bin/sh run.sh``) or else ``main.py`` (run with the interpreter picked by the requirement
``python_version``: ``python<major.minor>`` on cellard's PATH, ``python3`` when none is asked for;
no such interpreter -> FAILED_PRECONDITION at submit). Staged files keep the last component of their
file-store path as their name in the work directory.

An id StageInFiles names is looked up in the file store first (file.v1.File ids, scoped to the
caller's cell) and then in the model store (ids given to scaleout.ModelService uploads, node-wide, as
the model service is): a model is staged under its id as the file name.

Ownership: a job id names a job within the caller's scope (:func:`agent.auth.identity.caller_scope`:
``cell:<name>``, ``user:<uid>`` or ``host``; the label hashes both, :func:`agent.local.jobs.ids.job_label`),
so another scope using the same id reaches a job of its own: it can neither stage into nor poll the
first, nor learn that it exists, nor squat an id the first will use (the host is no exception). Files
are staged only from the scope's own tree, and staging ends when the job is submitted
(FAILED_PRECONDITION after). The operator's read view (cellar.v1.Jobs) sees every job.

Bounds (``[jobs]`` in the config, RESOURCE_EXHAUSTED naming the key): any local user may stage, and
staging makes a record and a directory, so each scope has at most ``max_pending_per_scope`` jobs
staged but not submitted, and each job at most ``max_staged_files`` files of ``max_staged_bytes`` in
all. A refused call copies nothing and makes no record. A job staged and never submitted expires
``pending_ttl_s`` after its creation: whenever a new job is staged, expired ones are removed first.

Outputs: once the job is done (and its cell freed), the submitter finds in its own file-store scope,
below ``/parigot/app/jobs/<label>/`` (``<label>``: the job's cell is ``jobs/<label>``, as RunJob
answers): ``work/...``, every regular file the work directory holds, and ``files/...``, what the job
wrote through file.v1.File (its own scope ``cell:jobs/<label>``, path below ``/parigot/app/`` kept).
Copies, never through a symlink; a file with several hard links, or a path the file rules refuse,
is skipped (:meth:`FileStore.import_tree`).

Lifecycle: the first RunJob validates (entry, interpreter, files), records the job as ``preparing``
and answers WAIT; a task then allocates the cell ``jobs/<label>`` (process isolation: own pid, mount,
uts, ipc namespaces; contained, never privileged: a cell that exists already with admin-only settings
fails the job) and starts executable ``job`` with cwd = ``<state_dir>/jobs/<label>/work``.
Later calls poll: RUN while the process lives, DONE once it exited (exit code/signal recorded, the
cell freed; its logs stay readable as ``jobs/<label>/job`` through cellar.v1.Logs and observe).
Polls ask the supervisor, so a cellard restart keeps answering; a job left ``preparing`` by a
crash is prepared again on its next poll (allocate and start are idempotent here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent.auth.privilege import cell_admin_only
from agent.config import VOLUMES_SUBDIR, JobsConfig
from agent.local.jobs.ids import format_file_id, job_label, parse_file_id, validate_job_id
from agent.local.jobs.store import EXITED, FAILED, PREPARING, QUEUED, RUNNING, JobRecord, JobStore
from cells import errors as cell_errors
from cells.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from cells.spec import CellSpec, ExecutableSpec, Mount
from cells.state import ExecutableState, to_dict
from observe import kinds

log = structlog.get_logger("agent.local.jobs")

JOBS_CELL = "jobs"
ENTRY_SH, ENTRY_PY = "run.sh", "main.py"
MAX_FILES_PER_CALL = 1024
_PY_VERSION = re.compile(r"^(\d{1,2})(\.\d{1,3})?$")
#: Copy in chunks; a file bigger than this cannot be staged (the store holds small files).
MAX_STAGED_BYTES = 1 << 30


class JobError(cell_errors.CellError):
    """Base of the job agent's own errors (each mapped in agent.core.status.STATUS_FOR)."""


class JobNotFound(NotFound):
    pass


class NotYourJob(JobError, kinds.Denied):
    """The job belongs to another scope (cell), or the caller may not name that scope: PERMISSION_DENIED."""


def pick_interpreter(version: str, which: Callable[[str], str | None] = shutil.which) -> str:
    """Absolute path of the interpreter for ``python_version`` (see the module docstring)."""
    if version and not _PY_VERSION.match(version):
        raise InvalidArgument("requirements.python_version", f"expected like 3 or 3.11, got {version[:32]!r}")
    name = f"python{version}" if version else "python3"
    found = which(name)
    if found is None:
        raise FailedPrecondition(f"no {name} on this host's PATH (requirements.python_version={version!r})")
    return os.path.abspath(found)


class JobRunner:
    def __init__(self, runtime: Any, files: Callable[[], Any], state_dir: str,
                 models: Callable[[], Any] = lambda: None, limits: JobsConfig | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.runtime = runtime
        self._files = files  # -> agent.local.files.store.FileStore (may appear after we are built)
        self._models = models  # -> agent.scaleout.models.ModelStore, or None without the model service
        self.state_dir = state_dir
        self.limits = limits or JobsConfig()
        self.clock = clock  # ns since the epoch: job creation times and their expiry
        self.store = JobStore(os.path.join(state_dir, "jobs"))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, label: str) -> asyncio.Lock:
        return self._locks.setdefault(label, asyncio.Lock())

    # -- staging ------------------------------------------------------------------------------------
    async def stage(self, job_id: str, file_ids: list[str], scope: str = "host") -> list[str]:
        """Copy files by id into the job's work dir; returns the ids staged (input order, no dups)."""
        validate_job_id(job_id)
        if len(file_ids) > MAX_FILES_PER_CALL:
            raise InvalidArgument("files", f"at most {MAX_FILES_PER_CALL} per call")
        label = job_label(job_id, scope)
        async with self._lock(label):
            record = self._record_for(job_id, label, scope, create=True)
            assert record is not None
            if self.store.load(label) is None:
                await self._admit_pending(scope, label)
            if record.submitted or record.phase != QUEUED:
                raise FailedPrecondition(f"job {job_id!r} was submitted ({record.phase}): files are staged before")
            staged = await self._stage_into(record, file_ids, scope)
            self.store.save(record)
            return staged

    async def _admit_pending(self, scope: str, label: str) -> None:
        """Before a new job is recorded: drop expired pending jobs, then hold ``scope`` to its cap."""
        cap = self.limits.max_pending_per_scope
        pending = 0
        for record in self.store.all():
            if record.submitted or record.phase != QUEUED or record.label == label:
                continue
            if await self._expire(record):
                continue
            pending += record.owner == scope
        if pending >= cap:
            raise ResourceExhausted(f"jobs.max_pending_per_scope: {scope} has {pending} jobs staged and not "
                                    f"submitted (at most {cap}); submit them or let them expire")

    async def _expire(self, record: JobRecord) -> bool:
        """Remove ``record`` when it is pending and older than ``pending_ttl_s``; True when removed."""
        age_s = (self.clock() - record.created_at_ns) / 1e9
        lock = self._lock(record.label)
        if age_s <= self.limits.pending_ttl_s or lock.locked():
            return False
        async with lock:
            fresh = self.store.load(record.label)
            if fresh is None or fresh.submitted or fresh.phase != QUEUED:
                return fresh is None
            await asyncio.to_thread(shutil.rmtree, self.store.job_dir(record.label), True)
        self._locks.pop(record.label, None)
        log.info("job.expired", job=record.id, owner=record.owner, age_s=round(age_s))
        return True

    async def _stage_into(self, record: JobRecord, file_ids: list[str], scope: str) -> list[str]:
        sources = await self._sources(record, file_ids, scope)
        self._check_staged_caps(record, sources)
        work = self.store.work_dir(record.label)
        os.makedirs(work, mode=0o755, exist_ok=True)
        done: list[str] = []
        for text, canonical, path, name, _size in sources:
            try:
                await asyncio.to_thread(_copy_into, path, work, name)
            except OSError as exc:  # e.g. a model evicted between lookup and open
                log.warning("job.stage_failed", job=record.id, file=canonical, error=str(exc))
                continue
            record.staged[name] = canonical
            done.append(text)
        return done

    async def _sources(self, record: JobRecord, file_ids: list[str], scope: str) -> list[tuple[str, str, str, str, int]]:
        """(id as sent, canonical id, host path, name, size) of each file to stage, in order, once each."""
        store = self._files()
        out: list[tuple[str, str, str, str, int]] = []
        seen: set[str] = set()
        for text in file_ids:
            source = await self._file_source(store, text, scope) or self._model_source(text)
            if source is None:
                continue  # unknown, deleted, or another cell's file: not staged
            canonical, path, name = source
            holder = record.staged.get(name)
            if canonical in seen or (holder is not None and holder != canonical):
                continue  # a duplicate, or another file already owns that name in this job
            seen.add(canonical)
            try:
                out.append((text, canonical, path, name, os.stat(path).st_size))
            except OSError:
                continue
        return out

    def _check_staged_caps(self, record: JobRecord, sources: list[tuple[str, str, str, str, int]]) -> None:
        """RESOURCE_EXHAUSTED before anything is copied when the job would hold too many files or bytes."""
        incoming = {name: size for _t, _c, _p, name, size in sources}
        names = set(record.staged) | set(incoming)
        if len(names) > self.limits.max_staged_files:
            raise ResourceExhausted(f"jobs.max_staged_files: job {record.id!r} would hold {len(names)} files "
                                    f"(at most {self.limits.max_staged_files})")
        total = sum(incoming.values()) + sum(_size_of(os.path.join(self.store.work_dir(record.label), n))
                                             for n in record.staged if n not in incoming)
        if total > self.limits.max_staged_bytes:
            raise ResourceExhausted(f"jobs.max_staged_bytes: job {record.id!r} would hold {total} bytes "
                                    f"(at most {self.limits.max_staged_bytes})")

    @staticmethod
    async def _file_source(store: Any, text: str, scope: str) -> tuple[str, str, str] | None:
        """(canonical id, host path, name) of a file-store file the caller's scope may stage."""
        try:
            high, low = parse_file_id(text)
        except InvalidArgument:
            return None
        ref = await store.run(store.locate, high, low) if store is not None else None
        if ref is None or ref.scope != scope:
            return None
        return format_file_id(high, low), ref.host_path, os.path.basename(ref.path)

    def _model_source(self, text: str) -> tuple[str, str, str] | None:
        """(canonical id, blob path, name) of a stored model; staging counts as a use for eviction."""
        from agent.scaleout.errors import ScaleoutError
        from agent.scaleout.models import MODEL_ID

        models = self._models()
        if models is None or not MODEL_ID.match(text):
            return None
        try:
            return f"model:{text}", str(models.path_for(text)), text
        except ScaleoutError:  # unknown or still arriving: not staged
            return None

    # -- run / poll -----------------------------------------------------------------------------------
    async def run(self, job_id: str, file_ids: list[str], python_version: str, scope: str = "host",
                  may_submit: bool = True) -> JobRecord:
        """Submit on the first call, poll afterwards (see the module docstring)."""
        validate_job_id(job_id)
        if not may_submit:  # every call: a poll may launch the job too
            raise NotYourJob("jobs run as root in their cell: only a root caller may submit or poll one here")
        label = job_label(job_id, scope)
        async with self._lock(label):
            record = self._record_for(job_id, label, scope, create=True)
            assert record is not None
            if not record.submitted:
                await self._submit(record, file_ids, python_version, scope)
            await self._refresh(record)
            return record

    async def _submit(self, record: JobRecord, file_ids: list[str], python_version: str, scope: str) -> None:
        """Stage ``file_ids``, pick the command, record the job as preparing. Refused, a job that was not
        recorded before leaves nothing behind (no record would ever expire its directory)."""
        if record.phase != QUEUED:
            raise FailedPrecondition(f"job {record.id!r} is {record.phase}")
        new = self.store.load(record.label) is None
        try:
            await self._stage_into(record, file_ids, scope)
            record.argv = self._command(record, python_version)
        except BaseException:
            if new:
                await asyncio.to_thread(shutil.rmtree, self.store.job_dir(record.label), True)
            raise
        record.python_version = python_version
        record.submitted = True
        record.phase = PREPARING
        self.store.save(record)
        log.info("job.submitted", job=record.id, label=record.label, argv=record.argv)

    async def get(self, job_id: str, scope: str | None = None) -> JobRecord:
        """The job, refreshed; ``scope`` None: any owner's (the operator's view: the host's job of
        that id, else the oldest of another scope's)."""
        validate_job_id(job_id)
        label = job_label(job_id, scope or "host")
        if scope is None and self.store.load(label) is None:
            label = next((r.label for r in self.store.all() if r.id == job_id), label)
        async with self._lock(label):
            record = self._record_for(job_id, label, scope, create=False)
            if record is None:
                raise JobNotFound(f"no job {job_id!r}")
            await self._refresh(record)
            return record

    async def all(self) -> list[JobRecord]:
        out = []
        for record in self.store.all():
            async with self._lock(record.label):
                fresh = self.store.load(record.label) or record
                with contextlib.suppress(cell_errors.CellError, OSError):
                    await self._refresh(fresh)
                out.append(fresh)
        return out

    def _record_for(self, job_id: str, label: str, scope: str | None, create: bool) -> JobRecord | None:
        record = self.store.load(label)
        if record is not None:
            if record.id != job_id or (scope is not None and record.owner != scope):
                # a 64-bit hash collision of (scope, id) pairs: say no more than that
                raise FailedPrecondition(f"job id {job_id!r} is unusable here: choose another")
            return record
        if not create or scope is None:
            return None
        return JobRecord(id=job_id, label=label, owner=scope, created_at_ns=self.clock())

    def _command(self, record: JobRecord, python_version: str) -> list[str]:
        if ENTRY_SH in record.staged:
            return ["/bin/sh", ENTRY_SH]
        if ENTRY_PY in record.staged:
            return [pick_interpreter(python_version), ENTRY_PY]
        raise FailedPrecondition(f"job {record.id!r} has no {ENTRY_SH} or {ENTRY_PY} staged")

    def owns(self, scope: str, cell: str) -> bool:
        """True when ``cell`` is the cell of a job ``scope`` owns (``jobs/<label>``)."""
        prefix = JOBS_CELL + "/"
        if not cell.startswith(prefix) or "/" in cell[len(prefix):]:
            return False
        with contextlib.suppress(OSError, ValueError, TypeError):
            record = self.store.load(cell[len(prefix):])
            return record is not None and record.owner == scope and record.cell == cell
        return False

    async def _publish(self, record: JobRecord) -> None:
        """Copy the done job's outputs to ``/parigot/app/jobs/<label>/`` in its owner's scope."""
        store = self._files()
        if store is None or record.published:
            return
        from agent.local.files.store import scope_dirname

        job_tree = os.path.join(store.root, scope_dirname(f"cell:{JOBS_CELL}/{record.label}"))
        try:
            copied = 0
            for part, source in (("work", self.store.work_dir(record.label)), ("files", job_tree)):
                copied += await store.run(store.import_tree, record.owner, [JOBS_CELL, record.label, part],
                                          source, MAX_STAGED_BYTES)
        except (OSError, ValueError) as exc:
            log.warning("job.outputs_failed", job=record.id, error=str(exc))
            return
        record.published = True
        self.store.save(record)
        log.info("job.outputs", job=record.id, owner=record.owner, files=copied)

    async def _refresh(self, record: JobRecord) -> None:
        """Bring ``record`` up to date with the supervisor; start preparing when nobody is."""
        if record.done and not record.published and record.cell:
            await self._publish(record)  # (after a crash between the exit and the copy)
            return
        if record.phase == PREPARING:
            task = self._tasks.get(record.label)
            if task is None or task.done():
                self._tasks[record.label] = asyncio.create_task(self._launch(record.label))
            return
        if record.phase != RUNNING:
            return
        try:
            info = await self.runtime.inspect(record.cell)
        except NotFound:
            record.phase, record.error = FAILED, "the job's cell disappeared"
            self.store.save(record)
            return
        exe = next((e for e in info.executables if e.name == record.executable), None)
        if exe is None or exe.state not in (ExecutableState.EXITED, ExecutableState.LOST):
            return
        if exe.exit is not None:
            record.exit_code, record.signal, record.oom_killed = exe.exit.code, exe.exit.signal, exe.exit.oom_killed
            record.ended_at_ns = exe.exit.ended_at_ns or time.time_ns()
        else:
            record.error, record.ended_at_ns = "exit status lost (supervisor restarted)", time.time_ns()
        record.phase = EXITED
        self.store.save(record)
        log.info("job.done", job=record.id, exit_code=record.exit_code, signal=record.signal)
        with contextlib.suppress(cell_errors.CellError, OSError):
            await self.runtime.free(record.cell, 0)
        await self._publish(record)  # the cell is gone: nothing writes to the work dir any more

    async def _require_contained(self, name: str, own_mounts: tuple[Mount, ...] = ()) -> None:
        """A job may land in a cell that exists already (its own, after a crash; or one somebody
        allocated under ``jobs/``, the job id naming it): never one an admin made privileged, granted a
        role, or gave capabilities or host paths: a workload that submits a job must not get them."""
        info = await self.runtime.inspect(name)
        own = [to_dict(m) for m in own_mounts]  # the job's work dir, mounted by us
        spec = {**info.spec, "mounts": [m for m in info.spec.get("mounts") or () if m not in own]}
        reasons = cell_admin_only(spec, os.path.join(self.state_dir, VOLUMES_SUBDIR))
        if reasons:
            log.warning("job.cell_refused", cell=name, reasons=reasons)
            raise FailedPrecondition(f"cell {name} exists with admin-only settings ({', '.join(reasons)}); "
                                     "jobs never run in such a cell")

    async def _launch(self, label: str) -> None:
        async with self._lock(label):
            record = self.store.load(label)
            if record is None or record.phase != PREPARING:
                return
            cell = f"{JOBS_CELL}/{label}"
            try:
                # The work dir lies in cellar's state dir, which contained workloads never see: it is
                # bound into the job's cell at its own path, the job's cwd.
                work = (Mount(self.store.work_dir(label), self.store.work_dir(label)),)
                for cell_spec in (CellSpec(name=JOBS_CELL), CellSpec(name=cell, isolate_process=True, mounts=work)):
                    try:
                        await self.runtime.allocate(cell_spec.validate())
                    except cell_errors.AlreadyExists:
                        await self._require_contained(cell_spec.name, cell_spec.mounts)
                spec = ExecutableSpec(
                    cell_name=cell, name=record.executable, argv=tuple(record.argv), cwd=self.store.work_dir(label),
                    env=(("CELLAR_JOB_ID", record.id), ("PATH", os.environ.get("PATH", "/usr/bin:/bin"))),
                    description=f"job {record.id}",
                ).validate()
                try:
                    info = await self.runtime.start(spec)
                    record.host_pid, record.started_at_ns = info.host_pid, info.started_at_ns or time.time_ns()
                except cell_errors.AlreadyExists:
                    pass  # started before a crash: adopt it
                record.cell, record.phase = cell, RUNNING
                log.info("job.started", job=record.id, cell=cell, pid=record.host_pid)
            except Exception as exc:  # the job fails, cellard does not
                record.phase, record.error, record.ended_at_ns = FAILED, f"launch failed: {exc}", time.time_ns()
                log.warning("job.launch_failed", job=record.id, error=str(exc))
            self.store.save(record)


def _size_of(path: str) -> int:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return 0


def _copy_into(src: str, work: str, name: str) -> None:
    """Copy ``src`` (never through a symlink) to ``work/name`` atomically."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp = os.path.join(work, f".{name}.staging")
    try:
        if os.fstat(fd).st_size > MAX_STAGED_BYTES:
            raise OSError(f"{src}: larger than {MAX_STAGED_BYTES} bytes")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            while chunk := os.read(fd, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, os.path.join(work, name))
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


__all__ = ["JobRunner", "JobNotFound", "NotYourJob", "pick_interpreter", "EXITED", "FAILED", "RUNNING", "PREPARING"]
