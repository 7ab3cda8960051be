"""Pure cgroup v2 hosts: every controller on the unified hierarchy at ``/sys/fs/cgroup``.

Placement of cellar's root (decided from the ``0::`` line of ``/proc/self/cgroup``):

* own cgroup ``/`` (no systemd, or a container that owns the whole hierarchy): the root is
  ``/sys/fs/cgroup/<root_name>``; the needed controllers (``cpu cpuset memory pids io``, those listed
  in the top's ``cgroup.controllers``) are enabled in the top's ``cgroup.subtree_control`` only when
  missing, so the host's own settings are never rewritten.
* own cgroup ``X`` delegated to cellar (systemd with ``Delegate=yes``: the unit's cgroup is ours to
  manage): v2's "no internal processes" rule forbids enabling controllers in ``X`` while it holds
  processes, so every process of ``X`` (cellard itself and anything it started) first moves into
  ``X/_daemon``; then the controllers are enabled in ``X``'s subtree_control and the root is
  ``X/<root_name>``.
* own cgroup ``X`` not delegated (cellard started by hand from an SSH session: ``X`` is the user's
  ``session-N.scope``): ``X`` is not cellar's, so it is left untouched and the root is the top-level
  one, as for ``/``.

"Delegated" is what systemd (>= 251) says with the xattr ``trusted.delegate`` (``user.delegate`` for
user managers) = ``1`` on ``X``, the test systemd itself uses (``cg_is_delegated``). Older systemd
marks nothing: the environment variable ``CELLAR_CGROUP_DELEGATED=1`` (e.g. ``Environment=`` in the
unit) declares ``X`` delegated, ``=0`` forbids using it whatever the xattr says.

Limits sit on cells, processes in leaves (``exe.*``, ``_init``). For a cgroup to have limit files its
*parent* must list the controllers in ``cgroup.subtree_control``; :meth:`V2Backend._prepare_parent`
therefore enables them on the parent right before creating a child. Leaves never get children, so
they never get controllers enabled and stay legal homes for processes (the leaf rule).
"""

from __future__ import annotations

import contextlib
import os

import structlog

from cells.cgroup import CgroupBackend, read_keyed, read_pressure, read_text, write_text
from cells.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from cells.spec import CellLimits
from cells.state import CellStats

WANTED_CONTROLLERS = ("cpu", "cpuset", "memory", "pids", "io")
DAEMON_CGROUP = "_daemon"
DEFAULT_CPU_MAX_PERIOD_US = 100_000
#: Overrides the delegation xattr: a true value declares the own cgroup cellar's, a false one forbids it.
DELEGATE_ENV = "CELLAR_CGROUP_DELEGATED"
#: Where systemd marks a delegated cgroup, in the order systemd itself reads them.
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
# systemd's parse_boolean(), which reads both the xattr and the env value.
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})

log = structlog.get_logger("cells.cgroup")

#: Every v2 limit file this backend writes, in write order.
LIMIT_FILES = (
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.max",
    "pids.max",
)


def parse_controllers(text: str) -> list[str]:
    """``cgroup.controllers`` / ``cgroup.subtree_control``: space-separated names."""
    return text.split()


def format_cpu_max(quota_us: int | None, period_us: int | None) -> str:
    """``cpu.max`` content: ``"$QUOTA $PERIOD"``, ``"max $PERIOD"`` for no quota."""
    period = period_us or DEFAULT_CPU_MAX_PERIOD_US
    return f"{'max' if quota_us is None else quota_us} {period}"


def limit_writes(limits: CellLimits) -> list[tuple[str, str, str]]:
    """``(file, value, field)`` for every set field of ``limits``, in a safe write order."""
    out: list[tuple[str, str, str]] = []
    if limits.cpu_weight is not None:
        out.append(("cpu.weight", str(limits.cpu_weight), "cpu_weight"))
    if limits.cpu_max_quota_us is not None:
        out.append(
            ("cpu.max", format_cpu_max(limits.cpu_max_quota_us, limits.cpu_max_period_us), "cpu_max_quota_us")
        )
    for field in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(limits, field)
        if value is not None:
            out.append((field.replace("_", "."), value, field))
    for field in ("memory_min", "memory_low", "memory_high", "memory_max"):
        value = getattr(limits, field)
        if value is not None:
            out.append((field.replace("_", "."), str(value), field))
    if limits.swap_max is not None:
        out.append(("memory.swap.max", str(limits.swap_max), "swap_max"))
    if limits.pids_max is not None:
        out.append(("pids.max", str(limits.pids_max), "pids_max"))
    return out


def delegation_candidate(own: str) -> str | None:
    """The cgroup cellar would take over for a process in ``own`` (None: the top).

    A process already in ``X/_daemon`` (detect called twice, or systemd's ``DelegateSubgroup=_daemon``)
    means ``X``, not ``X/_daemon``.
    """
    candidate = own.rstrip("/")
    if os.path.basename(candidate) == DAEMON_CGROUP:
        candidate = os.path.dirname(candidate)
    return None if candidate in ("", "/") else candidate


def is_delegated(directory: str) -> bool:
    """Whether systemd marked ``directory`` as delegated (``trusted.delegate``, else ``user.delegate``)."""
    for name in DELEGATE_XATTRS:
        try:
            value = os.getxattr(directory, name)
        except OSError:
            continue  # absent (ENODATA), or xattrs unsupported: try the next, then "not delegated"
        return value.decode(errors="replace").strip().lower() in _TRUE
    return False


