"""psycopg is the ``cellar[postgres]`` extra: without it a PostgreSQL DSN fails with one line naming the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.pb.saver.store import StoreError, open_store


def test_a_postgresql_dsn_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees
    monkeypatch.delitem(sys.modules, "agent.pb.saver.postgres_store", raising=False)
    with pytest.raises(StoreError, match=r"pip install 'cellar\[postgres\]'"):
        open_store("postgresql://saver@db/saver")
    store = open_store(str(tmp_path / "saver.sqlite"))  # SQLite needs nothing more
    store.close()


def test_the_saver_cli_says_so_too(tmp_path) -> None:
    """cellar-saver --database postgresql://... on an install without psycopg: exit 1, one line."""
    code = ("import sys; sys.modules['psycopg'] = None; from agent.pb.saver.main import main; "
            "main(['--insecure', '--listen', '127.0.0.1:0', '--database', 'postgresql://saver@127.0.0.1:1/x'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert "cellar[postgres]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_psycopg_is_an_extra_and_dev_installs_it() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("psycopg") for d in project["dependencies"])
    assert not any(d.startswith("cgroupspy") for d in project["dependencies"])  # never imported: dropped
    assert any(d.startswith("psycopg[binary]==") for d in project["optional-dependencies"]["postgres"])
    assert any(d.startswith("psycopg[binary]==") for d in project["optional-dependencies"]["dev"])
