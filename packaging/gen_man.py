"""Man pages of ``cellar`` (section 1), ``cellard`` and ``cellar-saver`` (section 8), from their own help.

    python packaging/gen_man.py OUTDIR [VERSION]   -> OUTDIR/cellar.1, OUTDIR/cellard.8, OUTDIR/cellar-saver.8

packaging/build-deb.sh runs it with the package's own venv, so each page is the help of the code it
ships: the ``cellar`` page walks the click command tree (every group and command, their options as
``--help`` prints them), the other two are their argparse help. No dependency (click-man covers click
only, and cellard and cellar-saver use argparse); the help text goes in verbatim (``.nf``), escaped for
roff, so what ``--help`` shows is what ``man`` shows.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterator
from pathlib import Path

import click

SEE_ALSO = {
    "cellar": "cellard(8), cellar-saver(8)",
    "cellard": "cellar(1), cellar-saver(8)",
    "cellar-saver": "cellar(1), cellard(8)",
}


def roff(text: str) -> str:
    """Escape text for roff: backslashes, and a leading dot or quote (a request)."""
    out = []
    for line in text.replace("\\", "\\e").splitlines():
        out.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(out)


def page(name: str, section: int, version: str, summary: str, synopsis: str, description: str,
         sections: list[tuple[str, str]]) -> str:
    date = datetime.date.today().isoformat()
    parts = [
        f'.TH "{name.upper()}" "{section}" "{date}" "cellar {version}" "cellar"',
        ".SH NAME", f"{roff(name)} \\- {roff(summary)}",
        ".SH SYNOPSIS", ".nf", roff(synopsis), ".fi",
        ".SH DESCRIPTION", ".nf", roff(description), ".fi",
    ]
    if sections:
        parts.append(".SH COMMANDS")
    for title, body in sections:
        parts += [f".SS {roff(title)}", ".nf", roff(body), ".fi"]
    parts += [".SH FILES", "/etc/cellar/cellard.toml, /run/cellar/cellar.sock, /usr/share/doc/cellar/README.md",
              ".SH SEE ALSO", SEE_ALSO[name]]
    return "\n".join(parts) + "\n"


def click_commands(cmd: click.Command, ctx: click.Context) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command under ``cmd``, depth first, with a context whose ``command_path`` names it."""
    yield ctx.command_path, cmd, ctx
    if isinstance(cmd, click.Group):
        for sub in cmd.list_commands(ctx):
            child = cmd.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from click_commands(child, click.Context(child, info_name=sub, parent=ctx))


def cellar_page(version: str) -> str:
    from agent.cli import cli

    root = click.Context(cli, info_name="cellar", terminal_width=80, max_content_width=80)
    commands = list(click_commands(cli, root))
    sections = [(path, sub.get_help(ctx)) for path, sub, ctx in commands[1:]]
    return page("cellar", 1, version, "the command-line client of cellard, the cellar node agent",
                "cellar [OPTIONS] COMMAND [ARGS]...", cli.get_help(root), sections)


def argparse_page(name: str, parser: argparse.ArgumentParser, version: str, summary: str) -> str:
    parser.prog = name
    return page(name, 8, version, summary, parser.format_usage().removeprefix("usage: ").strip(),
                parser.format_help(), [])


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    from agent.version import VERSION

    version = argv[1] if len(argv) == 2 else VERSION
    from agent.daemon import build_parser as cellard_parser
    from agent.pb.saver.main import build_parser as saver_parser

    (out / "cellar.1").write_text(cellar_page(version))
    (out / "cellard.8").write_text(argparse_page("cellard", cellard_parser(), version,
                                                 "the cellar node agent (cells, workloads and their logs over gRPC)"))
    (out / "cellar-saver.8").write_text(argparse_page("cellar-saver", saver_parser(), version,
                                                      "the cellar worker saver (pb.WorkerSaver), standalone"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
