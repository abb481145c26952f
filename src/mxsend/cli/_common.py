"""What the commands share: the user error, the parser with one-line errors, option types
and builders, the config file's settings under the options, and running a command in the
reactor.

**Config file.** A command that takes ``--config`` reads the file as its options are parsed
(:meth:`Parser.parse_known_args`): every option of :data:`SETTINGS` left off the command line
then takes the file's value, else its built-in default, so whatever reads the parsed options
(the commands, the twistd plugin) sees the effective settings. The loaded file is
``args.settings``; the options given on the command line are named in ``args.given``. A bad
file ends the command with status 78 and one ``mxsend: FILE:LINE: ...`` line per problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from mxsend._exits import Exit
from mxsend._queuefiles import COMMIT_INTERVAL
from mxsend.protocol import MxsendError

if TYPE_CHECKING:
    from mxsend.config import Config, ConfigError
    from mxsend.message import MessageError
    from mxsend.options import Timeouts
    from mxsend.protocol import RcptOptions, Ret

__all__ = [
    "EXIT_HELP",
    "SETTINGS",
    "Parser",
    "Setting",
    "Subcommands",
    "UserError",
    "apply_config",
    "config_error",
    "config_option",
    "dns_server",
    "dsn_options",
    "host_port",
    "internal_error",
    "message_error",
    "parse_timeouts",
    "port_number",
    "read_config",
    "routing_options",
    "run_in_reactor",
    "timeout_option",
    "timeout_spec",
    "timeouts_help",
    "tune_gc",
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

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """Parse, then put the config file under the options not given (see the module)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(self, _APPLIES_CONFIG, False):
            try:
                apply_config(parsed)
            except UserError as exc:
                sys.stderr.write(f"mxsend: {exc}\n")
                raise SystemExit(int(exc.status)) from None
        return parsed, extras


_APPLIES_CONFIG = "_mxsend_applies_config"
_CONFIG_HELP = (
    "read settings from FILE (default: $MXSEND_CONFIG, else /etc/mxsend/mxsend.toml for "
    "root, $XDG_CONFIG_HOME/mxsend/mxsend.toml for others); options given here win"
)


def config_option(parser: argparse.ArgumentParser, *, apply: bool = True) -> None:
    """Add ``--config FILE``; with ``apply``, parsing puts the file under the options."""
    parser.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)
    if apply:
        setattr(parser, _APPLIES_CONFIG, True)


@dataclass(frozen=True)
class Setting:
    """An option's config key, its built-in default, and its value in a loaded file (None:
    not set there), in the option's own type."""

    key: str
    default: object
    read: Callable[[Config], object]


def _duration_text(seconds: float | None) -> str | None:
    from mxsend.queue import format_duration

    return None if seconds is None else format_duration(seconds) if seconds else "off"


def _queue_dir(config: Config) -> str | None:
    # $MXSEND_QUEUE_DIR is closer to the command than the file: it comes first.
    return None if os.environ.get("MXSEND_QUEUE_DIR") else config.queue_dir


#: Options (by dest) that the config file can set. Bound flags default to None in argparse,
#: so that "not given" can be told from "given as the default".
SETTINGS: dict[str, Setting] = {
    "dns": Setting("dns", None, lambda c: c.dns),
    "mx_port": Setting("mx_port", 25, lambda c: c.mx_port),
    "tls": Setting("tls", None, lambda c: None if c.tls is None else c.tls.value),
    "helo": Setting("hostname", None, lambda c: c.hostname),
    "cafile": Setting("cafile", None, lambda c: c.cafile),
    "allow_cleartext_auth": Setting(
        "allow_cleartext_auth", False, lambda c: c.allow_cleartext_auth
    ),
    "no_chunking": Setting(
        "chunking", False, lambda c: None if c.chunking is None else not c.chunking
    ),
    "sender": Setting("sender", None, lambda c: c.sender),
    "queue_dir": Setting("queue_dir", None, _queue_dir),
    "log_format": Setting("log_format", "text", lambda c: c.log_format),
    "retry_first": Setting("retry.first", None, lambda c: _duration_text(c.retry.first)),
    "retry_max": Setting("retry.max", None, lambda c: _duration_text(c.retry.max)),
    "lifetime": Setting("retry.lifetime", None, lambda c: _duration_text(c.retry.lifetime)),
    "bounce_lifetime": Setting(
        "retry.bounce_lifetime", None, lambda c: _duration_text(c.retry.bounce_lifetime)
    ),
    "delay_warning": Setting(
        "retry.delay_warning", None, lambda c: _duration_text(c.retry.delay_warning)
    ),
    "workers": Setting("daemon.workers", 4, lambda c: c.daemon.workers),
    "connections": Setting("daemon.connections", 5, lambda c: c.daemon.connections),
    "processes": Setting("daemon.processes", 1, lambda c: c.daemon.processes),
    "poll": Setting("daemon.poll", 30.0, lambda c: c.daemon.poll),
    "grace": Setting("daemon.grace", 30.0, lambda c: c.daemon.grace),
    "submit_socket": Setting("daemon.submit_socket", None, lambda c: c.daemon.submit_socket),
    "commit_interval": Setting(
        "daemon.commit_interval", COMMIT_INTERVAL, lambda c: c.daemon.commit_interval
    ),
}


