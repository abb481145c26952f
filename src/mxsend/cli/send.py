"""``mxsend send``: deliver one message, read as it is sent (never whole into memory).

The twistd plugin (:mod:`mxsend._service`) takes the same options through
:func:`build_parser`, builds the same :class:`Request` and delivers it with :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mxsend._exits import Exit
from mxsend.cli._common import (
    EXIT_HELP,
    SETTINGS,
    Parser,
    Subcommands,
    UserError,
    apply_config,
    config_option,
    dsn_options,
    host_port,
    key_help,
    message_error,
    parse_timeouts,
    routing_options,
    run_in_reactor,
    timeout_option,
    timeouts_help,
)
from mxsend.cli._drop import qualified

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP

    from mxsend.config import Config
    from mxsend.model import Message
    from mxsend.options import DeliveryOptions
    from mxsend.protocol import BodyInfo, Content
    from mxsend.queue import DiskStore
    from mxsend.routing._table import RouteTable

__all__ = [
    "Request",
    "add_arguments",
    "build_parser",
    "build_request",
    "delivery_routes",
    "execute",
    "local_name",
    "run",
    "setup",
]

_HELP = "deliver a message"
_DESCRIPTION = "Deliver one message, read as it is sent (never whole into memory)."


@dataclass
class Request:
    """What to deliver and how: the messages, the delivery options, the DNS server, and
    the config file's routes per recipient domain."""

    messages: list[Message]
    options: DeliveryOptions
    dns: tuple[str, int] | None
    routes: RouteTable | None = None


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``send`` to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser(
        "send",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=f"{timeouts_help()}\n\n{EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A parser for the options of ``send`` alone, as ``mxsend send`` takes them."""
    parser = Parser(
        prog="mxsend send",
        description=_DESCRIPTION,
        epilog=f"{timeouts_help()}\n\n{EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "message",
        nargs="?",
        default="-",
        metavar="MESSAGE",
        help="RFC 5322 message file, or - for standard input (default)",
    )
    parser.add_argument(
        "--from",
        dest="sender",
        metavar="ADDR",
        help=key_help("sender", "envelope sender (default: the file's, else the From header); "
                      "'' for <>"),
    )  # fmt: skip
    parser.add_argument("--to", action="append", default=[], metavar="ADDR", help="a recipient")
    parser.add_argument(
        "-t",
        action="store_true",
        dest="from_headers",
        help="also take recipients from To, Cc and Bcc (Bcc is removed)",
    )
    delivery_arguments(parser)
    parser.add_argument(
        "--notify", metavar="LIST", help="DSN NOTIFY: never or success,failure,delay"
    )
    parser.add_argument("--ret", choices=["full", "hdrs"], help="DSN RET")
    parser.add_argument("--envid", metavar="ID", help="DSN envelope identifier")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="queue the message durably, print its queue id and leave delivery to the queue",
    )
    queue_dir_option(parser)
    config_option(parser)


def queue_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue-dir",
        metavar="DIR",
        help=key_help("queue_dir", "the queue (default: $MXSEND_QUEUE_DIR, the file's, "
                      "/var/spool/mxsend for root, else $XDG_STATE_HOME/mxsend/queue)"),
    )  # fmt: skip


def delivery_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say how to deliver: routing, TLS, AUTH, deadlines, the transcript."""
    routing_options(parser)
    timeout_option(parser)
    parser.add_argument(
        "--helo", metavar="NAME", help=key_help("helo", "name to give in EHLO (default: FQDN)")
    )
    parser.add_argument(
        "--cafile", metavar="FILE", help=key_help("cafile", "also trust this CA (PEM)")
    )
    parser.add_argument(
        "--auth-user",
        metavar="USER",
        help='AUTH user for --smarthost [config: routes."*".auth.username]',
    )
    parser.add_argument(
        "--auth-password-file",
        metavar="FILE",
        help="file holding the AUTH password (else $MXSEND_PASSWORD) "
        '[config: routes."*".auth.password_file]',
    )
    parser.add_argument(
        "--allow-cleartext-auth",
        action="store_true",
        default=None,
        help=key_help("allow_cleartext_auth", "allow AUTH on an unencrypted channel (e.g. to "
                      "localhost)"),
    )  # fmt: skip
    parser.add_argument(
        "--no-chunking",
        action="store_true",
        default=None,
        help=key_help("no_chunking", "send with DATA even when the server offers BDAT "
                      "(CHUNKING); the file says chunking = false"),
    )  # fmt: skip
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="write the SMTP transcript to stderr (credentials redacted)",
    )


def _password(args: argparse.Namespace) -> str:
    if args.auth_password_file:
        try:
            with open(args.auth_password_file, encoding="utf-8") as handle:
                return handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise UserError(Exit.CONFIG, f"cannot read password file: {exc.strerror}") from None
    password = os.environ.get("MXSEND_PASSWORD")
    if password is None:
        raise UserError(Exit.CONFIG, "--auth-user needs --auth-password-file or MXSEND_PASSWORD")
    return password


def _helo_name(args: argparse.Namespace) -> str:
    return local_name(args.helo)


def local_name(given: str | None = None) -> str:
    """``given`` (a UserError unless it is a valid domain), else this host's FQDN when it is
    one, else ``localhost``: the name given in EHLO and as a DSN's Reporting-MTA."""
    from mxsend.protocol import AddressError, validate_domain

    name = given or socket.getfqdn()
    try:
        validate_domain(name)
    except AddressError:
        if given:
            raise UserError(Exit.USAGE, f"--helo {given!r} is not a valid domain") from None
        return "localhost"
    return name


