"""``cellar pki init`` / ``cellar pki issue server|client NAME``: bootstrap mutual TLS.

See :mod:`agent.auth.pki` for the file layout and how roles reach cellard.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from agent.auth import pki as lib
from agent.config import ROLES

_dir = click.option(
    "--dir", "directory", type=click.Path(file_okay=False), default=None,
    help="PKI directory (default /etc/cellar/pki for root, else ~/.config/cellar/pki)",
)
_force = click.option("--force", is_flag=True, help="overwrite existing files")


@click.group()
def pki() -> None:
    """Create a CA and issue server/client certificates."""


@pki.command("init")
@_dir
@_force
@click.option("--cn", default="cellar CA", show_default=True, help="CA common name")
def init(directory: str | None, force: bool, cn: str) -> None:
    """Create the CA (EC P-256, 10 years)."""
    directory = directory or lib.default_dir()
    out = _run(lambda: lib.init_ca(directory, cn, force=force))
    click.echo(f"CA certificate: {out.cert_path}\nCA key:         {out.key_path} (0600)")


@pki.command("issue")
@click.argument("kind", type=click.Choice(["server", "client"]))
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), help="client role, recorded as URI SAN cellar://role/<role>/<name>")
@click.option("--san", "sans", multiple=True, help="extra hostname or IP SAN (repeatable)")
@click.option("--days", type=click.IntRange(1, 3650), default=lib.LEAF_DAYS, show_default=True)
@_dir
@_force
def issue(kind: str, name: str, role: str | None, sans: tuple[str, ...], days: int, directory: str | None, force: bool) -> None:
    """Issue a server or client certificate signed by the CA."""
    if kind == "server" and role:
        raise click.UsageError("--role applies to client certificates only")
    directory = directory or lib.default_dir()
    out = _run(lambda: lib.issue(directory, kind, name, role=role, sans=sans, force=force, days=days))
    click.echo(f"certificate: {out.cert_path}\nkey:         {out.key_path} (0600)")
    if kind == "client":
        click.echo(f'grant it on the server (cellard.toml):\n  [auth.identities]\n  "{name}" = "{role or "observer"}"')


def _run(fn: Callable[[], lib.Issued]) -> lib.Issued:
    try:
        return fn()
    except lib.PKIError as exc:
        raise click.ClickException(str(exc)) from None