def own_cgroup_delegated(mount: str, own: str) -> bool:
    """Whether cellar may reorganise its own cgroup ``own``: :data:`DELEGATE_ENV` if set, else the xattr."""
    override = os.environ.get(DELEGATE_ENV, "").strip().lower()
    if override and override not in _TRUE | _FALSE:
        raise InvalidArgument(DELEGATE_ENV, f"expected 1 or 0 (or unset: read trusted.delegate), got {override!r}")
    candidate = delegation_candidate(own)
    if candidate is None:
        return False
    if override:
        return override in _TRUE
    return is_delegated(mount + candidate)


def plan_root(mount: str, root_name: str, own: str, delegated: bool) -> tuple[str, str, str | None]:
    """``(parent, root, daemon_dir)`` for a process whose unified cgroup is ``own``.

    ``daemon_dir`` is where the delegated cgroup's own processes move; None when cellar's root is at
    the top (``own`` is ``/``, or not ``delegated`` to cellar and so not to be touched).
    """
    candidate = delegation_candidate(own)
    if candidate is None or not delegated:
        return mount, os.path.join(mount, root_name), None
    parent = mount + candidate
    return parent, os.path.join(parent, root_name), os.path.join(parent, DAEMON_CGROUP)


def enable_controllers(directory: str, wanted: tuple[str, ...] = WANTED_CONTROLLERS) -> list[str]:
    """Enable each available wanted controller in ``directory``'s subtree_control when missing.

    One write per controller, so one the kernel refuses (e.g. ``cpu`` while a realtime task sits
    below) does not keep the others off. Returns the controllers enabled afterwards.
    """
    available = parse_controllers(read_text(os.path.join(directory, "cgroup.controllers")))
    control = os.path.join(directory, "cgroup.subtree_control")
    enabled = parse_controllers(read_text(control))
    for controller in wanted:
        if controller in available and controller not in enabled:
            with contextlib.suppress(OSError):
                write_text(control, f"+{controller}")
    return parse_controllers(read_text(control))


def move_all(source: str, target: str, rounds: int = 100) -> None:
    """Move every process of cgroup ``source`` into ``target`` (repeat: they may fork meanwhile)."""
    for _ in range(rounds):
        pids = read_text(os.path.join(source, "cgroup.procs")).split()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                write_text(os.path.join(target, "cgroup.procs"), pid)
    raise RuntimeFailure(f"could not empty {source} into {target}")


class V2Backend(CgroupBackend):
    mode = "v2"
    limits_v2 = True

    @classmethod
    def setup(cls, mount: str, root_name: str, own: str) -> V2Backend:
        delegated = own_cgroup_delegated(mount, own)
        parent, root, daemon = plan_root(mount, root_name, own, delegated)
        if not delegated and delegation_candidate(own) is not None:
            log.info("cgroup.own_not_delegated", own=own, root=root, hint=f"{DELEGATE_ENV}=1 if it is")
        try:
            if daemon is not None:
                os.makedirs(daemon, mode=0o755, exist_ok=True)
                move_all(parent, daemon)
            enable_controllers(parent)
            if not os.path.isdir(root):
                os.mkdir(root, 0o755)
        except OSError as exc:
            raise RuntimeFailure(f"setting up cellar's cgroup root {root}: {exc}") from exc
        return cls(root)

    def _prepare_parent(self, parent: str) -> None:
        """Enable the controllers in ``parent`` once: only cellar changes its subtree_control, so a
        parent that has them all keeps them (three reads saved on every Start). Forgotten when removed."""
        prepared: set[str] = self.__dict__.setdefault("_prepared", set())
        if parent in prepared:
            return
        if set(WANTED_CONTROLLERS) <= set(enable_controllers(self.unified_path(parent))):
            prepared.add(parent)

    def _remove_tree(self, rel: str) -> None:
        prepared: set[str] = self.__dict__.setdefault("_prepared", set())
        for gone in [p for p in prepared if p == rel or p.startswith(rel + "/") or not rel]:
            prepared.discard(gone)
        super()._remove_tree(rel)

    def set_limits(self, rel: str, limits: CellLimits) -> None:
        limits.validate()
        directory = self.unified_path(rel)
        if not os.path.isdir(directory):
            raise FailedPrecondition(f"cgroup {rel!r} does not exist")
        for name, value, field in limit_writes(limits):
            self._write_limit(os.path.join(directory, name), value, field)

    def _cpu_bandwidth(self, rel: str) -> tuple[str, str]:
        return os.path.join(self.unified_path(rel), "cpu.max"), "max"  # the period stays

    def limits(self, rel: str) -> dict[str, str]:
        directory = self.unified_path(rel)
        out: dict[str, str] = {}
        for name in LIMIT_FILES:
            with contextlib.suppress(FileNotFoundError):
                out[name] = read_text(os.path.join(directory, name)).strip()
        return out

    def stats(self, rel: str) -> CellStats:
        directory = self.unified_path(rel)
        if not os.path.isdir(directory):
            raise FailedPrecondition(f"cgroup {rel!r} does not exist")

        def number(name: str) -> int:
            try:
                return int(read_text(os.path.join(directory, name)))
            except (FileNotFoundError, ValueError):
                return 0  # controller not enabled above this cgroup, or "max"

        stats = CellStats(
            memory_current=number("memory.current"),
            memory_peak=number("memory.peak"),
            pids_current=number("pids.current"),
        )
        self._cpu_stat(rel, stats)
        with contextlib.suppress(FileNotFoundError):
            stats.oom_kills = read_keyed(os.path.join(directory, "memory.events")).get("oom_kill", 0)
        stats.pressure = read_pressure(directory)
        return stats
