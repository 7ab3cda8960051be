"""Job records, one JSON file per job: ``<state_dir>/jobs/<label>/job.json`` (work files in ``work/``).

Written atomically (temp file, fsync, rename, fsync of the directory), so a cellard killed at any
point leaves either the old or the new record, and a restarted cellard keeps answering polls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

#: Phases; the seed's ResponseCode is derived: queued/preparing -> WAIT, running -> RUN, rest -> DONE.
QUEUED, PREPARING, RUNNING, EXITED, FAILED = "queued", "preparing", "running", "exited", "failed"
PHASES = (QUEUED, PREPARING, RUNNING, EXITED, FAILED)


@dataclass
class JobRecord:
    id: str
    label: str
    owner: str = "host"  # the file-store scope of the submitter: it alone stages into and polls the job
    phase: str = QUEUED
    submitted: bool = False  # RunJob was called (StageInFiles alone makes a record too)
    staged: dict[str, str] = field(default_factory=dict)  # file name in work/ -> FileId string
    python_version: str = ""
    argv: list[str] = field(default_factory=list)
    cell: str = ""
    executable: str = "job"
    host_pid: int = 0
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    error: str = ""
    created_at_ns: int = 0
    started_at_ns: int = 0
    ended_at_ns: int = 0
    published: bool = False  # outputs copied to the owner's file-store scope (agent.local.jobs.runner)

    @property
    def done(self) -> bool:
        return self.phase in (EXITED, FAILED)


class JobStore:
    def __init__(self, root: str) -> None:
        self.root = root  # <state_dir>/jobs

    def job_dir(self, label: str) -> str:
        return os.path.join(self.root, label)

    def work_dir(self, label: str) -> str:
        return os.path.join(self.root, label, "work")

    def load(self, label: str) -> JobRecord | None:
        try:
            with open(os.path.join(self.job_dir(label), "job.json"), "rb") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        known = {f.name for f in dataclasses.fields(JobRecord)}
        return JobRecord(**{k: v for k, v in data.items() if k in known})

    def save(self, record: JobRecord) -> None:
        directory = self.job_dir(record.label)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, "job.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(dataclasses.asdict(record), fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(directory, "job.json"))
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def all(self) -> list[JobRecord]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for label in sorted(os.listdir(self.root)):
                with contextlib.suppress(ValueError, TypeError, OSError):
                    record = self.load(label)
                    if record is not None:
                        out.append(record)
        return sorted(out, key=lambda r: (r.created_at_ns, r.label))


def to_dict(record: JobRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)
