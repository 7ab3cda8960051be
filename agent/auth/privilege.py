"""What in a request only an admin may ask for, decided on the request's content.

DESIGN.md: "``privileged`` restores the host's view and full capabilities, and only an admin may ask
for it". The role table of :mod:`agent.auth.authz` lets an operator call Allocate and Start; this module
looks inside the request. Below admin, PERMISSION_DENIED (:class:`PrivilegeDenied`) for:

- ``privileged`` on a cell or an executable: no containment at all;
- ``grant_role`` on a cell: its workloads become clients of the main socket (:mod:`agent.auth.grants`);
- ``cap_add`` naming a capability outside the default set (:data:`cells.capabilities.DEFAULT_CAPS`),
  or ``ALL``: one SYS_ADMIN is as good as privileged. Adding back a default capability (Docker's
  ``--cap-drop ALL --cap-add NET_BIND_SERVICE``) and any ``cap_drop`` stay an operator's;
- a ``mounts`` source or a ``rootfs`` outside cellar's volumes directory (``<state_dir>/volumes``,
  :attr:`agent.config.PathsConfig.volumes_dir`): a host path is the host. Both the path as written and
  its resolved form (symlinks followed) must lie strictly below that directory;
- Start in, or Allocate below, a cell that carries any of the above (:func:`cell_admin_only`), itself
  or through an ancestor: an admin's privileged or granted cell must not become an operator's way in.

The request is checked after validation (names normalized, paths absolute without ``..``), so what is
checked is what the runtime gets. Every denial is logged (``authz.privilege_denied``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from cells import capabilities
from cells.manifest import Manifest
from cells.spec import CellSpec, ExecutableSpec
from observe import kinds

log = structlog.get_logger("agent.auth.privilege")

ADMIN = "admin"


class PrivilegeDenied(kinds.Denied):
    """The request asks for something only an admin may: PERMISSION_DENIED (agent.core.status)."""

    def __init__(self, field: str, rule: str, role: str | None) -> None:
        self.field = field
        self.rule = rule
        self.role = role
        super().__init__(f"{field}: {rule}: only role admin may ask for it, the caller has role {role or 'none'}")


def beyond_default(cap_add: Iterable[str]) -> list[str]:
    """The names of ``cap_add`` that add to the default set (``ALL`` included), in order."""
    return [c for c in cap_add if c == "ALL" or c not in capabilities.DEFAULT_CAPS]


def under(path: str, directory: str) -> bool:
    """``path`` lies strictly below ``directory``, as written and with symlinks resolved."""
    base = os.path.normpath(directory)
    real_base = os.path.realpath(directory)
    written = os.path.normpath(path)
    resolved = os.path.realpath(path)
    return written.startswith(base + os.sep) and resolved.startswith(real_base + os.sep)


def cell_request_reasons(spec: CellSpec, volumes_dir: str) -> list[tuple[str, str]]:
    """(field, rule) for everything in an Allocate request that needs admin; empty when none does."""
    out: list[tuple[str, str]] = []
    if spec.privileged:
        out.append(("cell.privileged", "a privileged cell runs its executables without containment"))
    if spec.grant_role:
        out.append(("cell.grant_role", f"granting role {spec.grant_role} makes the cell's workloads clients of the main socket"))
    extra = beyond_default(spec.cap_add)
    if extra:
        out.append(("cell.cap_add", f"{', '.join(extra)} is beyond the default capability set"))
    for i, mount in enumerate(spec.mounts):
        if not under(mount.source, volumes_dir):
            out.append((f"cell.mounts[{i}].source", f"{mount.source} is outside cellar's volumes directory {volumes_dir}"))
    if spec.rootfs and not under(spec.rootfs, volumes_dir):
        out.append(("cell.rootfs", f"{spec.rootfs} is outside cellar's volumes directory {volumes_dir}"))
    return out


def executable_request_reasons(spec: ExecutableSpec) -> list[tuple[str, str]]:
    """(field, rule) for everything in a Start request that needs admin."""
    out: list[tuple[str, str]] = []
    if spec.privileged:
        out.append(("executable.privileged", "a privileged executable runs without containment"))
    extra = beyond_default(spec.cap_add)
    if extra:
        out.append(("executable.cap_add", f"{', '.join(extra)} is beyond the default capability set"))
    return out


def cell_admin_only(spec: Mapping[str, Any], volumes_dir: str) -> list[str]:
    """What makes an allocated cell (its spec in to_dict form, ``CellInfo.spec``) an admin's alone."""
    out: list[str] = []
    if spec.get("privileged"):
        out.append("privileged")
    if spec.get("grant_role"):
        out.append(f"granted role {spec['grant_role']}")
    extra = beyond_default(spec.get("cap_add") or ())
    if extra:
        out.append(f"cap_add {','.join(extra)}")
    if any(not under(str(m.get("source", "")), volumes_dir) for m in spec.get("mounts") or ()):
        out.append("mounts host paths")
    if spec.get("rootfs") and not under(str(spec["rootfs"]), volumes_dir):
        out.append("rootfs outside the volumes directory")
    return out


