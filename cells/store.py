"""Persisted cell state: one JSON file per cell, replaced atomically.

The supervisor may be SIGKILLed at any instant; a restarted one must find either the old or the new
record, never a torn one. So every save is write-to-temp + rename. There is deliberately no fsync:
what a record describes (cgroups, namespaces, processes) dies with the machine, and the page cache
survives any process death, so fsync would buy nothing but 1.5-9 ms on every Start and Stop.
After a reboot, reconcile drops the records whose cgroups are gone.
Cell names are '/'-separated DNS labels, which never contain '.', so '/' -> '.' is a safe, unique
file name.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import structlog

log = structlog.get_logger("cells.store")

RECORD_VERSION = 1


def _file_name(cell: str) -> str:
    return cell.replace("/", ".") + ".json"


class Store:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def save(self, cell: str, record: dict[str, Any]) -> None:
        """Atomically replace the record of ``cell`` (see the module docstring on durability)."""
        data = json.dumps({"version": RECORD_VERSION, **record}, separators=(",", ":")).encode()
        name = _file_name(cell)
        tmp = f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def delete(self, cell: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_file_name(cell), dir_fd=self._dir_fd)

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable record; unreadable ones (never torn, but maybe hand-edited) are logged and skipped."""
        records = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.startswith("."):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a temp file of an interrupted save
                continue
            if not name.endswith(".json"):
                continue
            try:
                with open(path, "rb") as f:
                    record = json.loads(f.read())
                if record.get("version") != RECORD_VERSION:
                    raise ValueError(f"unknown record version {record.get('version')!r}")
                records.append(record)
            except (OSError, ValueError) as exc:
                log.error("store.unreadable", path=path, error=str(exc))
        return records
