"""Where cellar's cgroup root goes on a pure v2 host: only a *delegated* own cgroup is cellar's to reorganise.

Run by hand from an SSH session, cellard's own cgroup is the user's ``session-N.scope``: cellar must leave
it alone (no process moved, no controller enabled) and use its own top-level tree instead. Under systemd
with ``Delegate=yes`` the unit's cgroup carries ``trusted.delegate=1`` (systemd >= 251; ``user.delegate``
for user managers) and is cellar's; ``CELLAR_CGROUP_DELEGATED`` overrides the xattr either way.

The kernel tests build a fake hierarchy top in a scratch cgroup on this host's unified hierarchy (pure v2
or hybrid ``unified``): ``<top>/session-1.scope`` holds a real process and plays cellard's own cgroup.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cells.cgroup_v2 import (
    DAEMON_CGROUP,
    DELEGATE_ENV,
    V2Backend,
    is_delegated,
    own_cgroup_delegated,
    plan_root,
)
from cells.errors import InvalidArgument
from tests.support.cgroups import read_file, unified_dir
from tests.support.cleanup import force_remove_cgroups

SESSION = "/session-1.scope"


# -- pure logic --------------------------------------------------------------------------------------


def test_plan_root_uses_the_own_cgroup_only_when_delegated() -> None:
    top = ("/sys/fs/cgroup", "/sys/fs/cgroup/cellar", None)
    assert plan_root("/sys/fs/cgroup", "cellar", SESSION, delegated=False) == top
    assert plan_root("/sys/fs/cgroup", "cellar", "/", delegated=True) == top
    assert plan_root("/sys/fs/cgroup", "cellar", "/_daemon", delegated=True) == top
    scope = "/sys/fs/cgroup/session-1.scope"
    assert plan_root("/sys/fs/cgroup", "cellar", SESSION, delegated=True) == (
        scope, scope + "/cellar", scope + "/_daemon"
    )


# -- real cgroups ------------------------------------------------------------------------------------


@dataclass
class FakeHost:
    top: str  # plays /sys/fs/cgroup
    session: str  # plays cellard's own cgroup, <top>/session-1.scope
    pid: int  # a process of the session


@pytest.fixture
def host() -> Iterator[FakeHost]:
    if os.geteuid() != 0:
        pytest.fail("root-only test run without root (deselect with -m 'not root')")
    name = f"cellar-test-{uuid.uuid4().hex[:8]}"
    top = unified_dir(name)
    session = top + SESSION
    os.makedirs(session)
    proc = subprocess.Popen(["sleep", "600"])
    try:
        with open(os.path.join(session, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        yield FakeHost(top, session, proc.pid)
    finally:
        proc.kill()
        proc.wait()
        force_remove_cgroups(name)


def procs(directory: str) -> list[int]:
    return [int(p) for p in read_file(directory, "cgroup.procs").split()]


def children(directory: str) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir())


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DELEGATE_ENV, raising=False)


def assert_untouched(host: FakeHost, backend: V2Backend, subtree_control: str) -> None:
    assert backend.root == os.path.join(host.top, "cellar")
    assert os.path.isdir(backend.root)
    assert procs(host.session) == [host.pid]
    assert children(host.session) == []
    assert read_file(host.session, "cgroup.subtree_control") == subtree_control


def assert_taken_over(host: FakeHost, backend: V2Backend) -> None:
    assert backend.root == os.path.join(host.session, "cellar")
    assert procs(host.session) == []
    assert procs(os.path.join(host.session, DAEMON_CGROUP)) == [host.pid]
    assert children(host.top) == ["session-1.scope"]


@pytest.mark.root
def test_undelegated_session_cgroup_is_left_untouched(host: FakeHost) -> None:
    before = read_file(host.session, "cgroup.subtree_control")
    assert not is_delegated(host.session)
    backend = V2Backend.setup(host.top, "cellar", SESSION)
    assert_untouched(host, backend, before)
    # A second start (the supervisor after cellard) decides the same.
    assert_untouched(host, V2Backend.setup(host.top, "cellar", SESSION), before)


@pytest.mark.root
@pytest.mark.parametrize("xattr", ["trusted.delegate", "user.delegate"])
def test_delegated_cgroup_is_cellars(host: FakeHost, xattr: str) -> None:
    os.setxattr(host.session, xattr, b"1")
    assert is_delegated(host.session)
    assert_taken_over(host, V2Backend.setup(host.top, "cellar", SESSION))
    # Restarted inside X/_daemon (DelegateSubgroup=_daemon, or a second detect): still X, not X/_daemon.
    assert_taken_over(host, V2Backend.setup(host.top, "cellar", SESSION + "/" + DAEMON_CGROUP))


@pytest.mark.root
def test_delegate_xattr_other_than_true_is_not_delegation(host: FakeHost) -> None:
    os.setxattr(host.session, "trusted.delegate", b"0")
    assert not is_delegated(host.session)
    before = read_file(host.session, "cgroup.subtree_control")
    assert_untouched(host, V2Backend.setup(host.top, "cellar", SESSION), before)


@pytest.mark.root
def test_removed_xattr_means_not_delegated(host: FakeHost) -> None:
    os.setxattr(host.session, "trusted.delegate", b"1")
    assert is_delegated(host.session)
    os.removexattr(host.session, "trusted.delegate")
    assert not is_delegated(host.session)
    assert not own_cgroup_delegated(host.top, SESSION)


@pytest.mark.root
def test_env_declares_delegation_without_xattr(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd < 251 marks nothing: the unit can say so with Environment=CELLAR_CGROUP_DELEGATED=1."""
    monkeypatch.setenv(DELEGATE_ENV, "1")
    assert own_cgroup_delegated(host.top, SESSION)
    assert_taken_over(host, V2Backend.setup(host.top, "cellar", SESSION))


@pytest.mark.root
def test_env_refuses_delegation_despite_xattr(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    os.setxattr(host.session, "trusted.delegate", b"1")
    monkeypatch.setenv(DELEGATE_ENV, "0")
    before = read_file(host.session, "cgroup.subtree_control")
    assert_untouched(host, V2Backend.setup(host.top, "cellar", SESSION), before)


@pytest.mark.root
def test_root_cgroup_uses_the_top_level_tree(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    """The v2 VM case (cellard in ``/``): top-level tree, whatever the override says."""
    monkeypatch.setenv(DELEGATE_ENV, "1")
    before = read_file(host.session, "cgroup.subtree_control")
    assert_untouched(host, V2Backend.setup(host.top, "cellar", "/"), before)


@pytest.mark.root
def test_bad_env_value_is_refused(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELEGATE_ENV, "maybe")
    with pytest.raises(InvalidArgument, match=DELEGATE_ENV):
        V2Backend.setup(host.top, "cellar", SESSION)
    assert children(host.top) == ["session-1.scope"]
