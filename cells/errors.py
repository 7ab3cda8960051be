"""Domain errors of the cells runtime.

The agent maps each class to one gRPC status in a single place; nothing here knows about gRPC.
Messages are meant for the operator: they name the field and the rule that was broken.
"""

from observe import kinds


class CellError(Exception):
    """Base of every error the runtime reports to a caller."""


class InvalidArgument(CellError, kinds.Invalid):
    """Malformed input. `field` names the offending field, the message states the rule."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(CellError, kinds.NotFound):
    """The named cell or executable does not exist."""


class AlreadyExists(CellError, kinds.AlreadyExists):
    """A cell or running executable with that name exists already."""


class FailedPrecondition(CellError, kinds.Precondition):
    """The request conflicts with the current state (children present, frozen, unsupported here)."""


class ResourceExhausted(CellError, kinds.Exhausted):
    """A configured bound was reached (number of cells, executables)."""


class RuntimeFailure(CellError, kinds.Failure):
    """The kernel refused an operation that should have worked: a real bug or a broken host."""


class ExecTimeout(RuntimeFailure):
    """A spawned child did not reach exec in time and was killed: a starving cell limit or a hung mount."""


class SupervisorUnavailable(kinds.Unavailable, RuntimeFailure):
    """The supervisor's socket does not answer (it died; cellard's health probe starts a successor)."""
