"""The cell record store on the real filesystem: one file per cell, a crash at any point between the
steps of a save leaves exactly one record (the old or the new) after the next load."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cells.store import RECORD_VERSION, Store, encode


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_saves_replace_the_record_and_leave_one_file(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    for i in range(5):
        store.save("web/api", {"cell": {"name": "web/api", "i": i}})
    assert files(tmp_path) == ["web.api@5.json"]
    assert Store(str(tmp_path)).load_all() == [{"version": RECORD_VERSION, "cell": {"name": "web/api", "i": 4}}]


def test_delete_removes_the_file_and_a_reused_name_starts_again(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.save("a", {"cell": {"n": 1}})
    store.save("a", {"cell": {"n": 2}})
    store.delete("a")
    store.delete("a")  # idempotent
    assert files(tmp_path) == []
    store.save("a", {"cell": {"n": 3}})
    assert [r["cell"] for r in Store(str(tmp_path)).load_all()] == [{"n": 3}]


def test_a_crash_between_rename_and_unlink_keeps_the_newest(tmp_path: Path) -> None:
    """Both generations on disk (the unlink never ran) plus a temp file of a later interrupted save."""
    (tmp_path / "db@3.json").write_text(json.dumps({"version": RECORD_VERSION, "cell": {"n": 3}}))
    (tmp_path / "db@4.json").write_text(json.dumps({"version": RECORD_VERSION, "cell": {"n": 4}}))
    (tmp_path / ".db.tmp").write_text('{"version": 1, "cel')
    store = Store(str(tmp_path))
    assert [r["cell"] for r in store.load_all()] == [{"n": 4}]
    assert files(tmp_path) == ["db@4.json"]
    store.save("db", {"cell": {"n": 5}})  # continues after the loaded generation, never reuses it
    assert files(tmp_path) == ["db@5.json"]


def test_a_record_of_the_earlier_layout_loads_and_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"version": RECORD_VERSION, "cell": {"n": 0}}))
    store = Store(str(tmp_path))
    assert [r["cell"] for r in store.load_all()] == [{"n": 0}]
    store.save("old", {"cell": {"n": 1}})
    assert files(tmp_path) == ["old@1.json"]


def test_unreadable_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "bad@1.json").write_text("{not json")
    (tmp_path / "future@1.json").write_text(json.dumps({"version": 99}))
    (tmp_path / "notes.txt").write_text("operator's file")
    (tmp_path / "x@y.json").write_text("{}")
    assert Store(str(tmp_path)).load_all() == []
    assert "notes.txt" in files(tmp_path)


def test_save_cell_with_encoded_executables_equals_save(tmp_path: Path) -> None:
    exes = [{"name": "a", "exit": {"code": 0}}, {"name": "b", "exit": None}]
    one, two = Store(str(tmp_path / "one")), Store(str(tmp_path / "two"))
    one.save("web", {"cell": {"name": "web", "executables": exes}})
    two.save_cell("web", {"name": "web"}, [encode(e) for e in exes])
    assert (tmp_path / "one/web@1.json").read_bytes() == (tmp_path / "two/web@1.json").read_bytes()
    two.save_cell("web", {"name": "web"}, [])
    assert Store(str(tmp_path / "two")).load_all() == [
        {"version": RECORD_VERSION, "cell": {"name": "web", "executables": []}}]
