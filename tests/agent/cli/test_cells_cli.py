"""The ``cellar`` CLI against a real cellard: cells, executables, logs, info, and one-line errors."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.cgroups import host_mode, pure_v2, read_file, unified_dir
from tests.support.cleanup import CGROUP_MOUNT
from tests.support.cli import CELLAR, cellar, table_rows  # noqa: F401 - CELLAR: tests import it from here
from tests.support.timeouts import scaled

pytestmark = pytest.mark.root

def wait_exited(api: Api, cell: str, name: str) -> None:
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        exes = [e for e in api.inspect(cell).executables if e.name == name]
        if exes and exes[0].exit.ByteSize():
            return
        time.sleep(0.02)
    raise AssertionError(f"{cell}/{name} did not exit")


def test_cell_lifecycle(api: Api) -> None:
    out = cellar(api, "cell", "allocate", "web", "--memory-max", "64Mi", "--pids-max", "50",
                 "--isolate-process").stdout
    assert "web" in out
    if pure_v2():
        assert read_file(unified_dir(api.root, "web"), "memory.max") == str(64 * 1024**2)
        assert read_file(unified_dir(api.root, "web"), "pids.max") == "50"
    else:
        assert read_file(os.path.join(CGROUP_MOUNT, "memory", api.root, "web"), "memory.limit_in_bytes") == \
            str(64 * 1024**2)
        assert read_file(os.path.join(CGROUP_MOUNT, "pids", api.root, "web"), "pids.max") == "50"

    table = cellar(api, "cell", "ls").stdout
    assert table.splitlines()[0].split()[:2] == ["NAME", "STATE"]
    assert any(line.split()[:3] == ["web", "active", "process"] for line in table.splitlines()[1:]), table
    listed = json.loads(cellar(api, "-o", "json", "cell", "ls").stdout)
    (web,) = [c for c in listed if c["name"] == "web"]
    assert web["isolate_process"] is True and web["cell"]["pids_max"] == "50"

    cellar(api, "start", "web", "hello", "--", "sh", "-c", "echo hi; echo there")
    started = json.loads(cellar(api, "-o", "json", "start", "web", "sleeper", "--sh", "echo zzz; exec sleep 3600").stdout)
    assert started["pid"] > 0 and started["cell_pid"] > 0 and started["pid"] != started["cell_pid"]
    wait_exited(api, "web", "hello")

    running = cellar(api, "ps").stdout
    assert "sleeper" in running and "hello" not in running
    everything = cellar(api, "ps", "-a").stdout
    (hello_row,) = [r for r in table_rows(everything) if r["name"] == "hello"]
    assert hello_row["status"].startswith("Exited (0) ") and hello_row["status"].endswith(" ago"), hello_row
    assert hello_row["command"] == "sh -c 'echo hi; echo there'"  # quoted as a shell reads it back
    ps_json = json.loads(cellar(api, "-o", "json", "ps", "-a").stdout)
    assert {(r["cell"], r["executable"], r["state"]) for r in ps_json} >= {("web", "hello", "exited"),
                                                                   ("web", "sleeper", "running")}

    assert cellar(api, "logs", "web/hello").stdout.splitlines() == ["hi", "there"]
    deadline = time.monotonic() + scaled(10)
    while "zzz" not in cellar(api, "logs", "web/sleeper").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    whole = cellar(api, "logs", "web").stdout.splitlines()
    assert {"[hello] hi", "[hello] there", "[sleeper] zzz"} <= set(whole), whole

    inspected = json.loads(cellar(api, "-o", "json", "cell", "inspect", "web").stdout)
    assert inspected["name"] == "web" and inspected["holder_pid"] > 0
    assert {e["name"] for e in inspected["executables"]} == {"hello", "sleeper"}
    assert int(inspected["stats"]["pids_current"]) >= 1

    cellar(api, "cell", "freeze", "web")
    assert json.loads(cellar(api, "-o", "json", "cell", "inspect", "web").stdout)["state"] == "CELL_STATE_FROZEN"
    cellar(api, "cell", "thaw", "web")
    assert json.loads(cellar(api, "-o", "json", "cell", "inspect", "web").stdout)["state"] == "CELL_STATE_ACTIVE"

    stopped = cellar(api, "stop", "web", "sleeper", "--grace", "2").stdout
    assert "signal 15" in stopped
    cellar(api, "cell", "free", "web")
    assert "web" not in [c["name"] for c in json.loads(cellar(api, "-o", "json", "cell", "ls").stdout)]
    assert api.cgroup_dirs() == []


def test_info(api: Api) -> None:
    info: dict[str, Any] = json.loads(cellar(api, "-o", "json", "info").stdout)
    assert info["cgroup_mode"] == host_mode() and info["cgroup_root"] == unified_dir(api.root)
    assert host_mode() in cellar(api, "info").stdout


@pytest.mark.parametrize("args", [
    ("cell", "inspect", "nope"),
    ("cell", "free", "nope"),
    ("cell", "freeze", "nope"),
    ("stop", "nope", "x"),
    ("start", "nope", "x", "--", "true"),
])
def test_unknown_cell_is_one_line_not_found(api: Api, args: tuple[str, ...]) -> None:
    proc = cellar(api, *args, ok=False)
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cellar: NOT_FOUND: ") and "nope" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_invalid_argument_is_one_line(api: Api) -> None:
    proc = cellar(api, "cell", "allocate", "Bad_Name", ok=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("cellar: INVALID_ARGUMENT: cell.name:") and proc.stderr.count("\n") == 1


def test_privilege_flags(api: Api) -> None:
    """docker's names: --privileged, --cap-add/--cap-drop (repeatable), --grant-role, --mount SRC:DST[:ro],
    --rootfs, --keep-data reach the daemon; privileged shows in ps, cell ls and cell inspect. (Who may ask
    for them: tests/security/test_privilege.py; root on the socket is admin here.)"""
    cellar(api, "cell", "allocate", "plain")
    cellar(api, "start", "plain", "calm", "--cap-drop", "NET_RAW", "--cap-add", "CHOWN", "--", "sleep", "3600")
    assert "PRIVILEGED" not in cellar(api, "ps").stdout.splitlines()[0]  # the usual table stays as it was
    assert "PRIVILEGED" not in cellar(api, "cell", "ls").stdout.splitlines()[0]
    plain = json.loads(cellar(api, "-o", "json", "cell", "inspect", "plain").stdout)
    assert plain["privileged"] is False and plain["executables"][0]["privileged"] is False
    assert "SYS_ADMIN" not in plain["capabilities"] and "CHOWN" in plain["capabilities"]

    cellar(api, "cell", "allocate", "priv", "--privileged", "--cap-add", "SYS_ADMIN", "--cap-add", "net_admin",
           "--cap-drop", "NET_RAW", "--grant-role", "observer")
    cellar(api, "start", "priv", "tool", "--", "sleep", "3600")
    cellar(api, "start", "plain", "loud", "--privileged", "--cap-add", "SYS_PTRACE", "--", "sleep", "3600")
    priv = json.loads(cellar(api, "-o", "json", "cell", "inspect", "priv").stdout)
    assert priv["privileged"] is True and priv["cell"]["privileged"] is True
    assert priv["cell"]["cap_add"] == ["SYS_ADMIN", "NET_ADMIN"] and priv["cell"]["cap_drop"] == ["NET_RAW"]
    assert priv["cell"]["grant_role"] == "observer" and priv["executables"][0]["privileged"] is True

    table = cellar(api, "ps").stdout.splitlines()
    assert table[0].split()[:4] == ["CELL", "NAME", "STATUS", "PRIVILEGED"], table
    rows = {(r["cell"], r["name"]): r["privileged"] for r in table_rows("\n".join(table))}
    assert rows[("priv", "tool")] == "yes" and rows[("plain", "calm")] == "no"
    ps_json = {(r["cell"], r["executable"]): r["privileged"] for r in json.loads(cellar(api, "-o", "json", "ps").stdout)}
    assert ps_json[("priv", "tool")] is True and ps_json[("plain", "calm")] is False
    assert ps_json[("plain", "loud")] is True  # a privileged executable in a contained cell
    cells = cellar(api, "cell", "ls").stdout.splitlines()
    assert "PRIVILEGED" in cells[0].split()
    assert any(line.split()[0] == "priv" and "yes" in line.split() for line in cells[1:]), cells

    volume = os.path.join(api.daemon.config["paths"]["state_dir"], "volumes", "data")
    os.makedirs(volume, exist_ok=True)
    cellar(api, "cell", "allocate", "iso", "--isolate-process", "--mount", f"{volume}:/mnt:ro", "-v",
           "/etc:/srv", "--keep-data")  # -v: docker's spelling of the same
    iso = json.loads(cellar(api, "-o", "json", "cell", "inspect", "iso").stdout)["cell"]
    assert iso["mounts"] == [{"source": volume, "target": "/mnt", "read_only": True},
                             {"source": "/etc", "target": "/srv"}] and iso["keep_data"] is True

    proc = cellar(api, "cell", "allocate", "rootless", "--rootfs", volume, ok=False)  # reaches the daemon's check
    assert proc.returncode == 1 and proc.stderr.startswith("cellar: INVALID_ARGUMENT: cell.rootfs: needs isolate_process")
    for bad in ("nocolon", "/a:/b:rx", ":/b"):
        proc = cellar(api, "cell", "allocate", "x", "--mount", bad, ok=False)
        assert proc.returncode == 2 and "SRC:DST" in proc.stderr, proc.stderr
    proc = cellar(api, "cell", "allocate", "x", "--grant-role", "root", ok=False)
    assert proc.returncode == 2
