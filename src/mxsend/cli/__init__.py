"""The ``mxsend`` command line: one module per command, and :func:`main` to pick one.

Each command module (``send``, ``queue``, ``daemon``, ``plan``, ``demo``) has
``setup(commands)``, which adds its subcommand and options to the ``mxsend`` parser, and
``execute(args)``, which runs it and returns the exit status; :mod:`mxsend.cli._main` puts
them together. What they share (the user error, one-line usage errors, option types, running
in the reactor) is in ``_common``. User errors print one line (``mxsend: ...``) and exit with
a sysexits status; no traceback. Commands import their machinery (Twisted, the demo world)
only when they run, so ``mxsend --help`` stays quick.

This package itself imports nothing: the sendmail front end, :mod:`mxsend.cli.sendmail`, a
program of its own (``mxsend-sendmail``), lives here and must start light. Message
preparation is :mod:`mxsend.message`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs an import; mypy takes this name as True
if TYPE_CHECKING:
    from collections.abc import Sequence

    from mxsend.cli._common import UserError, internal_error, run_in_reactor
    from mxsend.cli._main import build_parser

__all__ = ["UserError", "build_parser", "internal_error", "main", "run_in_reactor"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mxsend`` with ``argv`` (default: the process's arguments); the exit status."""
    from mxsend.cli._main import main as run

    return run(argv)


def __getattr__(name: str) -> object:
    # The shared names, imported when first asked for (PEP 562).
    if name in ("UserError", "internal_error", "run_in_reactor"):
        from mxsend.cli import _common

        return getattr(_common, name)
    if name == "build_parser":
        from mxsend.cli import _main

        return _main.build_parser
    raise AttributeError(f"module 'mxsend.cli' has no attribute {name!r}")
