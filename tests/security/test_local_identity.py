"""Attacks on identities at the node-local endpoint (issue 13): who a caller is, is decided when its
connection is accepted, by the kernel's word, and holds only while that same process lives there.

- An unprivileged user outside the cells is scope ``user:<uid>``, not ``host``: it sees none of root's
  host-scope files and its own land in its own tree.
- A process that connected from the host and was then moved into a cell is refused (identity bound
  at accept; each call checks the process is still where it was).
- A connection whose connecting process has exited is refused (its pid may name another process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.auth.identity import CallerIdentity, validate_scope
from agent.local.files.store import scope_dirname
from proto.parigot.file.v1 import file_pb2, file_pb2_grpc
from tests.security.localcaller import NOBODY, call, connection_of_a_dead_process, relay
from tests.support.api import Api
from tests.support.cellard import StartCellard
from tests.support.local import local_socket

pytestmark = pytest.mark.root

SECRET = "/parigot/app/secret.txt"





def test_an_unprivileged_user_is_its_own_scope_not_the_host(daemon: Any) -> None:
    sock = local_socket(daemon)
    assert call(sock, [["write", SECRET, "root's"]])[0][0] == "OK"  # root on local.sock: host scope
    got = call(sock, [["stat", "/parigot/app/"], ["read", SECRET], ["write", SECRET, "nobody's"],
                      ["read", SECRET]], uid=NOBODY)
    assert got[0][:2] == ["OK", []], got  # root's files are not in its tree
    assert got[1][:2] == ["NOT_FOUND", "NotExistError"], got
    assert got[2][0] == "OK" and got[3] == ["OK", "nobody's"], got
    # root's file is untouched; nobody's lives in user:65534's tree
    assert call(sock, [["read", SECRET]]) == [["OK", "root's"]]
    files = Path(daemon.config["paths"]["state_dir"]) / "files"
    assert (files / "user" / str(NOBODY) / "secret.txt").read_text() == "nobody's"
    assert (files / "host" / "secret.txt").read_text() == "root's"


def test_an_unprivileged_user_over_loopback_tcp_is_its_own_scope_too(cellard_factory: StartCellard) -> None:
    d = cellard_factory({"local": {"tcp_listen": "127.0.0.1:0"}}, base_mode=0o755)
    tcp = str(d.events("local.listening")[-1]["tcp"])
    assert call(tcp, [["write", SECRET, "root's"]])[0][0] == "OK"
    got = call(tcp, [["stat", "/parigot/app/"], ["read", SECRET]], uid=NOBODY)
    assert got[0][:2] == ["OK", []] and got[1][:2] == ["NOT_FOUND", "NotExistError"], got


def test_a_user_scope_is_named_by_an_admin_on_the_main_socket(daemon: Any) -> None:
    call(local_socket(daemon), [["write", "/parigot/app/mine.txt", "x"]], uid=NOBODY)
    with daemon.channel() as ch:
        r = file_pb2_grpc.FileStub(ch).Stat(file_pb2.StatRequest(path="/parigot/app/"), timeout=10,
                                            metadata=(("cellar-scope", f"user:{NOBODY}"),))
    assert [e.path for e in r.entries] == ["/parigot/app/mine.txt"]


def test_a_process_moved_into_a_cell_after_connecting_is_refused(daemon: Any, api: Api) -> None:
    api.allocate("victim")
    api.start("victim", "sleeper", "sleep", "3600")
    leaf = os.path.join(api.inspect("victim").cgroup_path, "exe.sleeper")
    sock = local_socket(daemon)
    # the cell's own file: a caller that became "victim" after connecting must not read it
    got = call(sock, [["read", SECRET]], move_to=leaf)
    assert got[0][0] == "PERMISSION_DENIED", got


def test_a_connection_whose_process_exited_is_refused(daemon: Any, tmp_path: Path) -> None:
    sock = local_socket(daemon)
    call(sock, [["write", SECRET, "root's"]])
    upstream = connection_of_a_dead_process(sock)
    relay_path = str(tmp_path / "relay.sock")
    relay(relay_path, upstream)
    with grpc.insecure_channel("unix:" + relay_path) as ch, pytest.raises(grpc.RpcError) as err:
        file_pb2_grpc.FileStub(ch).Stat(file_pb2.StatRequest(path="/parigot/app/"), timeout=10)
    assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE), err.value


@pytest.mark.parametrize("good", ["host", "user:0", "user:65534", "user:4294967295", "cell:a/b"])
def test_scope_names_accepted(good: str) -> None:
    assert validate_scope(good) == good


@pytest.mark.parametrize("bad", ["user:", "user:-1", "user:01", "user:abc", "user:1/2", "user:12345678901", "usr:1"])
def test_scope_names_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_scope(bad)
    with pytest.raises(ValueError):
        scope_dirname(bad)  # one tree per uid, spelled one way


def test_the_scope_of_a_caller() -> None:
    assert CallerIdentity(uid=0, transport="unix").scope == "host"
    assert CallerIdentity(uid=1000, transport="tcp").scope == "user:1000"
    assert CallerIdentity(cell="a/b", uid=0, transport="unix").scope == "cell:a/b"
    assert CallerIdentity().scope == "host"  # cellard's main listeners authorize by role
    assert scope_dirname("user:65534") == "user/65534"
