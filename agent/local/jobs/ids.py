"""Names of jobs and files as the sky agent's clients spell them, and what cellar makes of them.

- A JobId is any client string (1-256 printable characters), chosen by the caller, so it names a job
  only within the caller's scope (``host``, ``cell:<name>``, ``user:<uid>``): two scopes using the
  same id get two jobs, and no scope can pre-empt (squat) an id another will use. Its **label** is a
  DNS label, because the job's cell is ``jobs/<label>`` and its directory ``<state_dir>/jobs/<label>``.
  The host's label is the id itself when it already is a valid label (a UUID stays itself) and does
  not end like a scoped label, otherwise a readable prefix plus ``-`` and 12 hex digits of a hash of
  the exact id (as before scopes existed, so the host's old jobs keep their labels). Every other
  scope's label is a readable prefix plus ``-`` and 16 hex digits of a hash of scope and id: the
  three forms never coincide, so two different (scope, id) pairs never share a label.
- A FileId names a file of the node's file store (files written through ``file.v1.File``): the
  128-bit IdRaw as 32 hex digits, ``high`` then ``low`` (``66...``: parigot's ``f`` letter leads),
  or the same digits in UUID form (8-4-4-4-12). Case does not matter.
"""

from __future__ import annotations

import hashlib
import re

from cells.errors import InvalidArgument

MAX_JOB_ID = 256
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_SCOPED = re.compile(r"-[0-9a-f]{16}$")  # how a non-host scope's label ends
HOST = "host"


def validate_job_id(job_id: str, field: str = "job.uuid") -> str:
    if not job_id:
        raise InvalidArgument(field, "must not be empty")
    if len(job_id) > MAX_JOB_ID:
        raise InvalidArgument(field, f"at most {MAX_JOB_ID} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in job_id):
        raise InvalidArgument(field, "must not contain control characters or NUL")
    return job_id


def job_label(job_id: str, scope: str = HOST) -> str:
    """A DNS label unique to (``scope``, ``job_id``) (see the module docstring)."""
    if scope == HOST:
        if _LABEL.match(job_id) and not _SCOPED.search(job_id):
            return job_id
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    else:
        digest = hashlib.sha256(f"{scope}\0{job_id}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")[:40].strip("-")
    return f"{readable}-{digest}" if readable else f"job-{digest}"


def parse_file_id(text: str, field: str = "files.uuid") -> tuple[int, int]:
    """(high, low) of a FileId string; InvalidArgument when it is not 128 bits of hex."""
    digits = text.strip().lower().replace("-", "") if len(text) <= 64 else ""
    if not _HEX32.match(digits) or (text.count("-") not in (0, 4)):
        raise InvalidArgument(field, f"expected 32 hex digits (or a UUID), got {text[:64]!r}")
    return int(digits[:16], 16), int(digits[16:], 16)


def format_file_id(high: int, low: int) -> str:
    """The FileId string of IdRaw (high, low)."""
    return f"{high:016x}{low:016x}"
