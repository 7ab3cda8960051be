"""A workload's own words (its argv) cannot forge what the operator reads: a newline or a terminal escape
in an argv is escaped in ``ps`` and ``cell inspect`` (no fake row, no cursor move), and kept exact in ``-o json``."""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.support.cli import cellar, cellar_json, table_rows

pytestmark = pytest.mark.root

FORGED = "x\nevil  fake   Up 9 years  1  1  0  now  rm -rf /\x1b[2J\x1b]0;owned\x07"


def test_an_argv_cannot_draw_a_row_or_drive_the_terminal(api: Api) -> None:
    api.allocate("forge")
    api.start("forge", "liar", "sh", "-c", "exec sleep 3600", FORGED)
    ps = cellar(api, "ps", "forge").stdout
    inspect = cellar(api, "cell", "inspect", "forge").stdout
    for text in (ps, inspect):
        assert "\x1b" not in text and "\x07" not in text, text
        assert "\\n" in text and "\\x1b[2J" in text, text
    (row,) = table_rows(ps)  # one executable, one row
    assert row["name"] == "liar" and row["command"].startswith("sh -c 'exec sleep 3600' "), row
    assert not any(line.startswith("evil") for line in inspect.splitlines()), inspect
    (raw,) = cellar_json(api, "ps", "forge")
    assert raw["argv"] == ["sh", "-c", "exec sleep 3600", FORGED]  # scripts get the exact bytes
