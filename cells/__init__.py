"""cells: the kernel-facing runtime.

Owns cells and executables: the request types and their validation (``spec``), cgroup backends
(v2, and v1 limits on hybrid hosts), namespaces and named netns, the spawn path and workload
containment (capabilities, seccomp, mount views), the supervisor process that parents every
workload and its client/protocol, cell state and its store, and the per-cell metrics collector.

May import: the standard library, its third-party libraries (pyroute2, pyseccomp, structlog,
prometheus_client) and ``observe`` (the log store it writes, the daemon log bus, the shared names).
Never ``agent``, ``proto`` or ``grpc``: the gRPC status mapping happens once, in ``agent``.
import-linter contracts in pyproject.toml check this.
"""