def build_request(args: argparse.Namespace) -> Request:
    """The delivery ``args`` (parsed ``send`` options) ask for; a UserError if they cannot."""
    from mxsend.message import MessageError, prepare, scan
    from mxsend.protocol import (
        AddressError,
        Envelope,
        MailOptions,
        Message,
        ParameterError,
    )

    config = apply_config(args)
    signs = any(config.dkim.values())
    try:
        prepared = prepare(
            args.message,
            read_headers=args.from_headers or args.sender is None or signs,
            remove_bcc=args.from_headers,
        )
    except MessageError as exc:
        raise message_error(exc) from None
    domain = config.domain
    recipients = list(args.to) + (prepared.recipients if args.from_headers else [])
    recipients = [qualified(r, domain) for r in recipients]
    sender = prepared.sender if args.sender is None else args.sender
    sender = None if sender is None else qualified(sender, domain)
    if not recipients:
        raise UserError(Exit.USAGE, "no recipients: give --to ADDR or -t")
    if sender is None:
        raise UserError(Exit.USAGE, "no sender: give --from ADDR (or a From header)")
    content = prepared.content
    try:
        info = scan(content)
        if signs:  # DKIM for the From field's domain (RFC 6376), else the sender's
            content, info = _dkim_signed(content, info, prepared.sender or sender, config)
    except MessageError as exc:
        raise message_error(exc) from None
    try:
        notify, ret = dsn_options(args.notify, args.ret, "--notify")
        options = MailOptions.for_content(info, ret=ret, envid=args.envid)
        envelope = Envelope.build(sender, recipients, options, notify)
    except (AddressError, ParameterError) as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    return Request(
        [Message(envelope, content)], delivery_options(args), args.dns, delivery_routes(args),
    )  # fmt: skip


def _dkim_signed(
    content: Content, info: BodyInfo, author: str, config: Config
) -> tuple[Content, BodyInfo]:
    """``content`` (scanned as ``info``) signed with the config's DKIM keys for
    ``author``'s domain, when it has some; a key that cannot be used is a config error."""
    from mxsend.dkim import DkimKeyError, keys_for
    from mxsend.message import signed

    try:
        keys = keys_for(author.rpartition("@")[2], config.dkim)
    except DkimKeyError as exc:
        raise UserError(Exit.CONFIG, str(exc)) from None
    return signed(content, keys) if keys else (content, info)


def delivery_routes(args: argparse.Namespace) -> RouteTable | None:
    """The config file's routes; a ``--smarthost`` replaces its ``*`` route. ``--tls`` (or
    the file's ``tls``) is the policy of routes that set none but AUTH's; given on the
    command line it is also a floor: no route goes below it."""
    from mxsend.routing import TLSPolicy

    table = apply_config(args).route_table()
    if table is not None and getattr(args, "smarthost", None):
        table = table.without_default()
    if table is None or not table.routes:
        return None
    policy = TLSPolicy(args.tls) if getattr(args, "tls", None) else None
    floor = policy if "tls" in args.given else None
    return replace(table, default_tls=policy, tls_floor=floor)


