"""The ``mxsend`` command line's parser and :func:`main` (see :mod:`mxsend.cli`).

Each command module (``send``, ``plan``, ``demo``) has ``setup(commands)``, which adds its
subcommand and options to the ``mxsend`` parser, and ``execute(args)``, which runs it and
returns the exit status. What they share (the user error, one-line usage errors, option types,
running in the reactor) is in ``_common``. User errors print one line (``mxsend: ...``) and
exit with a sysexits status; no traceback. Commands import their machinery (Twisted, the demo
world) only when they run, so ``mxsend --help`` stays quick.

The sendmail front end, :mod:`mxsend.cli.sendmail`, is a program of its own
(``mxsend-sendmail``); message preparation is :mod:`mxsend.message`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from mxsend import __version__
from mxsend.cli import config, daemon, demo, dkim, install, plan, queue, send
from mxsend.cli._common import Parser, Subcommands, UserError, internal_error

__all__ = ["build_parser", "main"]


class _Command(Protocol):
    """What a command module has."""

    def setup(self, commands: Subcommands) -> argparse.ArgumentParser: ...

    def execute(self, args: argparse.Namespace) -> int: ...


#: Every command, by the name it is given on the command line, in the order ``--help`` shows.
_COMMANDS: dict[str, _Command] = {
    "send": send,
    "queue": queue,
    "daemon": daemon,
    "plan": plan,
    "demo": demo,
    "install-sendmail": install,
    "config": config,
    "dkim": dkim,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``mxsend`` parser, with each command's subcommand."""
    parser = Parser(prog="mxsend", description="Outbound e-mail delivery, built on Twisted.")
    parser.add_argument("--version", action="version", version=f"mxsend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in _COMMANDS.values():
        command.setup(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mxsend`` with ``argv`` (default: the process's arguments); the exit status."""
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    try:
        return _COMMANDS[args.command].execute(args)
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        return int(exc.status)
    except Exception as exc:
        return internal_error(exc, verbose=verbose)
