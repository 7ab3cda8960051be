"""``cellar``: the client CLI. One module per command group; register new groups in :data:`COMMANDS`.

Global options (flag > ``CELLAR_*`` env > ``~/.config/cellar/config.toml`` > default) are collected
into a :class:`~agent.cli.connection.Target` that every command receives as ``click.pass_obj``.
Errors are one line: ``cellar: <STATUS_CODE>: <message>`` (exit 1) for RPC errors,
``cellar: usage: ...`` (exit 2) for bad usage or settings.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import grpc

from agent.cli.cells import cell, events, info, ps, start, stop
from agent.cli.completion import completion
from agent.cli.connection import DEFAULT_ADDR, Target, format_rpc_error, load_client_config
from agent.cli.files import files
from agent.cli.fl import fl
from agent.cli.health import health
from agent.cli.inventory import dispatch, inventory, machines
from agent.cli.jobs import jobs
from agent.cli.logs import daemon_logs, logs, purge_logs
from agent.cli.output import FORMATS
from agent.cli.pki import pki
from agent.cli.queue import queue
from agent.cli.version import version
from agent.config import ConfigError

COMMANDS: list[click.Command] = [health, version, info, cell, start, stop, ps, events, logs, daemon_logs, purge_logs, pki, completion, fl, inventory, machines, dispatch, files, queue, jobs]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--addr", envvar="CELLAR_ADDR", default=DEFAULT_ADDR, show_default=True,
              help="Unix socket path or host:port (TCP = mutual TLS)")
@click.option("--ca", envvar="CELLAR_CA", help="CA certificate that signed cellard's certificate")
@click.option("--cert", envvar="CELLAR_CERT", help="client certificate")
@click.option("--key", envvar="CELLAR_KEY", help="client private key")
@click.option("--server-name", envvar="CELLAR_SERVER_NAME", help="expected name in the server certificate")
@click.option("--timeout", envvar="CELLAR_TIMEOUT", type=float, default=10.0, show_default=True, help="RPC deadline, seconds")
@click.option("-o", "--output", envvar="CELLAR_OUTPUT", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--insecure-tcp-dev", envvar="CELLAR_INSECURE_TCP_DEV", is_flag=True, hidden=True)
@click.version_option(package_name="cellar", prog_name="cellar", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, **options: object) -> None:
    """cellar: talk to cellard, the node agent."""
    ctx.obj = Target(**options)  # type: ignore[arg-type]


for _command in COMMANDS:
    cli.add_command(_command)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: run ``cli`` and turn every failure into one line and an exit code."""
    try:
        default_map = load_client_config()
    except ConfigError as exc:
        _fail(f"cellar: config error: {exc}", 2)
    try:
        result = cli.main(args=argv, prog_name="cellar", standalone_mode=False, default_map=default_map)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        raise SystemExit(2) from None
    except click.UsageError as exc:
        _fail(f"cellar: usage: {exc.format_message()}", 2)
    except click.ClickException as exc:
        _fail(f"cellar: {exc.format_message()}", exc.exit_code)
    except click.Abort:
        _fail("cellar: aborted", 130)
    except ConfigError as exc:
        _fail(f"cellar: usage: {exc}", 2)
    except grpc.RpcError as exc:
        _fail(format_rpc_error(exc), 1)
    except BrokenPipeError:
        sys.stderr.close()  # `cellar ... | head`: not an error
        raise SystemExit(0) from None
    raise SystemExit(result if isinstance(result, int) else 0)
