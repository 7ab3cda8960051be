"""The shipped /etc/cellar/cellard.toml (packaging/cellard.toml) documents every setting and parses.

When this fails after a new setting was added to agent/config.py, regenerate the file:
``.venv/bin/python packaging/gen_config.py > packaging/cellard.toml``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
import typing

from agent import config as schema
from tests.support import REPO

SHIPPED = REPO / "packaging" / "cellard.toml"
REGENERATE = "regenerate: .venv/bin/python packaging/gen_config.py > packaging/cellard.toml"
KEY_LINE = re.compile(r"^# ([a-z_]+) = (.+)$")


def every_key() -> set[str]:
    """``section.key`` for each setting; dict-of-table sections as ``front.<name>.key``."""
    keys: set[str] = set()
    hints = typing.get_type_hints(schema.Config)
    for f in dataclasses.fields(schema.Config):
        tp = hints[f.name]
        if typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
            prefix = f"{f.name}.<name>"
        else:
            prefix = f.name
        for g in dataclasses.fields(tp):
            keys.add(f"{prefix}.{g.name}")
    return keys


def documented(text: str) -> set[str]:
    """Keys shown in the file (commented out), by the section header above them."""
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        header = re.match(r'^(?:# )?\[([a-z_.]+)(?:\."<name>")?\]$', line)
        if header:
            section = header.group(1) + ('.<name>' if '"<name>"' in line else "")
            continue
        m = KEY_LINE.match(line)
        if m:
            keys.add(f"{section}.{m.group(1)}")
        elif line.startswith('# "') and section:  # free-form table example, e.g. auth.identities
            keys.add(section)
    return keys


def uncommented(text: str) -> str:
    """The file with every default written out (live sections only; host-dependent values kept out)."""
    out, live, section, keys = [], True, "", every_key()
    for line in text.splitlines():
        if line.startswith("["):
            live, section = True, line.strip("[]")
        elif line.startswith("# ["):
            live = False
        m = KEY_LINE.match(line)
        if live and m and f"{section}.{m.group(1)}" in keys and "#" not in m.group(2):
            line = f"{m.group(1)} = {m.group(2)}"
        out.append(line)
    return "\n".join(out)


def test_shipped_config_parses_to_the_defaults() -> None:
    cfg = schema.parse(tomllib.loads(SHIPPED.read_text()))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(schema.validate(schema.Config()))


def test_shipped_config_documents_every_setting() -> None:
    missing = every_key() - documented(SHIPPED.read_text())
    assert not missing, f"packaging/cellard.toml lacks {sorted(missing)}; {REGENERATE}"


def test_every_shown_default_is_valid_and_is_the_default() -> None:
    data = tomllib.loads(uncommented(SHIPPED.read_text()))
    assert sum(len(v) for v in data.values()) > 30  # the defaults really were uncommented
    cfg = schema.parse(data)
    assert dataclasses.asdict(cfg) == dataclasses.asdict(schema.validate(schema.Config()))


def test_generator_covers_the_current_schema() -> None:
    sys.path.insert(0, str(REPO / "packaging"))
    try:
        import gen_config
    finally:
        sys.path.pop(0)
    text = gen_config.generate()
    assert every_key() <= documented(text)
    tomllib.loads(text)
