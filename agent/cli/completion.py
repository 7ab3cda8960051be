"""``cellar completion bash|zsh|fish``: print click's completion script for the shell.

Install e.g. ``cellar completion bash > /etc/bash_completion.d/cellar``.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script."""
    cls = get_completion_class(shell)
    assert cls is not None
    root = ctx.find_root().command
    click.echo(cls(root, {}, "cellar", "_CELLAR_COMPLETE").source())
