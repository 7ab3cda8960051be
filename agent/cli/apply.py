"""``cellar apply``, ``cellar diff``, ``cellar get``: the node's cells from a file (kubectl's verbs).

The file is parsed here first (cells.manifest, the same parser cellard uses), so a typo fails at once
with ``file:line: key: rule`` and nothing is sent; cellard parses it again and is the authority.
``diff`` exits like ``kubectl diff``: 0 when the node matches, 1 when it would change, 2 on an error.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import grpc

from agent.cli.connection import Target, format_rpc_error
from agent.cli.output import structured, to_data, to_json
from cells.manifest import MAX_BYTES, ManifestError, parse
from proto.cellar.v1 import cells_pb2, cells_pb2_grpc

#: How a change reads in ``apply`` (past tense, kubectl's "created"/"configured") and ``diff``.
_DONE = {"create": "created", "recreate": "recreated", "update": "updated in place", "start": "started",
         "restart": "restarted", "stop": "stopped", "free": "freed (pruned)"}
_MARK = {"create": "+", "start": "+", "recreate": "~", "update": "~", "restart": "~", "stop": "-", "free": "-"}


def _read(path: str) -> tuple[str, str]:
    """(text, name) of ``-f PATH`` (``-`` = stdin); the file is checked here before anything is sent."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_BYTES + 1)
            name = "<stdin>"
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
            name = path
    except OSError as exc:
        raise click.UsageError(f"-f {path}: {exc.strerror}") from None
    try:
        parse(data, name)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    return data.decode(), name


def _call(target: Target, text: str, name: str, prune: bool, dry_run: bool) -> list[dict[str, Any]]:
    with target.channel() as channel:
        reply = cells_pb2_grpc.CellsStub(channel).Apply(
            cells_pb2.ApplyRequest(manifest=text, file_name=name, prune=prune, dry_run=dry_run),
            timeout=max(target.timeout, 120.0))  # starts and stops of a whole node take their time
    return [{"action": c.action, "cell": c.cell_name, "executable": c.executable_name, "detail": c.detail}
            for c in reply.changes]


def _what(change: dict[str, Any]) -> str:
    if change["executable"]:
        return f"executable {change['cell']}/{change['executable']}"
    return f"cell {change['cell']}"


@click.command("apply")
@click.option("-f", "--filename", "path", required=True, help="manifest (TOML, or .json); - reads stdin")
@click.option("--prune", is_flag=True, help="free applied cells the file no longer names")
@click.option("--dry-run", is_flag=True, help="say what would change, change nothing")
@click.pass_obj
def apply(target: Target, path: str, prune: bool, dry_run: bool) -> None:
    """Make the node's cells match a file: create, update in place, restart what changed."""
    text, name = _read(path)
    changes = _call(target, text, name, prune, dry_run)
    if structured(target.output):
        click.echo(to_data(target.output, changes))
        return
    suffix = " (dry run)" if dry_run else ""
    if not changes:
        click.echo(f"no changes: the node matches {name}{suffix}")
    for c in changes:
        detail = f" ({c['detail']})" if c["detail"] else ""
        click.echo(f"{_what(c)} {_DONE.get(c['action'], c['action'])}{detail}{suffix}")


@click.command("diff")
@click.option("-f", "--filename", "path", required=True, help="manifest (TOML, or .json); - reads stdin")
@click.option("--prune", is_flag=True, help="include applied cells the file no longer names")
@click.pass_obj
def diff(target: Target, path: str, prune: bool) -> NoReturn:
    """What `cellar apply -f FILE` would change. Exit 0: nothing, 1: changes, 2: an error."""
    try:
        text, name = _read(path)
        changes = _call(target, text, name, prune, dry_run=True)
    except grpc.RpcError as exc:
        click.echo(format_rpc_error(exc, target), err=True)
        raise SystemExit(2) from None
    except click.ClickException as exc:
        click.echo(f"cellar: {exc.format_message()}", err=True)
        raise SystemExit(2) from None
    if structured(target.output):
        click.echo(to_data(target.output, changes))
    else:
        for c in changes:
            detail = f": {c['detail']}" if c["detail"] else ""
            click.echo(f"{_MARK.get(c['action'], '~')} {_what(c)} ({c['action']}){detail}")
    raise SystemExit(1 if changes else 0)


@click.command("get")
@click.argument("cell_name")
@click.option("-o", "--output", "fmt", type=click.Choice(("toml", "json")),
              help="toml (the default; what `cellar apply` takes) or json")
@click.pass_obj
def get(target: Target, cell_name: str, fmt: str | None) -> None:
    """A cell as a manifest: its spec and executables as applied."""
    with target.channel() as channel:
        reply = cells_pb2_grpc.CellsStub(channel).GetManifest(
            cells_pb2.GetManifestRequest(cell_name=cell_name), timeout=target.timeout)
    if (fmt or target.output) == "json":
        import tomllib

        click.echo(to_json({"applied": reply.applied, **tomllib.loads(reply.manifest)}))
        return
    if not reply.applied:
        click.echo(f"# cell {cell_name} was not applied: its executables' env, cwd and user are not kept")
    click.echo(reply.manifest, nl=False)
