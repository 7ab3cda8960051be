"""``cellar apply``, ``cellar diff`` and ``cellar get`` as an operator types them, against a REAL cellard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent.cli.test_cells_cli import cellar
from tests.support.api import Api

pytestmark = pytest.mark.root

FILE = """\
[cells.app]
limits = { memory_max = "64Mi" }

[cells.app.executables.web]
argv = ["sleep", "3600"]
restart = { mode = "always", delay_s = 1 }
"""


def test_apply_then_diff_then_get(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(FILE)
    diff = cellar(api, "diff", "-f", str(path), ok=False)
    assert diff.returncode == 1, diff
    assert diff.stdout.splitlines() == ["+ cell app (create)", "+ executable app/web (start)"]
    out = cellar(api, "apply", "-f", str(path))
    assert out.stdout.splitlines() == ["cell app created", "executable app/web started"]
    again = cellar(api, "apply", "-f", str(path))
    assert again.stdout.strip() == f"no changes: the node matches {path}"
    assert cellar(api, "diff", "-f", str(path), ok=False).returncode == 0

    path.write_text(FILE.replace("64Mi", "96Mi"))
    diff = cellar(api, "diff", "-f", str(path), ok=False)
    assert (diff.returncode, diff.stdout.strip()) == (
        1, "~ cell app (update): limits.memory_max: 67108864 -> 100663296")
    changes = json.loads(cellar(api, "-o", "json", "apply", "-f", str(path)).stdout)
    assert changes == [{"action": "update", "cell": "app", "executable": "",
                        "detail": "limits.memory_max: 67108864 -> 100663296"}]

    got = cellar(api, "get", "app", "-o", "toml").stdout
    (tmp_path / "got.toml").write_text(got)
    assert cellar(api, "diff", "-f", str(tmp_path / "got.toml"), ok=False).returncode == 0, got
    as_json = json.loads(cellar(api, "-o", "json", "get", "app").stdout)
    assert as_json["applied"] is True and as_json["cells"]["app"]["limits"] == {"memory_max": 100663296}


def test_a_malformed_file_fails_before_anything_is_sent(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(FILE.replace('argv = ["sleep", "3600"]', 'argv = "sleep 3600"'))
    out = cellar(api, "apply", "-f", str(path), ok=False)
    assert out.returncode == 1
    assert out.stderr.strip() == f"cellar: {path}:5: cells.app.executables.web.argv: must be a list of strings"
    assert cellar(api, "diff", "-f", str(path), ok=False).returncode == 2
    assert cellar(api, "apply", "-f", str(tmp_path / "missing.toml"), ok=False).returncode == 2
    assert api.list() == []
