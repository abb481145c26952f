"""The ``mxsend`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mxsend import __version__
from mxsend._exits import Exit

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and sysexits' EX_USAGE, not argparse's exit status 2.
        sys.stderr.write(f"mxsend: {message}\n")
        raise SystemExit(Exit.USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxsend", description="Outbound e-mail delivery, built on Twisted.")
    parser.add_argument("--version", action="version", version=f"mxsend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("demo", help="deliver one message in an embedded local world")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from mxsend._demo_core import run

        return int(run(print))
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choices
