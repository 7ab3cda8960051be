"""Regenerate the Python modules of every ``proto/**/*.proto``.

The generated code is committed, so cellard needs no compiler at run time and a reviewer sees every
wire change as a diff; ``--check`` (and ``tests/proto/test_proto_generated.py``) proves the committed code is
what the sources produce. protoc runs with the repo root as include path, so every module lives under
the Python package ``proto.`` (``proto.aurae.runtime_pb2``) and the seed packages ``runtime`` and
``observe`` never become top-level modules that would shadow cellar's own ``observe/``.

Usage::

    python -m agent.protogen            # regenerate in place, print what changed
    python -m agent.protogen --check    # regenerate into a temp dir, exit 1 listing differences
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The include path root: ``import "proto/aurae/runtime.proto";`` resolves against it."""

PROTO_PACKAGE = "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


class ProtocError(RuntimeError):
    """protoc rejected the sources (its diagnostics went to stderr)."""


def proto_sources(root: Path = REPO_ROOT) -> list[Path]:
    """Every ``.proto`` under ``root/proto``, sorted so the protoc command line is stable."""
    return sorted((root / PROTO_PACKAGE).rglob("*.proto"))


def _is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def _package_inits(root: Path, modules: Iterable[Path]) -> set[Path]:
    """``__init__.py`` for each folder holding modules and each folder between it and ``root/proto``.

    Regular packages (not namespace packages) keep ``proto`` from merging with any other top-level
    ``proto`` on sys.path, such as the one PyPI's proto-plus installs.
    """
    top = root / PROTO_PACKAGE
    inits: set[Path] = set()
    for module in modules:
        folder = module.parent
        while folder == top or top in folder.parents:
            inits.add(folder / "__init__.py")
            folder = folder.parent
    return inits


def _well_known_include() -> str:
    """grpc_tools' bundled ``google/protobuf/*.proto``, so no system protoc include dir is needed."""
    return str(resources.files("grpc_tools") / "_proto")


def generate(out_dir: Path, root: Path = REPO_ROOT) -> list[Path]:
    """Compile every proto of ``root`` into ``out_dir``; return the written files relative to it.

    One protoc run over all sources: protoc's output depends only on the sources and the
    grpcio-tools version, so the result is byte-for-byte reproducible.
    """
    from grpc_tools import protoc  # dev dependency: only needed when regenerating

    sources = proto_sources(root)
    if not sources:
        raise ProtocError(f"no .proto files under {root / PROTO_PACKAGE}")
    out = str(out_dir)
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{_well_known_include()}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *(str(source) for source in sources),
    ]
    if protoc.main(args) != 0:
        raise ProtocError("protoc failed: " + " ".join(args))
    modules = [path for path in out_dir.rglob("*") if path.is_file() and _is_generated(path)]
    for init in _package_inits(out_dir, modules):
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_bytes(b"")
    written = [path for path in out_dir.rglob("*") if _is_generated(path) or path.name == "__init__.py"]
    return sorted(path.relative_to(out_dir) for path in written)


def committed_files(root: Path = REPO_ROOT) -> list[Path]:
    """The generated modules and package markers currently in ``root/proto``, relative to ``root``."""
    top = root / PROTO_PACKAGE
    found = [
        path
        for path in top.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (_is_generated(path) or path.name == "__init__.py")
    ]
    return sorted(path.relative_to(root) for path in found)


def differences(root: Path = REPO_ROOT) -> list[str]:
    """Regenerate into a temp dir and describe every file that differs from ``root``'s copy.

    Empty when the committed code is exactly what the sources produce. A committed generated file
    that the sources no longer produce counts as a difference (stale module).
    """
    with tempfile.TemporaryDirectory(prefix="cellar-protogen-") as tmp:
        fresh_dir = Path(tmp)
        fresh = generate(fresh_dir, root)
        problems: list[str] = []
        for rel in fresh:
            committed = root / rel
            if not committed.is_file():
                problems.append(f"missing: {rel}")
            elif committed.read_bytes() != (fresh_dir / rel).read_bytes():
                problems.append(f"differs: {rel}")
        for rel in sorted(set(committed_files(root)) - set(fresh)):
            problems.append(f"stale: {rel}")
        return problems


def write(root: Path = REPO_ROOT) -> tuple[list[Path], list[Path]]:
    """Regenerate into ``root``: return (written, removed), both relative to ``root``.

    Only changed files are rewritten, and generated modules whose source is gone are removed
    (nothing hand-written lives under ``proto/``).
    """
    with tempfile.TemporaryDirectory(prefix="cellar-protogen-") as tmp:
        fresh_dir = Path(tmp)
        fresh = generate(fresh_dir, root)
        written: list[Path] = []
        for rel in fresh:
            data = (fresh_dir / rel).read_bytes()
            target = root / rel
            if target.is_file() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(rel)
        removed = [rel for rel in sorted(set(committed_files(root)) - set(fresh)) if _is_generated(rel)]
        for rel in removed:
            (root / rel).unlink()
        return written, removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.protogen", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temp dir and exit 1 if the committed code differs",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = differences()
            for problem in problems:
                print(problem)
            if problems:
                print(f"{len(problems)} generated file(s) out of date: run python -m agent.protogen")
                return 1
            print("generated code is up to date")
            return 0
        written, removed = write()
    except ProtocError as err:
        print(err, file=sys.stderr)
        return 2
    for rel in written:
        print(f"wrote {rel}")
    for rel in removed:
        print(f"removed {rel}")
    total = len(committed_files())
    print(f"{len(written)} written, {len(removed)} removed, {total - len(written)} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
