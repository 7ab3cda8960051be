"""The installed cellar version, as the supervisor reports it (``info``): read from the package's
metadata, the one source the daemon and the CLI read too."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("cellar")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0+unknown"
