"""The gRPC metadata keys cellar adds on top of the seed APIs, shared by cellard and its clients.

A light module (no imports) so that the CLI can read them without loading server code.
"""

from __future__ import annotations

#: Initial metadata of Health/Check replies: lets ``cellar version`` learn the server's version.
VERSION_METADATA_KEY = "cellar-version"
#: Initial metadata of GetAuraeDaemonLogStream: how many of the first items are history.
HISTORY_METADATA_KEY = "cellar-history-events"
#: Request metadata with which an admin on the main listeners acts on a cell's scope (``cell:<name>``);
#: the forwarder never relays it as the client sent it.
SCOPE_METADATA_KEY = "cellar-scope"
