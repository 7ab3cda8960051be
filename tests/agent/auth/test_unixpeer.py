"""Local callers: the socket mode is the first gate, SO_PEERCRED through agent.auth.unixpeer the second.

The unprivileged client is a fresh Python subprocess that imports grpc as root (the interpreter may
live under a 0700 home) and then drops to the test uid/gid/groups before it connects.
"""

from __future__ import annotations

import grp
import socket
import subprocess
import sys

import grpc
import pytest

NOBODY = 65534

CLIENT = """
import os, sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
uid, gid, groups = int(sys.argv[2]), int(sys.argv[3]), [int(g) for g in sys.argv[4].split(",") if g]
os.setgroups(groups); os.setgid(gid); os.setuid(uid)
assert os.getuid() == uid and os.geteuid() == uid
ch = grpc.insecure_channel("unix:" + sys.argv[1])
try:
    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"""


def call_as(uid: int, gid: int, socket_path: str, extra_groups: tuple[int, ...] = ()) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, socket_path, str(uid), str(gid), ",".join(map(str, extra_groups))],
        cwd="/", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_root_is_allowed_and_its_credentials_are_logged(cellard):
    assert cellard.health() == "SERVING"
    calls = cellard.events("auth.call")
    assert calls and calls[-1]["uid"] == 0 and calls[-1]["role"] == "admin" and calls[-1]["pid"] > 0


def test_socket_mode_keeps_other_users_out(cellard_factory):
    daemon = cellard_factory(base_mode=0o755)
    out = call_as(NOBODY, NOBODY, daemon.socket)
    assert out.startswith("UNAVAILABLE") and "Permission denied" in out


def test_proxy_denies_a_non_member_when_the_mode_lets_it_connect(cellard_factory):
    daemon = cellard_factory({"server": {"socket_mode": 0o666}}, base_mode=0o755)
    out = call_as(NOBODY, NOBODY, daemon.socket)
    assert out.startswith("PERMISSION_DENIED") and "uid=65534" in out
    denied = daemon.events("auth.denied")
    assert denied and denied[-1]["uid"] == NOBODY and denied[-1]["gid"] == NOBODY and denied[-1]["pid"] > 0


def test_proxy_admits_members_of_the_socket_group(cellard_factory):
    group = grp.getgrgid(NOBODY).gr_name
    daemon = cellard_factory({"server": {"socket_mode": 0o666, "socket_group": group}}, base_mode=0o755)
    assert call_as(NOBODY, NOBODY, daemon.socket) == "OK"  # primary group


def test_proxy_sees_supplementary_groups(cellard_factory):
    group = grp.getgrgid(NOBODY).gr_name
    daemon = cellard_factory({"server": {"socket_mode": 0o666, "socket_group": group}}, base_mode=0o755)
    assert call_as(12345, 12345, daemon.socket, extra_groups=(NOBODY,)) == "OK"
    assert call_as(12345, 12345, daemon.socket).startswith("PERMISSION_DENIED")


def test_without_the_proxy_the_mode_is_the_only_gate(cellard_factory):
    daemon = cellard_factory({"server": {"socket_mode": 0o666, "unix_peer_proxy": False}}, base_mode=0o755)
    assert call_as(NOBODY, NOBODY, daemon.socket) == "OK"


def test_direct_connection_to_the_internal_listener_is_denied(cellard):
    internal = cellard.run_dir / "internal" / "grpc.sock"
    with grpc.insecure_channel(f"unix:{internal}") as ch, pytest.raises(grpc.RpcError) as err:
        cellard.health(channel=ch)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_second_daemon_on_the_same_socket_refuses_to_start(cellard, run_cellard):
    result = run_cellard(config=f"[server]\nsocket = '{cellard.socket}'\n[paths]\nrun_dir = '{cellard.base}/run2'\n"
                         f"state_dir = '{cellard.base}/st2'\nlog_dir = '{cellard.base}/log2'\n"
                         "[local]\ntcp_listen = ''\n")
    assert result.returncode == 1
    assert "another process is listening" in result.stderr.strip().splitlines()[-1]
    assert not (cellard.base / "run2" / "supervisor.sock").exists(), "a failed start must not leave a supervisor"
    assert cellard.health() == "SERVING"


def test_stale_socket_file_is_replaced(cellard_factory, tmp_path):
    daemon = cellard_factory(wait=False)
    daemon.stop(__import__("signal").SIGKILL)
    # Leave a dead socket behind, then start over the same paths.
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(daemon.socket)
    sock.close()
    again = cellard_factory({"server": {"socket": daemon.socket}})
    assert again.health() == "SERVING"