def deny_unless_admin(role: str | None, reasons: list[tuple[str, str]], **context: Any) -> None:
    """Raise :class:`PrivilegeDenied` for the first reason unless ``role`` is admin (logged)."""
    if not reasons or role == ADMIN:
        return
    field, rule = reasons[0]
    log.warning("authz.privilege_denied", role=role, field=field, rule=rule,
                fields=[f for f, _ in reasons], **context)
    raise PrivilegeDenied(field, rule, role)


def check_cell(spec: CellSpec, role: str | None, volumes_dir: str) -> None:
    """Allocate: PrivilegeDenied unless ``role`` may ask for everything in ``spec``."""
    deny_unless_admin(role, cell_request_reasons(spec, volumes_dir), cell=spec.name)


def check_executable(spec: ExecutableSpec, role: str | None) -> None:
    """Start: PrivilegeDenied unless ``role`` may ask for everything in ``spec``."""
    deny_unless_admin(role, executable_request_reasons(spec), cell=spec.cell_name, exe=spec.name)


async def authorize_allocate(spec: CellSpec, role: str | None, volumes_dir: str, policies: Any) -> bool:
    """Allocate: the request's own content, then the parent chain (an admin's cell is not an operator's
    to nest in). ``policies``: agent.auth.grants.CellPolicies. Returns whether the new cell is admin-only."""
    reasons = cell_request_reasons(spec, volumes_dir)
    deny_unless_admin(role, reasons, cell=spec.name)
    if role != ADMIN and "/" in spec.name:
        found = await policies.admin_only(spec.name.rsplit("/", 1)[0])
        if found is not None:
            deny_unless_admin(role, [("cell.name", f"cell {found[0]!r} above it is an admin's ({found[1]})")],
                              cell=spec.name)
    return bool(reasons)


async def authorize_start(spec: ExecutableSpec, role: str | None, policies: Any) -> None:
    """Start: the request's own content, then the cell it lands in and that cell's ancestors."""
    check_executable(spec, role)
    if role != ADMIN:
        found = await policies.admin_only(spec.cell_name)
        if found is not None:
            deny_unless_admin(role, [("executable.cell_name", f"cell {found[0]!r} is an admin's ({found[1]})")],
                              cell=spec.cell_name, exe=spec.name)


async def authorize_apply(manifest: Manifest, role: str | None, volumes_dir: str, policies: Any) -> list[str]:
    """Apply: every cell as an Allocate (its content and the cells above it) and, when it exists, as
    the cell itself (an admin's cell is not an operator's to change); every executable as a Start.
    Checked whole before anything changes. Returns the names of the admin-only cells."""
    admin_only = []
    for cell in manifest.cells:
        if await authorize_allocate(cell.spec, role, volumes_dir, policies):
            admin_only.append(cell.spec.name)
        if role != ADMIN:
            found = await policies.admin_only(cell.spec.name)
            if found is not None:
                deny_unless_admin(role, [("cell.name", f"cell {found[0]!r} is an admin's ({found[1]})")],
                                  cell=cell.spec.name)
        for exe in cell.executables:
            await authorize_start(exe, role, policies)
    return admin_only
