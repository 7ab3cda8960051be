"""The node's desired state: what ``cellar apply`` (or an Allocate with ``persist``) asked for, on disk.

One JSON file per cell under ``<state_dir>/desired/`` (``team/web`` -> ``team.web.json``: a name is
DNS labels joined by ``/``, so ``.`` never occurs in one and the mapping is one to one), written
atomically (temp file, fsync, rename, directory fsync), so a crash leaves the old or the new record.
It holds the cell's spec and the executables that were applied (or started with a restart policy in
a persistent cell): apply compares a file with it, so the same file twice changes nothing, and
cellard's start recreates what a reboot took away (:func:`agent.runtime.apply.restore`).

The supervisor's store (cells/store.py) is the runtime's memory of what *is*; this is the operator's
word for what *should be*. They differ after a reboot (the runtime's cells are gone), and for cells
started imperatively (never recorded here).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import structlog

from cells.errors import CellError
from cells.protocol import cell_spec_from_dict, executable_spec_from_dict
from cells.spec import CellSpec, ExecutableSpec
from cells.state import to_dict

log = structlog.get_logger("agent.desired")

SUFFIX = ".json"


@dataclass
class DesiredCell:
    """A cell as the operator wants it: ``applied`` when it came from ``cellar apply`` (prune may remove
    it), otherwise only allocated with ``persist``."""

    spec: CellSpec
    executables: dict[str, ExecutableSpec] = field(default_factory=dict)
    applied: bool = True

    def to_json(self) -> bytes:
        return json.dumps({"spec": to_dict(self.spec), "applied": self.applied,
                           "executables": [to_dict(e) for e in self.executables.values()]},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DesiredCell:
        record: dict[str, Any] = json.loads(data)
        spec = cell_spec_from_dict(record["spec"]).validate()
        exes = [executable_spec_from_dict(e).validate() for e in record.get("executables", [])]
        return cls(spec, {e.name: e for e in exes}, bool(record.get("applied", True)))


class DesiredStore:
    """The desired cells by name. Not thread-safe: used from cellard's event loop only."""

    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, "desired")

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name.replace("/", ".") + SUFFIX)

    def get(self, name: str) -> DesiredCell | None:
        try:
            with open(self._path(name), "rb") as fh:
                return DesiredCell.from_json(fh.read())
        except FileNotFoundError:
            return None

    def all(self) -> list[DesiredCell]:
        """Every record, parents first; an unreadable one is skipped and logged."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        out = []
        for entry in names:
            if not entry.endswith(SUFFIX):
                continue
            try:
                with open(os.path.join(self.directory, entry), "rb") as fh:
                    out.append(DesiredCell.from_json(fh.read()))
            except (OSError, ValueError, KeyError, TypeError, CellError) as exc:
                log.error("desired.bad_record", file=entry, error=str(exc))
        out.sort(key=lambda c: tuple(c.spec.name.split("/")))
        return out

    def put(self, cell: DesiredCell) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = self._path(cell.spec.name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(cell.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._sync_dir()

    def delete(self, name: str) -> None:
        """Forget ``name`` and every cell under it (a freed cell takes its children with it)."""
        for cell in self.all():
            if cell.spec.name == name or cell.spec.name.startswith(name + "/"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(cell.spec.name))
        self._sync_dir()

    def _sync_dir(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
