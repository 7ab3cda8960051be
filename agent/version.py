"""The installed cellar version, shared by cellard (served in health metadata) and the CLI."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("cellar")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0+unknown"
