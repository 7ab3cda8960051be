"""``cellar queue rm`` deletes a queue, and ``cellar fl download`` of an unknown model says "not
found", keeping the seed RPC's status (UNAVAILABLE, as the Scaleout combiner answers) (issue 16). Real daemon, real CLI process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.cli import cellar

pytestmark = pytest.mark.root


def test_queue_rm_deletes_a_queue(api: Api) -> None:
    cellar(api, "queue", "create", "doomed")
    cellar(api, "queue", "send", "doomed", "one")
    assert "doomed" in {q["name"] for q in json.loads(cellar(api, "-o", "json", "queue", "ls").stdout)}
    removed = json.loads(cellar(api, "queue", "rm", "doomed", "-o", "json").stdout)
    assert removed["deleted"] == "doomed" and len(removed["id"]) == 32
    assert "doomed" not in {q["name"] for q in json.loads(cellar(api, "-o", "json", "queue", "ls").stdout)}
    again = cellar(api, "queue", "rm", "doomed", ok=False)
    assert again.returncode == 1 and again.stderr.startswith("cellar: NOT_FOUND: "), again.stderr
    assert again.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def fl_daemon() -> Iterator[Any]:
    from tests.agent.scaleout.harness import start_daemon, stop_daemon

    daemon = start_daemon()
    yield daemon
    stop_daemon(daemon)


def test_fl_download_of_an_unknown_model_says_not_found(fl_daemon: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    proc = cellar(fl_daemon, "fl", "download", "no-such-model", str(path), ok=False)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line == "cellar: UNAVAILABLE: model no-such-model: not found (not in the model store; " \
                   "`cellar fl models` lists it)", line
    assert not path.exists() and not (tmp_path / "model.bin.part").exists()
