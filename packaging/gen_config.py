"""Write the default ``/etc/cellar/cellard.toml``: every setting of agent/config.py, documented.

    .venv/bin/python packaging/gen_config.py > packaging/cellard.toml

The schema is the dataclasses of :mod:`agent.config`; the documentation is their source comments
(lines above a field, a comment at its end) and docstrings, so the file cannot drift from the code:
tests/system/test_default_config.py fails when a setting is missing here. Every key is written
commented out with its default (``# key = value``, the sshd_config convention): an untouched file
means "built-in defaults", and a default that improves in a later release is not pinned by the
conffile. Only the section headers are live.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import config as schema  # noqa: E402

SOURCE = Path(schema.__file__).read_text()
# Defaults that depend on the host the generator runs on: documented, not written as a value.
HOST_DEPENDENT = {("server", "socket_group"): '"cellar"   # default: "cellar" if that group exists, else root\'s group'}
HEADER = """\
# cellard configuration (TOML). Every setting is shown commented out with its built-in default:
# uncomment and change what you need. Flags override this file (cellard --help); unknown keys and
# bad values stop cellard with exit code 2 and one line naming the key.
# Generated from agent/config.py by packaging/gen_config.py.
"""


def _comments() -> tuple[dict[tuple[str, str], list[str]], dict[str, str]]:
    """``{(class, field): comment lines}`` and ``{class: docstring}`` from agent/config.py's source."""
    lines = SOURCE.splitlines()
    trailing: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(SOURCE).readline):
        if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1].strip() != tok.string:
            trailing[tok.start[0]] = tok.string.lstrip("#").strip()
    fields: dict[tuple[str, str], list[str]] = {}
    docs: dict[str, str] = {}
    for node in ast.walk(ast.parse(SOURCE)):
        if not isinstance(node, ast.ClassDef):
            continue
        docs[node.name] = ast.get_docstring(node) or ""
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above: list[str] = []
                n = item.lineno - 2
                while n >= 0 and lines[n].strip().startswith("#"):
                    above.insert(0, lines[n].strip().lstrip("#").strip())
                    n -= 1
                if item.lineno in trailing:
                    above.append(trailing[item.lineno])
                fields[(node.name, item.target.id)] = above
    return fields, docs


def toml_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and name.endswith("mode"):
        return oct(value)
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def section(name: str, cls: type, comments: dict[tuple[str, str], list[str]], docs: dict[str, str],
            header: str | None = None) -> list[str]:
    out = [""]
    doc = docs.get(cls.__name__, "")
    if doc and not doc.startswith(cls.__name__ + "("):
        out += [f"# {line}".rstrip() for line in doc.splitlines()]
    out.append(header or f"[{name}]")
    hints = typing.get_type_hints(cls)
    tables: list[str] = []
    for f in dataclasses.fields(cls):
        notes = [f"# {line}".rstrip() for line in comments.get((cls.__name__, f.name), [])]
        if typing.get_origin(hints[f.name]) is dict:
            # A free-form table (e.g. auth.identities): an example, after this section's scalars.
            tables += [f"# [{name}.{f.name}]", *notes, '# "alice" = "operator"']
            continue
        shown = HOST_DEPENDENT.get((name, f.name)) or toml_value(f.name, _default(f))
        out += [*notes, f"# {f.name} = {shown}"]
    if tables:
        out += [""] + tables
    return out


def generate() -> str:
    comments, docs = _comments()
    out = [HEADER.rstrip("\n")]
    hints = typing.get_type_hints(schema.Config)
    for f in dataclasses.fields(schema.Config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += section(f.name, tp, comments, docs)  # type: ignore[arg-type]
        elif typing.get_origin(tp) is dict:
            _, value_tp = typing.get_args(tp)
            body = section(f.name, value_tp, comments, docs, header=f'# [{f.name}."<name>"]')
            out += [line if line.startswith("#") or not line else f"# {line}" for line in body]
        else:
            raise TypeError(f"top-level setting {f.name} is not a section")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate())