def delivery_options(args: argparse.Namespace) -> DeliveryOptions:
    """The DeliveryOptions that parsed :func:`delivery_arguments` ask for; a UserError if
    they cannot be had."""
    from mxsend.options import DeliveryOptions, Smarthost, TLSOptions
    from mxsend.protocol import Plain
    from mxsend.routing import TLSPolicy

    timeouts = parse_timeouts(args.timeout, apply_config(args))
    smarthost = None
    if args.smarthost:
        try:
            host, port = host_port(args.smarthost, 587)
        except argparse.ArgumentTypeError as exc:
            raise UserError(Exit.USAGE, f"--smarthost: {exc}") from None
        mechanism = Plain(args.auth_user, _password(args)) if args.auth_user else None
        smarthost = Smarthost(host, port, mechanism)
    elif args.auth_user:
        raise UserError(Exit.USAGE, "--auth-user needs --smarthost")
    policy = TLSPolicy(args.tls) if args.tls else None
    if smarthost is not None and smarthost.mechanism is not None and "tls" not in args.given:
        # AUTH to the smarthost: verify (SECURITY.md 3), never the file's global policy.
        # The file's routes still get that from delivery_routes().
        policy = None
    if args.cafile and not os.access(args.cafile, os.R_OK):
        raise UserError(Exit.CONFIG, f"cannot read --cafile {args.cafile}")
    trace = None
    if args.verbose:

        def trace(direction: str, line: str) -> None:
            sys.stderr.write(f"{direction}: {line}\n")

    return DeliveryOptions(
        _helo_name(args),
        mx_port=args.mx_port,
        tls=TLSOptions(policy, args.cafile),
        smarthost=smarthost,
        allow_cleartext_auth=args.allow_cleartext_auth,
        chunking=not args.no_chunking,
        timeouts=timeouts,
        trace=trace,
    )


async def run(reactor: IReactorTCP, request: Request, as_json: bool) -> Exit:
    """Deliver ``request``, print the report (JSON with ``as_json``); the exit status."""
    from mxsend._report import exit_status, format_human, format_json
    from mxsend.twisted import Deliverer, DNSRouter

    # A file that changes after its scan is reported per recipient by the adapter, not raised.
    router = DNSRouter.asking(request.dns, reactor)
    deliverer = Deliverer(reactor, router, request.options, routes=request.routes)
    reports = await deliverer.deliver(request.messages)
    (format_json if as_json else format_human)(reports, sys.stdout)
    return exit_status(r for m in reports for r in m.recipients)


def execute(args: argparse.Namespace) -> int:
    """``mxsend send``: build the request, then deliver it in the reactor, or queue it."""
    if args.queue:
        _queue_takes_no_delivery_options(args)
    request = build_request(args)
    if args.queue:
        return queue_request(request, args.queue_dir, as_json=args.json)
    return run_in_reactor(lambda reactor: run(reactor, request, args.json), verbose=args.verbose)


#: Options that say how to deliver, with their defaults: the queue does not keep them, so
#: ``send --queue`` refuses them rather than let a later run deliver otherwise (a --tls
#: verify silently lost would be a downgrade). Those the config file can set count only
#: when given on the command line: the queue's runs read the same file.
_DELIVERY_DEFAULTS: dict[str, object] = {
    "smarthost": None, "tls": None, "cafile": None, "auth_user": None,
    "auth_password_file": None, "allow_cleartext_auth": False, "no_chunking": False,
    "timeout": [], "dns": None, "mx_port": 25, "helo": None,
}  # fmt: skip


def _queue_takes_no_delivery_options(args: argparse.Namespace) -> None:
    apply_config(args)
    given = [
        name for name, default in _DELIVERY_DEFAULTS.items()
        if (name in args.given if name in SETTINGS else getattr(args, name) != default)
    ]  # fmt: skip
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UserError(
            Exit.USAGE,
            f"--queue keeps the message, not how to deliver it: give {flags} to "
            "`mxsend queue run` (or the daemon) instead",
        )


def open_queue(queue_dir: str | None) -> DiskStore:
    """The queue at ``queue_dir`` (or the default one); a UserError when it cannot be used."""
    from mxsend.queue import DiskStore, QueueError, default_queue_dir

    try:
        return DiskStore(queue_dir or default_queue_dir())
    except QueueError as exc:
        raise UserError(Exit.CANTCREAT, str(exc)) from None


def queue_request(request: Request, queue_dir: str | None, *, as_json: bool) -> int:
    """Queue the request's messages in one durable commit; print their ids; exit 0 only once
    they are safe (75 when they could not be queued, and then nothing is)."""
    from mxsend.queue import QueueError, enqueue

    store = open_queue(queue_dir)
    try:
        ids = enqueue(store, request.messages, uid=os.getuid())
    except QueueError as exc:
        raise UserError(Exit.TEMPFAIL, str(exc)) from None
    store.wake()  # a daemon serving this queue delivers it now
    if as_json:
        json.dump({"queued": ids, "queue_dir": str(store.root)}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("".join(f"queued as {i}\n" for i in ids))
    return int(Exit.OK)
