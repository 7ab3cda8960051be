"""The real ``cellar`` CLI against a test daemon, as an operator runs it: a process, exit code, stdout, stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from tests.support import REPO
from tests.support.timeouts import scaled

#: The installed console script when the venv is in the repository (what users run), else the module.
CELLAR = [str(REPO / ".venv" / "bin" / "cellar")] if (REPO / ".venv" / "bin" / "cellar").exists() else \
    [sys.executable, "-m", "agent.cli"]


def cli_env() -> dict[str, str]:
    """No CELLAR_* settings and no user config file from the environment running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLAR_")}
    env["HOME"] = "/nonexistent-cellar-home"
    env["PYTHONPATH"] = str(REPO)
    return env


def cellar(target: Any, *args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cellar --addr <main socket> ARGS``; ``target`` is a daemon or anything with one (an ``Api``).
    With ``ok`` the exit code must be 0."""
    daemon = getattr(target, "daemon", target)
    proc = subprocess.run([*CELLAR, "--addr", daemon.socket, *args], capture_output=True, text=True,
                          timeout=scaled(timeout), env=cli_env(), cwd=REPO, stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def cellar_json(target: Any, *args: str) -> Any:
    return json.loads(cellar(target, "-o", "json", *args).stdout)


def ps_json(target: Any, *args: str) -> list[dict[str, Any]]:
    """``cellar -o json ps ARGS``."""
    return cellar_json(target, "ps", *args)  # type: ignore[no-any-return]


def table_rows(text: str) -> list[dict[str, str]]:
    """A ``cellar`` table as dicts by header (lower case), cut at the header's column starts, so that
    values with spaces ("Up 5 minutes") stay whole."""
    header, *lines = text.splitlines()
    names = header.split()
    starts: list[int] = []
    for name in names:
        starts.append(header.index(name, starts[-1] + 1 if starts else 0))
    bounds = [*starts[1:], None]
    return [{n.lower(): line[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)} for line in lines]


#: The JSON schema of each command's ``-o json`` objects (tests/agent/cli/golden/<name>.json: key -> types).
GOLDEN = REPO / "tests" / "agent" / "cli" / "golden"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
#: Keys that hold a time in every schema: RFC 3339 with a zone, or null.
TIME_KEYS = {"time", "started", "ended", "restart_at", "timestamp"}
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
               dict: "object"}


def check_schema(name: str, objects: list[dict[str, Any]]) -> None:
    """Every object has exactly the golden keys of ``name``, each of one of its golden types ("integer|null");
    times are RFC 3339 with a zone; "none" is null, never "-"."""
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert objects, name
    for obj in objects:
        assert sorted(obj) == sorted(golden), (name, sorted(set(obj) ^ set(golden)))
        for key, value in obj.items():
            assert _JSON_TYPES[type(value)] in golden[key].split("|"), (name, key, value)
            assert value != "-", (name, key)
            if key in TIME_KEYS and value is not None:
                assert RFC3339.match(value), (name, key, value)
