"""What the commands share: the user error, the parser with one-line errors, option types
and builders, and running a command in the reactor."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from mxsend._exits import Exit
from mxsend.protocol import MxsendError

if TYPE_CHECKING:
    from mxsend.message import MessageError
    from mxsend.options import Timeouts
    from mxsend.protocol import RcptOptions, Ret

__all__ = [
    "EXIT_HELP",
    "Parser",
    "Subcommands",
    "UserError",
    "dns_server",
    "dsn_options",
    "host_port",
    "internal_error",
    "message_error",
    "parse_timeouts",
    "port_number",
    "routing_options",
    "run_in_reactor",
    "timeout_option",
    "timeout_spec",
    "timeouts_help",
]


class UserError(MxsendError):
    """A problem with what the user asked for: one line, and an exit status."""

    def __init__(self, status: Exit, message: str) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and sysexits' EX_USAGE, not argparse's exit status 2.
        sys.stderr.write(f"mxsend: {message}\n")
        raise SystemExit(Exit.USAGE)


#: The subcommands of the ``mxsend`` parser, to which each command's ``setup`` adds itself.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(default_port) if not rest else "bad"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r}")
    return host, int(port)


def dns_server(text: str) -> tuple[str, int]:
    return host_port(text, 53)


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def timeout_spec(text: str) -> str:
    """One ``STAGE=SECONDS`` setting, checked here so a bad one is a usage error (64)."""
    from mxsend.options import Timeouts

    try:
        Timeouts().with_specs([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_timeouts(specs: Sequence[str]) -> Timeouts:
    from mxsend.options import Timeouts

    try:
        return Timeouts().with_specs(specs)
    except ValueError as exc:  # each was checked on parsing; kept for callers that did not
        raise UserError(Exit.USAGE, f"--timeout: {exc}") from None


def timeouts_help() -> str:
    from mxsend.options import STAGES

    rows = "\n".join(
        f"  {stage:<9} {seconds:>4g}s  {what}" for stage, (seconds, what) in STAGES.items()
    )
    return (
        "timeouts (--timeout STAGE=SECONDS, repeatable, applied in order; all=N sets every\n"
        "stage). Each is a deadline from the start of the stage; the defaults follow RFC 5321\n"
        "4.5.3.2 for replies and Postfix for the rest:\n"
        f"{rows}"
    )


EXIT_HELP = """\
exit status: 0 all delivered, 75 some deferred (try again later), 69 every failure
permanent, 64 usage, 65 bad message or address, 66 message unreadable, 78 bad
configuration, 70 internal error."""


def timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        type=timeout_spec,
        metavar="STAGE=SECONDS",
        help="deadline for a stage of the session (repeatable; all=N; stages below)",
    )


def routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns",
        type=dns_server,
        metavar="HOST:PORT",
        help="ask this DNS server (default: /etc/resolv.conf)",
    )
    parser.add_argument(
        "--mx-port",
        type=port_number,
        default=25,
        metavar="N",
        help="port for MX connections (default 25)",
    )
    parser.add_argument(
        "--smarthost",
        metavar="HOST[:PORT]",
        help="relay through this host instead of the recipients' MX hosts",
    )
    parser.add_argument(
        "--tls",
        choices=["none", "may", "encrypt", "verify"],
        help="TLS policy (default: may for MX hosts, verify for a smarthost)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def message_error(exc: MessageError) -> UserError:
    """A message that cannot be prepared, as the command line reports it: the same line, and
    the sysexits status its kind means (66 unreadable, 65 bad message, 75 cannot spool)."""
    from mxsend.message import SpoolError, UnreadableMessageError

    if isinstance(exc, UnreadableMessageError):
        status = Exit.NOINPUT
    elif isinstance(exc, SpoolError):
        status = Exit.TEMPFAIL
    else:  # InvalidMessageError
        status = Exit.DATAERR
    return UserError(status, str(exc))


def dsn_options(notify: str | None, ret: str | None, flags: str) -> tuple[RcptOptions, Ret | None]:
    """NOTIFY (``never`` or a list of success, failure, delay) as RCPT options and RET
    (``full`` or ``hdrs``), RFC 3461 4.1 and 4.3. A word that is neither is a UserError
    (64) naming ``flags``; NEVER with others raises the core's ParameterError."""
    from mxsend.protocol import Notify, RcptOptions, Ret

    try:
        wanted = frozenset(Notify(n.strip().upper()) for n in (notify or "").split(",") if n)
        returned = Ret(ret.upper()) if ret else None
    except ValueError as exc:
        raise UserError(Exit.USAGE, f"{flags}: {exc}") from None
    return RcptOptions(wanted), returned


def internal_error(exc: BaseException, *, verbose: bool = False) -> int:
    """Report a bug: one line on stderr (the traceback first, with ``-v``); EX_SOFTWARE."""
    if verbose:
        traceback.print_exception(exc)
    text = " ".join(str(exc).split())
    sys.stderr.write(f"mxsend: internal error: {type(exc).__name__}{': ' if text else ''}{text}\n")
    return int(Exit.SOFTWARE)


def run_in_reactor(job: Any, *, verbose: bool = False) -> int:
    """Run ``job(reactor)`` (a coroutine function) in the reactor; return its exit status.

    A UserError is its one line and status; anything else is an internal error (70)."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    status: list[int] = []

    async def main(reactor: Any) -> None:
        try:
            status.append(int(await job(reactor)))
        except UserError as exc:
            sys.stderr.write(f"mxsend: {exc}\n")
            status.append(int(exc.status))
        except Exception as exc:
            status.append(internal_error(exc, verbose=verbose))

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as done:
        if done.code not in (0, None):
            return int(Exit.SOFTWARE)
    return status[0] if status else int(Exit.SOFTWARE)
