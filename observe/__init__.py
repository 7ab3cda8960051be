"""observe: logs, the daemon log bus, machine inventory, and the names cellar puts on disk.

Owns the log store (layout, segment records, the writer, readers, tail/since/follow and fan-out),
the daemon log bus and the one structlog setup of every cellar process (``daemonlog``), the machine
inventory (links and addresses, sock_diag listeners, socket owners) and the naming rules of cells,
executables, their leaves and netns (``names``).

May import: the standard library and its third-party libraries (pyroute2, structlog). Never
``cells`` (``cells`` imports ``observe``, one way), ``agent``, ``proto`` or ``grpc``.
import-linter contracts in pyproject.toml check this.
"""
