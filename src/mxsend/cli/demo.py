"""``mxsend demo``: deliver one message in an embedded local world (DNS, MX hosts, TLS)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from mxsend._exits import Exit
from mxsend.cli._common import Subcommands, run_in_reactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP

__all__ = ["execute", "run", "setup"]


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``demo`` to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser("demo", help="deliver one message in an embedded local world")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser


async def run(reactor: IReactorTCP, as_json: bool) -> Exit:
    """Run the demo world, print the report (JSON with ``as_json``); the exit status."""
    from mxsend._demo import run_demo
    from mxsend._report import exit_status, format_human, format_json

    def show(reports: Any, world: Any) -> Exit:
        (format_json if as_json else format_human)(reports, sys.stdout)
        return exit_status(r for m in reports for r in m.recipients)

    return await run_demo(reactor, show)


def execute(args: argparse.Namespace) -> int:
    """``mxsend demo``, in the reactor."""
    return run_in_reactor(lambda reactor: run(reactor, args.json))
