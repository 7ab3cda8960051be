"""cells.manifest: the file of ``cellar apply``. Every error is one ManifestError with file, line and
key; nothing else escapes, whatever the bytes (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cells.manifest import MAX_BYTES, MAX_CELLS, ManifestError, cell_table, parse

GOOD = """\
[cells.web]
isolate_process = true
limits = { memory_max = "256Mi", pids_max = 200 }

[cells.web.executables.server]
argv = ["python3", "-m", "http.server", "8080"]
env = { PORT = "8080" }
restart = "on-failure"

[cells."web/side".executables.x]
command = "sleep 100"
restart = { mode = "always", delay_s = 1 }
"""


def error(text: str | bytes, name: str = "node.toml") -> str:
    with pytest.raises(ManifestError) as info:
        parse(text, name)
    return str(info.value)


def test_a_good_file() -> None:
    m = parse(GOOD, "node.toml")
    assert m.names() == ["web", "web/side"]  # parents first
    web = m.cells[0]
    assert web.spec.isolate_process and web.spec.limits.memory_max == 256 * 1024**2
    server = web.executable("server")
    assert server is not None and server.env == (("PORT", "8080"),) and server.restart.mode == "on-failure"
    side = m.cells[1].executables[0]
    assert (side.command, side.restart.mode, side.restart.delay_s) == ("sleep 100", "always", 1.0)


def test_json_has_the_same_shape() -> None:
    data = {"cells": {"web": {"limits": {"memory_max": "1G"}, "executables": {"a": {"argv": ["true"]}}}}}
    m = parse(json.dumps(data, indent=2), "node.json")
    assert m.cells[0].spec.limits.memory_max == 1024**3 and m.cells[0].executables[0].argv == ("true",)


@pytest.mark.parametrize(("limits", "expected"), [
    # read as docker and systemd (and `cellar cell allocate`) read them: K M G T are 1024-based
    ('memory_max = "1G"', {"memory_max": 1024**3}),
    ('memory_max = "256m", swap_max = "1.5G"', {"memory_max": 256 * 1024**2, "swap_max": 3 * 512 * 1024**2}),
    ('memory_high = "512MiB", memory_low = "1kb"', {"memory_high": 512 * 1024**2, "memory_low": 1024}),
    ('memory_max = 4096', {"memory_max": 4096}),
    # "max": no limit, the cgroup's default (the field stays unset)
    ('memory_max = "max", memory_high = "max", swap_max = "infinity", pids_max = "max"',
     {"memory_max": None, "memory_high": None, "swap_max": None, "pids_max": None}),
])
def test_sizes_read_as_the_cli_reads_them(limits: str, expected: dict[str, int | None]) -> None:
    m = parse(f"[cells.web]\nlimits = {{ {limits} }}\n")
    got = m.cells[0].spec.limits
    assert {k: getattr(got, k) for k in expected} == expected


@pytest.mark.parametrize(("limits", "expected"), [
    ('memory_min = "max"', "node.toml:2: cells.web.limits.memory_min: 'max': this limit has no 'max'"),
    ('memory_max = "1.5"', "node.toml:2: cells.web.limits.memory_max: '1.5': a fraction of a byte"),
    ('pids_max = "lots"', "node.toml:2: cells.web.limits.pids_max: 'lots' is not a whole number or max"),
])
def test_size_errors_name_the_key(limits: str, expected: str) -> None:
    assert error(f"[cells.web]\nlimits = {{ {limits} }}\n").startswith(expected)


@pytest.mark.parametrize(("edit", "expected"), [
    (("pids_max = 200", "pids_max = 0"), "node.toml:3: cells.web.limits.pids_max: must be in [1, "),
    (("isolate_process", "isolate_proces"), "node.toml:2: cells.web.isolate_proces: is not a known key"),
    (('"256Mi"', '"lots"'), "node.toml:3: cells.web.limits.memory_max: 'lots' is not a size"),
    (('restart = "on-failure"', 'restart = "sometimes"'),
     "node.toml:8: cells.web.executables.server.restart.mode: must be one of never, on-failure or always"),
    (("delay_s = 1", "delay_s = -1"), 'node.toml:12: cells."web/side".executables.x.restart.delay_s: must be'),
    (('PORT = "8080"', "PORT = 8080"), "node.toml:7: cells.web.executables.server.env.PORT: must be a string"),
    (('argv = ["python3"', 'argv = [["python3"]'), "node.toml:6: cells.web.executables.server.argv: must be a list"),
    (('argv = ["python3"', 'argv = [python3'), "node.toml:6: file: "),
    (("[cells.web]\n", '[cells."../etc"]\n'), 'node.toml:1: cells."../etc": '),
])
def test_errors_name_file_line_and_key(edit: tuple[str, str], expected: str) -> None:
    assert error(GOOD.replace(*edit)).startswith(expected)


def test_bounds() -> None:
    assert "at most" in error(b"#" * (MAX_BYTES + 1))
    many = "".join(f"[cells.c{i}]\n" for i in range(MAX_CELLS + 1))
    assert error(many).startswith("node.toml:1: cells: has 257 cells, at most 256")
    assert error(b"\xff\xfe").startswith("node.toml: file: is not UTF-8")
    assert error("[other]\n").startswith("node.toml:1: other: is not a known key")
    assert error("[" * 100_000, "n.json").startswith("n.json:")


def test_cell_table_round_trips() -> None:
    import tomli_w

    m = parse(GOOD)
    tables = {c.spec.name: cell_table(c.spec, list(c.executables)) for c in m.cells}
    again = parse(tomli_w.dumps({"cells": tables}))
    assert again == m


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400),
                 st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                              lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                              max_leaves=20).map(lambda d: json.dumps({"cells": d}))))
def test_any_input_is_a_manifest_or_one_manifest_error(text: str | bytes) -> None:
    for name in ("node.toml", "node.json"):
        try:
            parse(text, name)
        except ManifestError as exc:
            assert str(exc).startswith(name)
