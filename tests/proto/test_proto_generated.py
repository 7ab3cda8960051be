"""The committed generated code under proto/ is exactly what ``python -m agent.protogen`` produces.

Generated modules are committed so cellard runs without a compiler; this test makes sure nobody edits
them by hand or forgets to regenerate after changing a ``.proto``.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import REPO as REPO_ROOT

if str(REPO_ROOT) not in sys.path:  # until pyproject sets pytest's `pythonpath = ["."]`
    sys.path.insert(0, str(REPO_ROOT))

SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


@pytest.fixture(scope="module")
def protogen() -> ModuleType:
    return importlib.import_module("agent.protogen")


@pytest.fixture(scope="module")
def fresh(protogen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A regeneration of every proto into an empty directory."""
    out = tmp_path_factory.mktemp("protogen")
    protogen.generate(out)
    return out


def _generated(root: Path) -> dict[Path, bytes]:
    top = root / "proto"
    return {
        path.relative_to(root): path.read_bytes()
        for path in sorted(top.rglob("*"))
        if path.is_file() and (path.name.endswith(SUFFIXES) or path.name == "__init__.py")
    }


def test_every_proto_has_its_three_modules() -> None:
    sources = sorted((REPO_ROOT / "proto").rglob("*.proto"))
    assert len(sources) >= 19, "proto sources went missing"
    for source in sources:
        stem = source.with_suffix("")
        for suffix in SUFFIXES:
            assert Path(f"{stem}{suffix}").is_file(), f"{source.relative_to(REPO_ROOT)}: no {suffix}"


def test_regeneration_is_byte_identical(fresh: Path) -> None:
    expected = _generated(fresh)
    committed = _generated(REPO_ROOT)
    assert len(expected) >= 19 * len(SUFFIXES), "protoc produced too little output"
    assert sorted(committed) == sorted(expected), "generated file set differs: run python -m agent.protogen"
    stale = [str(rel) for rel, data in expected.items() if committed[rel] != data]
    assert not stale, f"out of date, run python -m agent.protogen: {stale}"


def test_package_markers_are_empty() -> None:
    """Every folder of generated modules is a regular package (proto/ too), with nothing hand-written."""
    inits = sorted((REPO_ROOT / "proto").rglob("__init__.py"))
    assert REPO_ROOT / "proto" / "__init__.py" in inits
    for init in inits:
        assert init.read_bytes() == b"", f"{init} must stay empty"
    for module in (REPO_ROOT / "proto").rglob("*_pb2.py"):
        folder = module.parent
        while folder != REPO_ROOT:
            assert (folder / "__init__.py").is_file(), f"{folder} lacks __init__.py"
            folder = folder.parent


_IMPORT = re.compile(r"^(?:from (\S+) import|import (\S+))", re.M)


def test_generated_imports_stay_under_proto() -> None:
    """The seed packages `runtime`/`observe` must never be imported as top-level modules."""
    allowed = (
        "proto.",
        "google.protobuf",
        "grpc",
        "warnings",
        "builtins",
        "typing",
        "collections.abc",
        "datetime",
    )
    for path in (REPO_ROOT / "proto").rglob("*_pb2*.py*"):
        if path.suffix not in (".py", ".pyi"):  # __pycache__/*.pyc
            continue
        for match in _IMPORT.finditer(path.read_text(encoding="utf-8")):
            name = match.group(1) or match.group(2)
            assert name.startswith(allowed), f"{path.relative_to(REPO_ROOT)} imports {name}"


def test_modules_import_from_this_repo() -> None:
    """`proto` resolves to this repo, not PyPI proto-plus's top-level `proto` package."""
    proto = importlib.import_module("proto")
    assert Path(proto.__file__ or "").resolve() == REPO_ROOT / "proto" / "__init__.py"
    for path in sorted((REPO_ROOT / "proto").rglob("*_pb2*.py")):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        assert importlib.import_module(name).__name__ == name


def test_check_reports_edits_and_stale_modules(protogen: ModuleType, tmp_path: Path) -> None:
    """`--check` notices a hand edit, a missing module and a module whose source is gone."""
    shutil.copytree(REPO_ROOT / "proto", tmp_path / "proto", ignore=shutil.ignore_patterns("__pycache__"))
    assert protogen.differences(tmp_path) == []
    edited = Path("proto/aurae/runtime_pb2.py")
    (tmp_path / edited).write_bytes((tmp_path / edited).read_bytes() + b"# edited\n")
    missing = Path("proto/pb/common_pb2.pyi")
    (tmp_path / missing).unlink()
    stale = Path("proto/aurae/gone_pb2.py")
    (tmp_path / stale).write_bytes(b"")
    assert protogen.differences(tmp_path) == [f"differs: {edited}", f"missing: {missing}", f"stale: {stale}"]


def test_check_command_passes_on_the_committed_tree() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.protogen", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
