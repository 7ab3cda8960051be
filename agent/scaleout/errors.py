"""Domain errors of the node-local Scaleout combiner and model store.

Mapped to gRPC status codes once, in :data:`agent.core.status.STATUS_FOR`. Messages name the field and the
rule, for the operator and the client's log.
"""

from observe import kinds


class ScaleoutError(Exception):
    """Base of every error the combiner or the model store reports to a caller."""


class InvalidArgument(ScaleoutError, kinds.Invalid):
    """Malformed input (a bad id, JSON that does not parse, a missing required field)."""


class PermissionDenied(ScaleoutError, kinds.Denied):
    """A client id claimed by another caller (scope or certificate identity)."""


class NotFound(ScaleoutError, kinds.NotFound):
    """No such client, task or model."""


class FailedPrecondition(ScaleoutError, kinds.Precondition):
    """The request conflicts with the current state (a model still arriving, a finished task)."""


class ResourceExhausted(ScaleoutError, kinds.Exhausted):
    """A configured bound was reached (the model store's size cap)."""


class ModelUnavailable(ScaleoutError, kinds.Unavailable):
    """Download of an empty or unknown model id: UNAVAILABLE, as the Scaleout combiner answers."""


class MissingModelId(ScaleoutError, kinds.Precondition):
    """Upload without ``model-id`` metadata: FAILED_PRECONDITION, as the Scaleout combiner answers."""


class UploadRejected(ScaleoutError):
    """An upload the store refuses in the reply body (``ModelStatus.FAILED``): duplicate id, bad checksum."""
