"""The ``mxsend`` command line: ``send``, ``plan`` and ``demo``.

User errors print one line (``mxsend: ...``) and exit with a sysexits status; no traceback.
"""

from __future__ import annotations

import argparse
import email.parser
import email.utils
import json
import os
import re
import socket
import stat
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from mxsend import __version__
from mxsend._exits import Exit

if TYPE_CHECKING:
    from mxsend.protocol import BodyInfo, Content
    from mxsend.twisted import Timeouts

__all__ = ["main"]

#: Octets copied from standard input at a time into the spool file.
_SPOOL_CHUNK = 65536
#: The most header block read to find recipients and From; the body is never read for them.
MAX_HEADER_OCTETS = 1024 * 1024
_HEADER_BLOCK = 8192  # read a header block this much at a time
_LINE_END = re.compile(rb"\r\n|\r|\n")  # as BodyEncoder ends lines


class UserError(Exception):
    """A problem with what the user asked for: one line, and an exit status."""

    def __init__(self, status: Exit, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and sysexits' EX_USAGE, not argparse's exit status 2.
        sys.stderr.write(f"mxsend: {message}\n")
        raise SystemExit(Exit.USAGE)


def _host_port(text: str, default_port: int) -> tuple[str, int]:
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


def _dns_server(text: str) -> tuple[str, int]:
    return _host_port(text, 53)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _timeout_spec(text: str) -> str:
    """One ``STAGE=SECONDS`` setting, checked here so a bad one is a usage error (64)."""
    from mxsend.twisted import Timeouts

    try:
        Timeouts().with_specs([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _timeouts(specs: Sequence[str]) -> Timeouts:
    from mxsend.twisted import Timeouts

    try:
        return Timeouts().with_specs(specs)
    except ValueError as exc:  # each was checked on parsing; kept for callers that did not
        raise UserError(Exit.USAGE, f"--timeout: {exc}") from None


def _timeouts_help() -> str:
    from mxsend.twisted import STAGES

    rows = "\n".join(
        f"  {stage:<9} {seconds:>4g}s  {what}" for stage, (seconds, what) in STAGES.items()
    )
    return (
        "timeouts (--timeout STAGE=SECONDS, repeatable, applied in order; all=N sets every\n"
        "stage). Each is a deadline from the start of the stage; the defaults follow RFC 5321\n"
        "4.5.3.2 for replies and Postfix for the rest:\n"
        f"{rows}"
    )


_EXIT_HELP = """\
exit status: 0 all delivered, 75 some deferred (try again later), 69 every failure
permanent, 64 usage, 65 bad message or address, 66 message unreadable, 78 bad
configuration, 70 internal error."""


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        type=_timeout_spec,
        metavar="STAGE=SECONDS",
        help="deadline for a stage of the session (repeatable; all=N; stages below)",
    )


def _routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns",
        type=_dns_server,
        metavar="HOST:PORT",
        help="ask this DNS server (default: /etc/resolv.conf)",
    )
    parser.add_argument(
        "--mx-port",
        type=_port,
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxsend", description="Outbound e-mail delivery, built on Twisted.")
    parser.add_argument("--version", action="version", version=f"mxsend {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    send = commands.add_parser(
        "send",
        help="deliver a message",
        description="Deliver one message, read as it is sent (never whole into memory).",
        epilog=f"{_timeouts_help()}\n\n{_EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument(
        "message",
        nargs="?",
        default="-",
        metavar="MESSAGE",
        help="RFC 5322 message file, or - for standard input (default)",
    )
    send.add_argument(
        "--from",
        dest="sender",
        metavar="ADDR",
        help="envelope sender (default: the From header); '' for <>",
    )
    send.add_argument("--to", action="append", default=[], metavar="ADDR", help="a recipient")
    send.add_argument(
        "-t",
        action="store_true",
        dest="from_headers",
        help="also take recipients from To, Cc and Bcc (Bcc is removed)",
    )
    _routing_options(send)
    _timeout_option(send)
    send.add_argument("--helo", metavar="NAME", help="name to give in EHLO (default: FQDN)")
    send.add_argument("--cafile", metavar="FILE", help="also trust this CA (PEM)")
    send.add_argument("--auth-user", metavar="USER", help="AUTH user for the smarthost")
    send.add_argument(
        "--auth-password-file",
        metavar="FILE",
        help="file holding the AUTH password (else $MXSEND_PASSWORD)",
    )
    send.add_argument(
        "--allow-cleartext-auth",
        action="store_true",
        help="allow AUTH on an unencrypted channel (e.g. to localhost)",
    )
    send.add_argument(
        "--no-chunking",
        action="store_true",
        help="send with DATA even when the server offers BDAT (CHUNKING)",
    )
    send.add_argument("--notify", metavar="LIST", help="DSN NOTIFY: never or success,failure,delay")
    send.add_argument("--ret", choices=["full", "hdrs"], help="DSN RET")
    send.add_argument("--envid", metavar="ID", help="DSN envelope identifier")
    send.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="write the SMTP transcript to stderr (credentials redacted)",
    )
    plan = commands.add_parser(
        "plan",
        help="show where mail would go, without sending",
        description="Show where mail would go and the deadlines that would apply; send nothing.",
        epilog=_timeouts_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument("--to", action="append", default=[], required=True, metavar="ADDR")
    _routing_options(plan)
    _timeout_option(plan)
    demo = commands.add_parser("demo", help="deliver one message in an embedded local world")
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser  # fmt: skip


@dataclass
class _Request:
    messages: list[Any]
    options: Any
    dns: tuple[str, int] | None


@dataclass
class _Prepared:
    """A message ready to send: its content (a file streamed in chunks, never whole in
    memory), and what its header block says when it was asked."""

    content: Content
    recipients: list[str]  #: To, Cc and Bcc, when the header block was read
    sender: str | None  #: the From address, when the header block was read


def _prepare_message(name: str, *, read_headers: bool, strip_bcc: bool) -> _Prepared:
    """The message at ``name`` (a path, or ``-`` for standard input) as streaming content.

    Only the header block is ever read here, and only when ``read_headers``: for recipients
    and From. With ``strip_bcc`` the content is the header block without Bcc fields followed
    by the file's bytes after the original header block, untouched."""
    file, path = _open_message(name)
    try:
        head = _read_header_block(file, name) if read_headers else b""
        recipients, sender = _header_recipients(head) if read_headers else ([], None)
        prefix = _strip_bcc(head) if strip_bcc else head
        if prefix == head:  # nothing removed: send the file as it is
            prefix, offset = b"", 0
        else:
            offset = len(head)
        return _Prepared(_content_of(file, path, prefix, offset), recipients, sender)
    finally:
        if path is not None:
            file.close()  # the content opens the path again for each read


def _open_message(name: str) -> tuple[BinaryIO, str | None]:
    """An open binary file at its start, and the path to read it again by.

    A regular file is read from its path; standard input, a pipe or a device can be read
    only once, so it is first copied to an anonymous temporary file (path None)."""
    if name == "-":
        return _spool(sys.stdin.buffer, "standard input"), None
    try:
        file = open(name, "rb")  # noqa: SIM115 - closed by the caller or below
    except OSError as exc:
        raise UserError(Exit.NOINPUT, f"cannot read {name}: {exc.strerror}") from None
    try:
        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return file, name
        with file:
            return _spool(file, name), None
    except OSError as exc:
        file.close()
        raise UserError(Exit.NOINPUT, f"cannot read {name}: {exc.strerror}") from None


def _spool(source: BinaryIO, name: str) -> BinaryIO:
    """``source`` copied, a chunk at a time, to an anonymous temporary file (mode 0600,
    already unlinked); returned positioned at its start."""
    try:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the content
    except OSError as exc:
        raise UserError(Exit.TEMPFAIL, f"cannot spool {name}: {exc.strerror}") from None
    while True:
        try:
            chunk = source.read(_SPOOL_CHUNK)
        except OSError as exc:
            spool.close()
            raise UserError(Exit.NOINPUT, f"cannot read {name}: {exc.strerror}") from None
        if not chunk:
            break
        try:
            spool.write(chunk)
        except OSError as exc:
            spool.close()
            raise UserError(Exit.TEMPFAIL, f"cannot spool {name}: {exc.strerror}") from None
    spool.seek(0)
    return spool


def _read_header_block(file: BinaryIO, name: str) -> bytes:
    """The header block from ``file``'s position, as it is in the file: every line up to and
    including the first empty one, or the whole file when it has none. Lines end as the
    encoder ends them (CRLF, LF or a bare CR), so no header can hide behind a bare CR. Reads
    in small blocks, at most :data:`MAX_HEADER_OCTETS` and a block."""
    data = bytearray()
    line_start = 0
    while True:
        try:
            block = file.read(_HEADER_BLOCK)
        except OSError as exc:
            raise UserError(Exit.NOINPUT, f"cannot read {name}: {exc.strerror}") from None
        data += block
        end, line_start = _header_end(data, line_start, eof=not block)
        if end is None and not block:
            end = len(data)  # only headers
        if end is not None and end <= MAX_HEADER_OCTETS:
            return bytes(data[:end])
        if len(data) > MAX_HEADER_OCTETS:
            raise UserError(
                Exit.DATAERR,
                f"message header block is longer than {MAX_HEADER_OCTETS >> 20} MiB "
                "(no empty line ends it)",
            )


def _header_end(data: bytearray, line_start: int, *, eof: bool) -> tuple[int | None, int]:
    """Where the empty line that ends the header block ends, if ``data`` holds it, and where
    the line being read starts, to go on from there when more data comes."""
    for match in _LINE_END.finditer(data, line_start):
        if match.group() == b"\r" and match.end() == len(data) and not eof:
            return None, line_start  # a CR at the end may be the first half of a CRLF
        if match.start() == line_start:
            return match.end(), line_start
        line_start = match.end()
    return None, line_start


def _canonical_lines(head: bytes) -> bytes:
    """``head`` with every line ending (CRLF, bare LF, bare CR) made one LF."""
    return head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _header_recipients(head: bytes) -> tuple[list[str], str | None]:
    """Recipients from To, Cc and Bcc, and the From address, of a header block."""
    # The parser splits lines as the encoder does only once every line ends in LF.
    headers = email.parser.BytesHeaderParser().parsebytes(_canonical_lines(head))
    found = [
        address
        for _, address in email.utils.getaddresses(
            [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name, [])]
        )
        if address
    ]
    sender = email.utils.parseaddr(str(headers.get("from", "")))[1] or None
    return found, sender


def _strip_bcc(message: bytes) -> bytes:
    """``message`` (a header block, or a whole message) without its Bcc fields, their
    continuation lines included; nothing from the first empty line on is changed. Lines end
    as the encoder ends them (CRLF, LF, bare CR). With nothing to remove, ``message`` comes
    back as it was; else the header lines end in CRLF, so that no ending left next to a
    removed line can join the one after it (a CR and the empty line's LF would)."""
    kept: list[bytes] = []
    skipping = removed = False
    start = 0
    rest = b""
    for match in _LINE_END.finditer(message):
        text, start = message[start : match.start()], match.end()
        if not text:  # the empty line that ends the header block
            rest = message[match.start() :]
            break
        if text[:1] not in (b" ", b"\t"):  # a new field; continuation lines follow theirs
            skipping = text.lower().startswith(b"bcc:")
        if skipping:
            removed = True
        else:
            kept.append(text)
    else:
        text = message[start:]  # a last line with no ending
        if text and not (
            (text[:1] in (b" ", b"\t") and skipping) or text.lower().startswith(b"bcc:")
        ):
            kept.append(text)
        elif text:
            removed = True
    if not removed:
        return message
    return b"".join(line + b"\r\n" for line in kept) + rest


def _content_of(file: BinaryIO, path: str | None, prefix: bytes, offset: int) -> Content:
    from mxsend.protocol import Content

    if path is not None:
        return Content.from_path(path, prefix=prefix, offset=offset)
    file.seek(offset)  # a spool file is read from here (after the header block) on every send
    return Content.from_file(file, prefix=prefix)


def _scan(content: Content) -> BodyInfo:
    """One streaming pass over the content, for SIZE, BODY=8BITMIME and long lines."""
    from mxsend.protocol import ContentError

    try:
        info = content.scan()
    except ContentError as exc:
        raise UserError(Exit.NOINPUT, str(exc)) from None
    if info.long_lines:
        raise UserError(Exit.DATAERR, "message has a line longer than 998 octets (RFC 5322 2.1.1)")
    return info


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
    from mxsend.protocol import AddressError, validate_domain

    name = args.helo or socket.getfqdn()
    try:
        validate_domain(name)
    except AddressError:
        if args.helo:
            raise UserError(Exit.USAGE, f"--helo {args.helo!r} is not a valid domain") from None
        return "localhost"
    return name


def _build_send(args: argparse.Namespace) -> _Request:
    from mxsend.protocol import (
        AddressError,
        Body,
        Envelope,
        MailOptions,
        Message,
        Notify,
        ParameterError,
        Plain,
        RcptOptions,
        Ret,
    )
    from mxsend.routing import TLSPolicy
    from mxsend.twisted import DeliveryOptions, Smarthost

    timeouts = _timeouts(args.timeout)
    prepared = _prepare_message(
        args.message,
        read_headers=args.from_headers or args.sender is None,
        strip_bcc=args.from_headers,
    )
    recipients = list(args.to) + (prepared.recipients if args.from_headers else [])
    sender = prepared.sender if args.sender is None else args.sender
    if not recipients:
        raise UserError(Exit.USAGE, "no recipients: give --to ADDR or -t")
    if sender is None:
        raise UserError(Exit.USAGE, "no sender: give --from ADDR (or a From header)")
    info = _scan(prepared.content)
    try:
        notify = (
            frozenset(Notify(n.strip().upper()) for n in args.notify.split(","))
            if args.notify
            else frozenset()
        )
        options = MailOptions(
            size=info.size,
            body=Body.EIGHT_BIT_MIME if info.eight_bit else None,
            ret=Ret(args.ret.upper()) if args.ret else None,
            envid=args.envid,
        )
        envelope = Envelope.build(sender, recipients, options, RcptOptions(notify))
    except (AddressError, ParameterError) as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    except ValueError as exc:
        raise UserError(Exit.USAGE, f"--notify: {exc}") from None
    smarthost = None
    if args.smarthost:
        try:
            host, port = _host_port(args.smarthost, 587)
        except argparse.ArgumentTypeError as exc:
            raise UserError(Exit.USAGE, f"--smarthost: {exc}") from None
        mechanism = Plain(args.auth_user, _password(args)) if args.auth_user else None
        smarthost = Smarthost(host, port, mechanism)
    elif args.auth_user:
        raise UserError(Exit.USAGE, "--auth-user needs --smarthost")
    if args.cafile and not os.access(args.cafile, os.R_OK):
        raise UserError(Exit.CONFIG, f"cannot read --cafile {args.cafile}")
    trace = None
    if args.verbose:

        def trace(direction: str, line: str) -> None:
            sys.stderr.write(f"{direction}: {line}\n")

    delivery = DeliveryOptions(
        _helo_name(args),
        mx_port=args.mx_port,
        tls=TLSPolicy(args.tls) if args.tls else None,
        cafile=args.cafile,
        smarthost=smarthost,
        allow_cleartext_auth=args.allow_cleartext_auth,
        chunking=not args.no_chunking,
        timeouts=timeouts,
        trace=trace,
    )  # fmt: skip
    return _Request([Message(envelope, prepared.content)], delivery, args.dns)


async def _send(reactor: Any, request: _Request, as_json: bool) -> Exit:
    from mxsend._report import exit_status, format_human, format_json
    from mxsend.routing import DNSRouter, make_resolver
    from mxsend.twisted import Deliverer

    # A file that changes after its scan is reported per recipient by the adapter, not raised.
    router = DNSRouter(make_resolver(request.dns, reactor), reactor)
    reports = await Deliverer(reactor, router, request.options).deliver(request.messages)
    (format_json if as_json else format_human)(reports, sys.stdout)
    return exit_status(r for m in reports for r in m.recipients)


async def _plan(reactor: Any, args: argparse.Namespace) -> Exit:
    from mxsend.protocol import Address, AddressError
    from mxsend.routing import DNSRouter, RouteError, TLSPolicy, make_resolver
    from mxsend.twisted import Deliverer, DeliveryOptions, Smarthost

    timeouts = _timeouts(args.timeout).as_dict()
    try:
        domains = sorted({Address.parse(a).domain.lower() for a in args.to})
    except AddressError as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    smarthost = None
    if args.smarthost:
        try:
            smarthost = Smarthost(*_host_port(args.smarthost, 587))
        except argparse.ArgumentTypeError as exc:
            raise UserError(Exit.USAGE, f"--smarthost: {exc}") from None
    options = DeliveryOptions(
        "localhost",
        mx_port=args.mx_port,
        tls=TLSPolicy(args.tls) if args.tls else None,
        smarthost=smarthost,
    )
    # The very routes delivery would take: the same code decides them.
    deliverer = Deliverer(reactor, DNSRouter(make_resolver(args.dns, reactor), reactor), options)
    plans: list[dict[str, Any]] = []
    worst = Exit.OK
    for domain in [""] if smarthost else domains:
        entry: dict[str, Any] = {"domain": domain or None}
        try:
            route = await deliverer.route(domain)
        except RouteError as failure:
            entry["tls"] = options.tls_policy.value
            entry["error"] = {"code": failure.reply.code, "enhanced": str(failure.reply.enhanced),
                              "reply": failure.reply.text}  # fmt: skip
            worst = max(worst, Exit.TEMPFAIL if failure.reply.is_transient else Exit.UNAVAILABLE)
        else:
            entry["tls"] = route.tls.value
            entry["tls_source"] = route.source.value
            entry["hosts"] = [
                {"name": h.name, "preference": h.preference, "port": route.port,
                 "addresses": list(h.addresses), "implicit": h.implicit}
                for h in route.hosts
            ]  # fmt: skip
        plans.append(entry)
    if args.json:
        json.dump({"destinations": plans, "timeouts": timeouts}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in plans:
            sys.stdout.write(f"{entry['domain'] or 'smarthost'} (tls {entry['tls']}):\n")
            if "error" in entry:
                error = entry["error"]
                sys.stdout.write(f"  no route: {error['code']} {error['reply']}\n")
            for host in entry.get("hosts", []):
                addresses = ", ".join(host["addresses"])
                sys.stdout.write(
                    f"  {host['preference']:>3} {host['name']}:{host['port']} [{addresses}]\n"
                )
        deadlines = ", ".join(f"{stage} {seconds:g}s" for stage, seconds in timeouts.items())
        sys.stdout.write(f"timeouts: {deadlines}\n")
    return worst


async def _demo(reactor: Any, as_json: bool) -> Exit:
    from mxsend._demo import run_demo
    from mxsend._report import exit_status, format_human, format_json

    def show(reports: Any, world: Any) -> Exit:
        (format_json if as_json else format_human)(reports, sys.stdout)
        return exit_status(r for m in reports for r in m.recipients)

    return await run_demo(reactor, show)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    try:
        if args.command == "send":
            request = _build_send(args)
            return run_in_reactor(
                lambda reactor: _send(reactor, request, args.json), verbose=verbose
            )
        if args.command == "plan":
            return run_in_reactor(lambda reactor: _plan(reactor, args))
        return run_in_reactor(lambda reactor: _demo(reactor, args.json))
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        return int(exc.status)
    except Exception as exc:
        return internal_error(exc, verbose=verbose)
