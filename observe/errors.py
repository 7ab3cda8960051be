"""Domain errors of the log store and the daemon log.

Like ``cells.errors``, nothing here knows about gRPC: the agent maps each class to a status once.
I/O trouble on the write path (disk full, EIO) is *not* an exception: the writer drops and counts
lines instead, because a log store must never take the workload down with it.
"""

from observe import kinds


class LogError(Exception):
    """Base of every error the log store reports to a caller."""


class InvalidCursor(LogError, kinds.Invalid, ValueError):
    """A resume cursor a client sent back is not one we issued (malformed, out of range)."""


class InvalidName(LogError, kinds.Invalid, ValueError):
    """A cell or executable name that would not be a safe path segment under the log root."""


class WriterBusy(LogError):
    """Another live writer holds the run directory (two supervisors for one run)."""


class RunFinished(LogError):
    """Lines were appended after the run's EXIT record: a bug in the caller, never silently accepted."""
