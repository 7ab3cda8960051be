"""The kinds of domain error: what went wrong, as every layer and every API family says it.

Each package's own errors subclass one kind (``cells.errors.NotFound(CellError, kinds.NotFound)``);
the agent maps kinds, and only kinds, to gRPC status codes (:mod:`agent.core.status`), so a new
feature error needs no entry there. Here, in the lowest layer, because ``cells`` and the agent both
build on ``observe`` and nothing here may import them.
"""


class DomainError(Exception):
    """Base of every kind."""


class Invalid(DomainError):
    """Malformed input: the message names the field and the rule (INVALID_ARGUMENT)."""


class NotFound(DomainError):
    """The named thing does not exist, or not for this caller (NOT_FOUND)."""


class AlreadyExists(DomainError):
    """A thing with that name exists already (ALREADY_EXISTS)."""


class Precondition(DomainError):
    """The request conflicts with the current state (FAILED_PRECONDITION)."""


class Denied(DomainError):
    """A known caller may not do this (PERMISSION_DENIED)."""


class Exhausted(DomainError):
    """A configured bound was reached (RESOURCE_EXHAUSTED)."""


class Unavailable(DomainError):
    """A dependency does not answer now; retrying may work (UNAVAILABLE)."""


class Failure(DomainError):
    """Something that should have worked did not: a bug or a broken host (INTERNAL, logged)."""
