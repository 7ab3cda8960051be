"""``cellar``: the client CLI. One module per command group; register new groups in :data:`COMMANDS`
(imported on demand, so that a command's start-up pays only for its own modules).

Global options (flag > ``CELLAR_*`` env > ``~/.config/cellar/config.toml`` > default) are collected
into a :class:`~agent.cli.connection.Target` that every command receives as ``click.pass_obj``.
Errors are one line: ``cellar: <STATUS_CODE>: <message>`` (exit 1) for RPC errors,
``cellar: usage: ...`` (exit 2) for bad usage or settings.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import NoReturn

import click
import grpc

from agent.cli.connection import DEFAULT_ADDR, Target, format_rpc_error, load_client_config, use_context
from agent.cli.output import FORMATS, OUTPUT_CHOSEN
from agent.cli.units import Duration
from agent.config import ConfigError

#: Command name -> ``module:attribute``. A command's module (and the protobuf modules it needs) is
#: imported only when that command runs, or when help lists it: ``cellar ps`` loads cells.py alone.
COMMANDS: dict[str, str] = {
    "health": "agent.cli.health:health",
    "version": "agent.cli.version:version",
    "info": "agent.cli.cells:info",
    "cell": "agent.cli.cells:cell",
    "start": "agent.cli.cells:start",
    "stop": "agent.cli.cells:stop",
    "exec": "agent.cli.exec:exec_",
    "attach": "agent.cli.exec:attach",
    "ps": "agent.cli.cells:ps",
    "events": "agent.cli.cells:events",
    "top": "agent.cli.top:top",
    "logs": "agent.cli.logs:logs",
    "daemon-logs": "agent.cli.daemonlogs:daemon_logs",
    "purge-logs": "agent.cli.logs:purge_logs",
    "pki": "agent.cli.pki:pki",
    "completion": "agent.cli.completion:completion",
    "fl": "agent.cli.fl:fl",
    "inventory": "agent.cli.inventory:inventory",
    "machines": "agent.cli.inventory:machines",
    "dispatch": "agent.cli.inventory:dispatch",
    "files": "agent.cli.files:files",
    "queue": "agent.cli.queue:queue",
    "jobs": "agent.cli.jobs:jobs",
    "apply": "agent.cli.apply:apply",
    "diff": "agent.cli.apply:diff",
    "get": "agent.cli.apply:get",
    "fleet": "agent.cli.fleet:fleet",
    "config": "agent.cli.contexts:config",
}


class SuggestingGroup(click.Group):
    """A group that answers a mistyped command with the nearest ones (``cel`` -> ``cell``), as git does."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {' or '.join(repr(c) for c in close)}?")
        return super().resolve_command(ctx, args)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Target).output = value
        ctx.find_root().meta[OUTPUT_CHOSEN] = True


#: ``-o``/``--output`` after the command too (``cellar ps -a -o json``), as kubectl takes it; it
#: overrides the global one. Added to every command that has no ``-o`` of its own (``get`` has).
OUTPUT_OPTION = click.Option(["-o", "--output"], type=click.Choice(FORMATS), expose_value=False,
                             callback=_set_output, is_eager=False, help="table, json or yaml (also before the command)")


def with_habits(command: click.Command) -> click.Command:
    """Give a command, and every command under it, ``-o`` in any position, typo suggestions and the
    completers of agent.cli.complete.BY_GROUP."""
    if getattr(command, "_cellar_habits", False):
        return command
    command._cellar_habits = True  # type: ignore[attr-defined]
    if not any(opt in ("-o", "--output") for p in command.params for opt in getattr(p, "opts", ())):
        command.params.append(OUTPUT_OPTION)
    if isinstance(command, click.Group):
        if type(command) is click.Group:
            command.__class__ = SuggestingGroup  # a plain @click.group(): same state, one more behaviour
        from agent.cli.complete import add_completers

        add_completers(command)  # queue names, fl client ids: asked from cellard on <TAB>
        for sub in command.commands.values():
            with_habits(sub)
    return command


class LazyGroup(SuggestingGroup):
    """A group whose subcommands are imported by name from :data:`COMMANDS` when first needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attribute = spec.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command) and command.name == cmd_name, (cmd_name, command)
        return with_habits(command)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--addr", envvar="CELLAR_ADDR", default=DEFAULT_ADDR, show_default=True,
              help="Unix socket path or host:port (TCP = mutual TLS)")
@click.option("--ca", envvar="CELLAR_CA", help="CA certificate that signed cellard's certificate")
@click.option("--cert", envvar="CELLAR_CERT", help="client certificate")
@click.option("--key", envvar="CELLAR_KEY", help="client private key")
@click.option("--server-name", envvar="CELLAR_SERVER_NAME", help="expected name in the server certificate")
@click.option("--timeout", envvar="CELLAR_TIMEOUT", type=Duration(maximum=7 * 86400, positive=True), default=10.0,
              show_default=True, help="RPC deadline: seconds, or a duration (30s, 2m)")
@click.option("-o", "--output", envvar="CELLAR_OUTPUT", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--insecure-tcp-dev", envvar="CELLAR_INSECURE_TCP_DEV", is_flag=True, hidden=True)
@click.option("--context", envvar="CELLAR_CONTEXT", is_eager=True, callback=use_context,
              help="named context of the config file (addr, certificates, saver)")
@click.option("--node", envvar="CELLAR_NODE", help="a fleet node's hostname: its API address from the saver")
@click.option("--saver", envvar="CELLAR_SAVER", help="the fleet's worker saver (host:port) for fleet and --node")
@click.version_option(package_name="cellar", prog_name="cellar", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, **options: object) -> None:
    """cellar: talk to cellard, the node agent."""
    global _target
    ctx.obj = _target = Target(**options)  # type: ignore[arg-type]


#: This invocation's Target, for main's error message when cellard cannot be reached.
_target: Target | None = None


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
        _fail(format_rpc_error(exc, _target), 1)
    except BrokenPipeError:
        sys.stderr.close()  # `cellar ... | head`: not an error
        raise SystemExit(0) from None
    raise SystemExit(result if isinstance(result, int) else 0)
