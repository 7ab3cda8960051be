"""Sizes, counts and times as ``cellar`` reads them (observe.units, agent.cli.units): docker's and
systemd's readings, a BadParameter naming the flag for anything else, never a traceback."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli.units import Count, Size, Time, parse_time
from observe.units import parse_count, parse_duration_ns, parse_size
from tests.support.api import Api
from tests.support.cgroups import pure_v2, read_file, unified_dir
from tests.support.cli import CELLAR, cellar, cli_env

KI, MI, GI, TI = 1024, 1024**2, 1024**3, 1024**4

# What `docker run --memory X` (go-units RAMInBytes) and systemd's MemoryMax=X store, in bytes.
DOCKER_AND_SYSTEMD = [
    ("4096", 4096), ("4096b", 4096), ("4096B", 4096),
    ("1k", KI), ("1K", KI), ("1kb", KI), ("1KiB", KI), ("1Ki", KI),
    ("256m", 256 * MI), ("256M", 256 * MI), ("256MB", 256 * MI), ("256Mi", 256 * MI), ("256MiB", 256 * MI),
    ("1g", GI), ("1G", GI), ("1Gi", GI), ("1GB", GI), ("1.5G", 3 * 512 * MI), ("0.5g", 512 * MI),
    ("2t", 2 * TI), ("2T", 2 * TI), ("2Ti", 2 * TI), ("1 G", GI), (" 64M ", 64 * MI),
]


@pytest.mark.parametrize(("text", "expected"), DOCKER_AND_SYSTEMD)
def test_sizes_read_as_docker_and_systemd_read_them(text: str, expected: int) -> None:
    assert parse_size(text) == expected
    assert Size().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["max", "MAX", "infinity", "-1"])
def test_max_is_no_limit_where_the_kernel_has_one(text: str) -> None:
    assert parse_size(text, allow_max=True) is None
    assert parse_count(text, minimum=1, allow_max=True) is None
    with pytest.raises(ValueError, match="has no 'max'"):
        parse_size(text)


@pytest.mark.parametrize(("text", "rule"), [
    ("", "is not a size"), ("lots", "is not a size"), ("1x", "is not a size"), ("-5M", "is not a size"),
    ("1e9", "is not a size"), ("1.5", "a fraction of a byte"), ("99999P", "too large"), ("1GG", "is not a size"),
])
def test_bad_sizes_say_what_is_accepted(text: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), ("1h 30m", 5400),
    ("1w", 7 * 86400), ("45", 45), ("500ms", 0.5), ("1min", 60), ("2hr", 7200),
])
def test_durations_compound_as_systemd_writes_them(text: str, seconds: float) -> None:
    assert parse_duration_ns(text) == int(seconds * 10**9)


NOW = 1_796_673_781_000_000_000  # 2026-12-07T20:03:01Z


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - 600 * 10**9), ("1h30m", NOW - 5400 * 10**9), ("2d", NOW - 2 * 86400 * 10**9),
    ("-1h", NOW - 3600 * 10**9), ("1h ago", NOW - 3600 * 10**9), ("+1h", NOW + 3600 * 10**9), ("now", NOW),
    ("2026-12-07T10:00:00Z", 1_796_637_600 * 10**9), ("2026-12-07T12:00:00+02:00", 1_796_637_600 * 10**9),
    ("2026-12-07 10:00:00.5Z", 1_796_637_600_500_000_000), ("@1796637600", 1_796_637_600 * 10**9),
])
def test_times_as_journalctl_and_kubectl_read_them(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(("text", "local"), [
    ("2026-12-07", datetime(2026, 12, 7)), ("2026-12-07 10:00", datetime(2026, 12, 7, 10)),
    ("2026-12-07T10:00:30", datetime(2026, 12, 7, 10, 0, 30)),
])
def test_a_time_without_a_zone_is_local_time(text: str, local: datetime) -> None:
    assert parse_time(text, NOW) == int(local.timestamp()) * 10**9


def test_today_and_yesterday_are_local_midnights() -> None:
    today = datetime.fromtimestamp(NOW / 1e9).replace(hour=0, minute=0, second=0, microsecond=0)
    assert parse_time("today", NOW) == int(today.timestamp()) * 10**9
    assert parse_time("yesterday", NOW) == int((today - timedelta(days=1)).timestamp()) * 10**9
    assert parse_time("10:00", NOW) == int(today.replace(hour=10).timestamp()) * 10**9


@pytest.mark.parametrize("text", ["45", "x", "2026-13-01", "", "@", "@1e99", "9999-01-01", "1h30"])
def test_bad_times_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="is not a time|@ takes|outside"):
        parse_time(text, NOW)


_TYPES = [Size(), Size(allow_max=True), Count(1, 4_194_304, allow_max=True), Count(), Time()]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_TYPES), st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[ +-]?[0-9.]{0,25}\s?[kmgtpKMGTPiIbBsShdwnuµ@:TZ -]{0,6}\Z"),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?(Z|[+-]\d{2}:\d{2})?\Z"),
))
def test_never_a_traceback_only_a_value_or_a_bad_parameter(kind: click.ParamType, text: str) -> None:
    option = click.Option(["--memory-max"])
    try:
        value = kind.convert(text, option, None)
    except click.BadParameter as exc:
        assert "--memory-max" in exc.format_message()
        return
    assert value is None or isinstance(value, int)
    if isinstance(kind, Size) and value is not None:
        assert 0 <= value <= 2**62
    if isinstance(kind, Time):
        assert 0 <= value < 2**63


def test_help_shows_sizes_with_units() -> None:
    proc = cellar_help("cell", "allocate")
    assert "PARSE_SIZE" not in proc
    assert "--memory-max SIZE" in proc and "1024-based" in proc and "max = none" in proc
    assert "--pids-max N|max" in proc


def cellar_help(*args: str) -> str:
    proc = subprocess.run([*CELLAR, *args, "--help"], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())


@pytest.mark.parametrize(("args", "message"), [
    (("--memory-max", "lots"), "Invalid value for '--memory-max': 'lots' is not a size like 512M, 1.5G or 4096, or max"),
    (("--pids-max", "0"), "Invalid value for '--pids-max': '0': must be in [1, 4194304] (or max for no limit)"),
    (("--memory-min", "max"), "Invalid value for '--memory-min': 'max': this limit has no 'max' (give a size like 512M)"),
])
def test_a_bad_size_is_one_line_naming_the_flag(args: tuple[str, ...], message: str) -> None:
    proc = subprocess.run([*CELLAR, "--addr", "/nonexistent.sock", "cell", "allocate", "x", *args],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"cellar: usage: {message}"], proc.stderr


@pytest.mark.root
def test_allocate_reads_sizes_as_docker_does_and_max_leaves_the_kernel_default(api: Api) -> None:
    cellar(api, "cell", "allocate", "sizes", "--memory-max", "256m", "--swap-max", "max", "--pids-max", "-1")
    cellar(api, "cell", "allocate", "sizes2", "--memory-max", "1.5G", "--pids-max", "max")
    cellar(api, "cell", "allocate", "sizes3", "--memory-max", "max", "--pids-max", "64")
    cells = {c["name"]: c["cell"] for c in json.loads(cellar(api, "-o", "json", "cell", "ls").stdout)}
    assert cells["sizes"]["memory_max"] == str(256 * MI) and cells["sizes2"]["memory_max"] == str(3 * 512 * MI)
    assert "pids_max" not in cells["sizes"] and "swap_max" not in cells["sizes"] and "pids_max" not in cells["sizes2"]
    assert "memory_max" not in cells["sizes3"] and cells["sizes3"]["pids_max"] == "64"
    if pure_v2():
        assert read_file(unified_dir(api.root, "sizes"), "memory.max") == str(256 * MI)
        assert read_file(unified_dir(api.root, "sizes"), "pids.max") == "max"
        assert read_file(unified_dir(api.root, "sizes3"), "memory.max") == "max"


@pytest.mark.parametrize("args", [
    ("start", "c", "n", "--uid", "-1", "--", "true"), ("start", "c", "n", "--gid", "4294967296", "--", "true"),
    ("cell", "allocate", "x", "--cpu-shares", "-5"), ("cell", "allocate", "x", "--cpu-max", "abc"),
    ("cell", "allocate", "x", "--cpu-max", "5000/x"), ("stop", "c", "n", "--grace", "-1"),
    ("cell", "free", "c", "--grace", "1e300"), ("--timeout", "-1", "ps"), ("--timeout", "0", "ps"),
    ("logs", "x", "--limit-bytes", "9" * 30), ("logs", "x", "--tail", "9" * 30), ("jobs", "logs", "j", "--tail", "-1"),
    ("cell", "allocate", "x", "--pids-max", "9" * 30), ("cell", "allocate", "x", "--memory-max", "-5"),
])
def test_a_number_out_of_range_is_a_usage_error_not_a_traceback(args: tuple[str, ...]) -> None:
    proc = subprocess.run([*CELLAR, "--addr", "/nonexistent.sock", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    flag = next(a for a in args if a.startswith("--") and a != "--")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"cellar: usage: Invalid value for '{flag}'"), proc.stderr


@pytest.mark.parametrize("args", [
    ("cell", "free", "c", "--grace", "2s"), ("cell", "free", "c", "--grace", "1.5"), ("--timeout", "2s", "ps"),
    ("cell", "allocate", "x", "--cpu-max", "max"), ("cell", "allocate", "x", "--cpu-max", "50000/100000"),
    ("logs", "x", "--limit-bytes", "1M"),
])
def test_durations_and_sizes_in_other_flags_are_accepted(args: tuple[str, ...]) -> None:
    proc = subprocess.run([*CELLAR, "--addr", "/nonexistent.sock", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    assert proc.returncode == 1 and "cannot reach cellard" in proc.stderr, proc.stderr  # parsed, then sent