def key_help(dest: str, text: str) -> str:
    """``text`` with the config key of the option ``dest`` named at its end."""
    return f"{text} [config: {SETTINGS[dest].key}]"


def config_error(exc: ConfigError) -> UserError:
    """A bad config file as a UserError (78): one line per problem, each printed after
    ``mxsend: `` as the others are."""
    return UserError(Exit.CONFIG, "\nmxsend: ".join(str(p) for p in exc.problems))


def read_config(explicit: str | None = None) -> Config:
    """The config file ``explicit`` names (``--config``), else the one found by
    :func:`mxsend.config.find_config`; a UserError (78) naming every problem."""
    from mxsend.config import ConfigError, find_config, load_config

    try:
        return load_config(find_config(explicit=explicit))
    except ConfigError as exc:
        raise config_error(exc) from None


def apply_config(args: argparse.Namespace) -> Config:
    """Read ``args.config`` (once) and fill each option of :data:`SETTINGS` that ``args``
    has and the command line left unset; the config, also kept as ``args.settings``."""
    settings = getattr(args, "settings", None)
    if settings is not None:
        return settings  # type: ignore[no-any-return]
    config = read_config(getattr(args, "config", None))
    given = set()
    for dest, setting in SETTINGS.items():
        if not hasattr(args, dest):
            continue
        if getattr(args, dest) is not None:
            given.add(dest)
            continue
        value = setting.read(config)
        setattr(args, dest, setting.default if value is None else value)
    args.settings = config
    args.given = frozenset(given)
    return config


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


def parse_timeouts(specs: Sequence[str], config: Config | None = None) -> Timeouts:
    """The timeouts of ``config``'s ``[timeouts]``, then the ``--timeout`` specs in order."""
    from mxsend.options import Timeouts

    base = Timeouts(**config.timeouts) if config is not None else Timeouts()
    try:
        return base.with_specs(specs)
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
        help="deadline for a stage of the session (repeatable; all=N; stages below), "
        "applied after the file's [config: timeouts.STAGE]",
    )


def routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns",
        type=dns_server,
        metavar="HOST:PORT",
        help=key_help("dns", "ask this DNS server (default: /etc/resolv.conf)"),
    )
    parser.add_argument(
        "--mx-port",
        type=port_number,
        metavar="N",
        help=key_help("mx_port", "port for MX connections (default 25)"),
    )
    parser.add_argument(
        "--smarthost",
        metavar="HOST[:PORT]",
        help="relay through this host instead of the recipients' MX hosts; replaces the "
        'file\'s default route, AUTH and all [config: routes."*".via]',
    )
    parser.add_argument(
        "--tls",
        choices=["none", "may", "encrypt", "verify"],
        help=key_help(
            "tls", "TLS policy where a route sets none (default: may for MX hosts, verify "
            "for a relay); given here, also the least every route gets: a route's weaker "
            "tls is raised to it. AUTH is verified unless its route's own tls (for "
            "--smarthost, this option given here) says otherwise"
        ),
    )  # fmt: skip
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


def tune_gc() -> None:
    """For a process that delivers many messages (``daemon``, ``queue run``): what was
    loaded at start is never scanned again (gc.freeze), and the young generation is
    collected every 50,000 allocations rather than 700. A delivery makes many short-lived
    objects and few cycles, and each collection scans every batch in flight: at 700 that
    cost about a tenth of the CPU per message, at 10,000 still 4% (bench/queue.py). A
    library never does this to its caller's process."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


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
