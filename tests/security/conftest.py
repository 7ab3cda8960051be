"""Fixtures shared by the attack suite; a module that needs another cellard defines its own ``daemon``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.api import Api, api_session
from tests.support.cellard import StartCellard


@pytest.fixture
def daemon(cellard_factory: StartCellard) -> Any:
    """A cellard for attacks by unprivileged users: base 0755, so they reach <run_dir>/local.sock as on
    a real node; no local TCP listener."""
    return cellard_factory({"local": {"tcp_listen": ""}}, base_mode=0o755)


@pytest.fixture
def api(daemon: Any) -> Iterator[Api]:
    with api_session(daemon) as client:
        yield client
