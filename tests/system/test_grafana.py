"""packaging/grafana/cellar.json loads, and every query in it names only metrics a REAL cellard exports.

The exported names come from the ``/metrics`` of a real cellard (``[metrics] listen``, a cell with limits
and a workload in it, so every family has series); the names a query uses are parsed out of its PromQL
(strings, label matchers, ranges and grouping lists removed; what is left and is not a function call or a
keyword is a metric name).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from proto.aurae import runtime_pb2
from tests.agent.core import test_metrics
from tests.agent.core.test_metrics import scrape
from tests.support import REPO

DASHBOARD = Path(REPO) / "packaging" / "grafana" / "cellar.json"
metered = test_metrics.metered  # the fixture: a REAL cellard with [metrics] listen on a free port

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
            "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings ($variables, regexes) out
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges ([5m], [$__rate_interval])
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        if match.group(2) is None and match.group(1) not in KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_parser() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, x) (rate(a_bucket{b="c", d=~"$e"}[$__rate_interval])))') \
        == {"a_bucket"}
    assert metric_names("sum by (cell) (x) / on (cell) max by (cell) (y{cell=~\"$cell\"})") == {"x", "y"}
    assert metric_names("time() - max(z) > bool 0") == {"z"}


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target, nested rows included, and each templating query's metric."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel.get("title", ""), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, query
            out.append((f"${var['name']}", match.group(1)))
    return out


def test_the_dashboard_loads() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["uid"], str) and 0 < len(dashboard["uid"]) <= 40
    assert isinstance(dashboard["schemaVersion"], int)
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert {"from", "to"} <= set(dashboard["time"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in {"row", "timeseries", "stat", "gauge", "table", "bargauge"}, panel["type"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"  # chosen at import, not a fixed uid
            for target in panel["targets"]:
                assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
                assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "cell"} <= names


@pytest.mark.root
def test_every_query_names_a_metric_cellar_exports(metered: tuple[Any, str, Any]) -> None:
    daemon, address, stub = metered
    cell = runtime_pb2.Cell(name="dash", memory_max=128 << 20, cpu_max_quota_us=50_000, pids_max=32)
    stub.Allocate(runtime_pb2.AllocateCellRequest(cell=cell), timeout=30)
    exe = runtime_pb2.Executable(cell_name="dash", name="echo", argv=[sys.executable, "-c", "print('hi')"])
    stub.Start(runtime_pb2.StartCellRequest(executable=exe), timeout=30)
    time.sleep(1.1)  # past the collector's cache
    try:
        families = scrape(address)
    finally:
        stub.Free(runtime_pb2.FreeCellRequest(cell_name="dash", grace_period_ms=0), timeout=30)
    exported = set()
    for family in families.values():
        exported |= {s.name for s in family.samples}
        exported |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    assert "cellar_cell_memory_max_bytes" in exported and "cellar_build_info" in exported

    used: dict[str, list[str]] = {}
    for title, expr in queries(json.loads(DASHBOARD.read_text())):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for name in names:
            used.setdefault(name, []).append(title)
    unknown = {name: titles for name, titles in used.items() if name not in exported}
    assert not unknown, f"queries name metrics cellar does not export: {unknown}"
    # What the issue asks the dashboard to show is there.
    for wanted in ("cellar_cell_cpu_usage_seconds_total", "cellar_cell_cpu_limit_cores", "cellar_cell_memory_usage_bytes",
                   "cellar_cell_memory_max_bytes", "cellar_cell_pids", "cellar_cell_oom_kills_total",
                   "cellar_executable_restarts_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                   "cellar_executable_log_lines_total", "cellar_reporter_failures_total",
                   "cellar_reporter_last_success_timestamp_seconds"):
        assert wanted in used, wanted
