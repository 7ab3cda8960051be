"""``cellar config use-context|current-context|get-contexts``: named contexts, as kubectl's.

Contexts live in the client config file (``$CELLAR_CONFIG``, default ``~/.config/cellar/config.toml``)::

    current-context = "prod"
    [contexts.prod]
    addr = "node1.example:7443"
    saver = "saver.example:7444"
    ca = "~/.config/cellar/prod-ca.pem"

``use-context`` rewrites only ``current-context`` (the file is re-serialised: comments are lost,
as with kubectl) and keeps the file's mode; it refuses a context that does not exist.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import click
import tomli_w

from agent.cli.connection import CURRENT_CONTEXT, Target, config_path, contexts_of, read_config_file
from agent.cli.output import emit_rows
from agent.config import ConfigError


@click.group()
def config() -> None:
    """Named contexts of the client config (addr, certificates, saver)."""


@config.command("get-contexts")
@click.pass_obj
def get_contexts(target: Target) -> None:
    """List the contexts; CURRENT marks the one in use."""
    path = config_path()
    data = read_config_file(path)
    current = target.context or data.get(CURRENT_CONTEXT)
    rows: list[dict[str, Any]] = [
        {"current": "*" if name == current else "", "name": name, "addr": ctx.get("addr"), "saver": ctx.get("saver")}
        for name, ctx in sorted(contexts_of(data, path).items())
    ]
    emit_rows(target.output, rows, ["current", "name", "addr", "saver"])


@config.command("current-context")
@click.pass_obj
def current_context(target: Target) -> None:
    """Print the context in use (exit 1 when none is set)."""
    name = target.context or read_config_file().get(CURRENT_CONTEXT)
    if not name:
        raise click.ClickException("no current context is set")
    click.echo(name)


@config.command("use-context")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    path = config_path()
    data = read_config_file(path)
    if name not in contexts_of(data, path):
        raise ConfigError(f"context {name!r} is not in {path} (contexts: {', '.join(sorted(contexts_of(data, path))) or 'none'})")
    data[CURRENT_CONTEXT] = name
    directory = os.path.dirname(path) or "."
    mode = os.stat(path).st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            tomli_w.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    click.echo(f'Switched to context "{name}".')
