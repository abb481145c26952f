"""The ``mxsend`` command line: ``send``, ``plan`` and ``demo``.

User errors print one line (``mxsend: ...``) and exit with a sysexits status; no traceback.
"""

from __future__ import annotations

import argparse
import email.parser
import email.utils
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mxsend import __version__
from mxsend._exits import Exit

__all__ = ["main"]


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
    send = commands.add_parser("send", help="deliver a message")
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
    plan = commands.add_parser("plan", help="show where mail would go, without sending")
    plan.add_argument("--to", action="append", default=[], required=True, metavar="ADDR")
    _routing_options(plan)
    demo = commands.add_parser("demo", help="deliver one message in an embedded local world")
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return parser  # fmt: skip


@dataclass
class _Request:
    messages: list[Any]
    options: Any
    dns: tuple[str, int] | None


def _read_message(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UserError(Exit.NOINPUT, f"cannot read {path}: {exc.strerror}") from None


def _header_recipients(content: bytes) -> tuple[list[str], bytes, str | None]:
    """Recipients from To, Cc and Bcc; the content without Bcc; the From address."""
    headers = email.parser.BytesHeaderParser().parsebytes(content)
    found = [
        address
        for _, address in email.utils.getaddresses(
            [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name, [])]
        )
        if address
    ]
    sender = email.utils.parseaddr(str(headers.get("from", "")))[1] or None
    return found, _strip_bcc(content), sender


def _strip_bcc(content: bytes) -> bytes:
    end = min((i for i in (content.find(b"\n\n"), content.find(b"\r\n\r\n")) if i >= 0), default=-1)
    head, body = (content, b"") if end < 0 else (content[:end], content[end:])
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):  # a new header; continuation lines follow theirs
            skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + body


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
        scan_body,
    )
    from mxsend.routing import TLSPolicy
    from mxsend.twisted import DeliveryOptions, Smarthost

    content = _read_message(args.message)
    recipients = list(args.to)
    sender = args.sender
    if args.from_headers or sender is None:
        found, stripped, header_sender = _header_recipients(content)
        if args.from_headers:
            recipients += found
            content = stripped
        if sender is None:
            sender = header_sender
    if not recipients:
        raise UserError(Exit.USAGE, "no recipients: give --to ADDR or -t")
    if sender is None:
        raise UserError(Exit.USAGE, "no sender: give --from ADDR (or a From header)")
    info = scan_body(content)
    if info.long_lines:
        raise UserError(Exit.DATAERR, "message has a line longer than 998 octets (RFC 5322 2.1.1)")
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
        trace=trace,
    )  # fmt: skip
    return _Request([Message(envelope, content)], delivery, args.dns)


async def _send(reactor: Any, request: _Request, as_json: bool) -> Exit:
    from mxsend._report import exit_status, format_human, format_json
    from mxsend.routing import DNSRouter, make_resolver
    from mxsend.twisted import Deliverer

    router = DNSRouter(make_resolver(request.dns, reactor), reactor)
    reports = await Deliverer(reactor, router, request.options).deliver(request.messages)
    (format_json if as_json else format_human)(reports, sys.stdout)
    return exit_status(r for m in reports for r in m.recipients)


async def _plan(reactor: Any, args: argparse.Namespace) -> Exit:
    from mxsend.protocol import Address, AddressError
    from mxsend.routing import DNSRouter, RouteError, TLSPolicy, make_resolver

    try:
        domains = sorted({Address.parse(a).domain.lower() for a in args.to})
    except AddressError as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    router = DNSRouter(make_resolver(args.dns, reactor), reactor)
    policy = (
        TLSPolicy(args.tls) if args.tls else TLSPolicy.VERIFY if args.smarthost else TLSPolicy.MAY
    )
    plans: list[dict[str, Any]] = []
    worst = Exit.OK
    for domain in [""] if args.smarthost else domains:
        entry: dict[str, Any] = {"domain": domain or None, "tls": policy.value}
        try:
            if args.smarthost:
                host, port = _host_port(args.smarthost, 587)
                entry["hosts"] = [
                    {
                        "name": host,
                        "preference": 0,
                        "port": port,
                        "addresses": list(await router.addresses(host)),
                    }
                ]
            else:
                entry["hosts"] = [
                    {"name": h.name, "preference": h.preference, "port": args.mx_port,
                     "addresses": list(h.addresses), "implicit": h.implicit}
                    for h in await router.mx_hosts(domain)
                ]  # fmt: skip
        except RouteError as failure:
            entry["error"] = {"code": failure.reply.code, "enhanced": str(failure.reply.enhanced),
                              "reply": failure.reply.text}  # fmt: skip
            worst = max(worst, Exit.TEMPFAIL if failure.reply.is_transient else Exit.UNAVAILABLE)
        plans.append(entry)
    if args.json:
        json.dump({"destinations": plans}, sys.stdout, indent=2)
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
    return worst


async def _demo(reactor: Any, as_json: bool) -> Exit:
    from mxsend._demo import run_demo
    from mxsend._report import exit_status, format_human, format_json

    def show(reports: Any, world: Any) -> Exit:
        (format_json if as_json else format_human)(reports, sys.stdout)
        return exit_status(r for m in reports for r in m.recipients)

    return await run_demo(reactor, show)


def run_in_reactor(job: Any) -> int:
    """Run ``job(reactor)`` (a coroutine function) in the reactor; return its exit status."""
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    status: list[int] = []

    async def main(reactor: Any) -> None:
        try:
            status.append(int(await job(reactor)))
        except UserError as exc:
            sys.stderr.write(f"mxsend: {exc}\n")
            status.append(int(exc.status))

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
    except SystemExit as done:
        if done.code not in (0, None):
            return int(Exit.SOFTWARE)
    return status[0] if status else int(Exit.SOFTWARE)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "send":
            request = _build_send(args)
            return run_in_reactor(lambda reactor: _send(reactor, request, args.json))
        if args.command == "plan":
            return run_in_reactor(lambda reactor: _plan(reactor, args))
        return run_in_reactor(lambda reactor: _demo(reactor, args.json))
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        return int(exc.status)
