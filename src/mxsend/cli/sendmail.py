"""``mxsend-sendmail``: the sendmail command line, for the programs that send mail by running
``sendmail`` (cron, mail(1), PHP's ``mail()``, git send-email).

Postfix's letter set. The message on standard input is made durable in the queue before
anything else: exit 0 once it is safe, 75 only when it could not be queued (and then nothing
is). Then, by default (``-odb``), the daemon serving the queue is woken, or when none does, a
one-shot ``mxsend queue run`` is started in the background; ``-odi`` runs it in the foreground
and ``-odq`` only queues. Under the name ``mailq`` it lists the queue (``-bp``); under
``newaliases`` it says there is nothing to rebuild.

On submission (RFC 5322) Date, Message-ID and From are added when missing, Bcc fields are
removed, and the header fields that carry addresses must parse (exit 65 naming the field);
the rest of the message is left as it was. A plain submission imports no Twisted.
"""

from __future__ import annotations

import email.message
import email.utils
import os
import pwd
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from mxsend._exits import Exit
from mxsend.cli._common import UserError

if TYPE_CHECKING:
    from mxsend.protocol import BodyInfo, Content

__all__ = ["SendmailArgs", "main", "parse"]

# Letters that take a value, attached (-fADDR) or as the next argument (-f ADDR).
_VALUED = set("BCFLNORVXfhr")
# Known sendmail letters with nothing to do here: accepted, and named on stderr with -v.
_IGNORED = set("GIUmn") | {"B", "C", "L", "O", "X", "h"}
_MODES = {"m": "deliver", "p": "list", "s": "smtp", "i": "newaliases"}
_DELIVERY = {"b": "background", "i": "interactive", "q": "queue", "d": "background"}
_ADDRESS_FIELDS = (
    "from", "sender", "reply-to", "to", "cc", "bcc",
    "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc",
)  # fmt: skip
_ADDR_SPEC = re.compile(r"[^\s<>@]+(?:@[^\s<>@]+)?")  # checked again as it is queued


@dataclass
class SendmailArgs:
    """What a sendmail command line asks for."""

    recipients: list[str] = field(default_factory=list)
    sender: str | None = None  #: -f/-r; "" is the null sender <>
    full_name: str | None = None  #: -F
    from_headers: bool = False  #: -t
    dot_ends: bool = True  #: a line with only "." ends the input, unless -i / -oi
    mode: str = "deliver"  #: -bm, -bp, -bs, -bi
    delivery: str = "background"  #: -odb, -odi, -odq
    run_queue: str | None = None  #: -q (""), -qR..., -qS...
    notify: str | None = None  #: -N
    ret: str | None = None  #: -R
    envid: str | None = None  #: -V
    verbose: bool = False
    ignored: list[str] = field(default_factory=list)


def parse(argv: Sequence[str]) -> SendmailArgs:
    """The sendmail command line ``argv`` (without the program name), as getopt reads it;
    a UserError (64) for an unknown letter or a missing value."""
    args = SendmailArgs()
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if word == "--":
            args.recipients += rest
            break
        if not word.startswith("-") or word == "-":
            args.recipients.append(word)
            continue
        cluster = word[1:]
        while cluster:
            letter, cluster = cluster[0], cluster[1:]
            if letter in _VALUED:
                if not cluster:
                    if not rest:
                        raise UserError(Exit.USAGE, f"option -{letter} needs a value")
                    cluster = rest.pop(0)
                _valued(args, letter, cluster)
                break
            if letter == "o":
                _option(args, cluster)
                break
            if letter == "b":
                if cluster[:1] not in _MODES:
                    raise UserError(Exit.USAGE, f"-b{cluster[:1]}: mode not supported")
                args.mode = _MODES[cluster[:1]]
                cluster = cluster[1:]
            elif letter == "q":
                args.run_queue = cluster
                break
            elif letter == "t":
                args.from_headers = True
            elif letter == "i":
                args.dot_ends = False
            elif letter == "v":
                args.verbose = True
            elif letter in _IGNORED:
                args.ignored.append(f"-{letter}")
            else:
                raise UserError(Exit.USAGE, f"unknown option -{letter}")
    return args


def _valued(args: SendmailArgs, letter: str, value: str) -> None:
    if letter in ("f", "r"):
        # cron and others pass -f '<>' (or "") for the null sender; <addr> is addr.
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        if "<" in value or ">" in value:
            raise UserError(Exit.DATAERR, f"-{letter} {value!r} is not an address")
        args.sender = value
    elif letter == "F":
        if not value.isprintable():  # a CR or LF would start a header field of its own
            raise UserError(Exit.USAGE, "-F: the full name must be one line of printable text")
        args.full_name = value
    elif letter == "N":
        args.notify = value
    elif letter == "R":
        args.ret = value
    elif letter == "V":
        args.envid = value
    else:
        args.ignored.append(f"-{letter} {value}")


def _option(args: SendmailArgs, option: str) -> None:
    """``-oX...``: -oi (dots), -od[biq] (delivery mode); the rest (-oem, -oA...) ignored."""
    if option == "i":
        args.dot_ends = False
    elif option[:1] == "d" and option[1:2] in _DELIVERY:
        args.delivery = _DELIVERY[option[1:2]]
    else:
        args.ignored.append(f"-o{option}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run as sendmail (or as ``mailq``/``newaliases``, by the name it is called by)."""
    argv = sys.argv if argv is None else argv
    name = os.path.basename(argv[0]) if argv else "sendmail"
    try:
        return _run(name, argv[1:])
    except UserError as exc:
        sys.stderr.write(f"{name}: {exc}\n")
        return int(exc.status)
    except KeyboardInterrupt:
        return int(Exit.TEMPFAIL)


def _run(name: str, argv: Sequence[str]) -> int:
    if name == "newaliases":
        return _newaliases()
    args = parse(argv)
    if name == "mailq":
        args.mode = "list"
    if args.verbose and args.ignored:
        sys.stderr.write(f"mxsend: ignored: {' '.join(args.ignored)}\n")
    if args.mode == "newaliases":
        return _newaliases()
    if args.mode == "list":
        return _mxsend(["queue", "list"])
    if args.mode == "smtp":
        raise UserError(Exit.USAGE, "-bs (SMTP on standard input) is not supported yet")
    if args.run_queue is not None:
        if args.run_queue:
            raise UserError(Exit.USAGE, f"-q{args.run_queue}: only -q (every entry) works")
        return _mxsend(["queue", "run"])
    return submit(args, sys.stdin.buffer if sys.stdin is not None else None)


def _newaliases() -> int:
    sys.stderr.write("newaliases: mxsend keeps no alias database; nothing to rebuild\n")
    return int(Exit.OK)


def _mxsend(command: list[str]) -> int:
    from mxsend.cli import main as mxsend_main

    return mxsend_main(command)


def submit(args: SendmailArgs, stdin: BinaryIO | None) -> int:
    """Queue the message on ``stdin`` durably, then have it delivered as ``args.delivery``
    says; 0 once it is safe."""
    from mxsend.cli._common import dsn_options, message_error
    from mxsend.cli.send import local_name, open_queue
    from mxsend.message import (
        MessageError,
        content_of,
        header_fields,
        read_header_block,
        spool,
        strip_bcc,
    )
    from mxsend.protocol import AddressError, Body, Envelope, MailOptions, Message, ParameterError
    from mxsend.queue import QueueError, enqueue

    if stdin is None:
        raise UserError(Exit.NOINPUT, "no standard input to read the message from")
    try:
        # Without -i, a line holding only "." ends the input (sendmail's old rule).
        file = spool(stdin, "standard input", until_dot=args.dot_ends)
        head = read_header_block(file, "standard input")
        headers = header_fields(head)
        _check_addresses(headers)
        host = local_name()
        # A bare local name gets this host's name, as Postfix appends myorigin.
        sender = _own_address(host) if args.sender is None else _qualified(args.sender, host)
        recipients = [_qualified(r, host) for r in args.recipients]
        if args.from_headers:
            recipients += [_qualified(r, host) for r in _header_recipients(headers)]
        if not recipients:
            raise UserError(Exit.USAGE, "no recipients: give them as arguments, or -t")
        added = _fix_ups(headers, sender or _own_address(host), args.full_name, host)
        # The fields as they were, without Bcc; an empty line before the body if none did.
        kept = strip_bcc(head) + (b"" if _ends_with_empty_line(head) else b"\r\n")
        content = content_of(file, None, added + kept, len(head))
        content, info = _folded(content)
        notify, ret = dsn_options(args.notify, args.ret, "-N/-R")
        options = MailOptions(
            size=info.size,
            body=Body.EIGHT_BIT_MIME if info.eight_bit else None,
            ret=ret,
            envid=args.envid,
        )
        envelope = Envelope.build(sender or None, recipients, options, notify)
    except MessageError as exc:
        raise message_error(exc) from None
    except (AddressError, ParameterError) as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    try:
        store = open_queue(None)
    except UserError as exc:
        raise UserError(Exit.TEMPFAIL, str(exc)) from None  # not queued: the caller retries
    try:
        [queue_id] = enqueue(store, Message(envelope, content), uid=os.getuid())
    except QueueError as exc:
        raise UserError(Exit.TEMPFAIL, str(exc)) from None
    # Safe now: whatever happens next, the exit status is 0 (never 75 for a queued message,
    # which the caller would send again).
    try:
        if args.verbose:
            sys.stderr.write(f"mxsend: queued as {queue_id}\n")
        woken = args.delivery != "queue" and store.wake()
        _start_delivery(store.root, args.delivery, woken=woken)
    except (OSError, KeyboardInterrupt) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "interrupted"
        sys.stderr.write(f"sendmail: queued as {queue_id}; delivery not started ({why})\n")
    return int(Exit.OK)


def _folded(content: Content) -> tuple[Content, BodyInfo]:
    """``content``, or when a line is over 998 octets (RFC 5322 2.1.1), a copy with each such
    line broken by CRLF SP, as Postfix does on output: mail from cron is not lost for one
    long line of output. Read in chunks, never whole."""
    from mxsend.message import SpoolError, UnreadableMessageError, scan
    from mxsend.protocol import BodyEncoder, Content, ContentError, LinePolicy

    try:
        info = content.scan()
        if not info.long_lines:
            return content, info
        copy = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the content
        encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
        for chunk in content.chunks():
            copy.write(encoder.encode(chunk))
        copy.write(encoder.finish())
    except ContentError as exc:
        raise UnreadableMessageError(str(exc)) from None
    except OSError as exc:
        raise SpoolError(f"cannot spool standard input: {exc.strerror}") from None
    copy.seek(0)
    folded = Content.from_file(copy)
    return folded, scan(folded)


def _own_address(host: str) -> str:
    """This user at this host: the sender when -f gives none. A uid with no passwd entry (a
    container's) goes by $LOGNAME or $USER, else by its number."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = os.environ.get("LOGNAME") or os.environ.get("USER") or str(uid)
    return f"{user}@{host}"


def _ends_with_empty_line(head: bytes) -> bool:
    return re.split(rb"\r\n|\r|\n", head)[-2:] == [b"", b""]


def _start_delivery(queue_dir: os.PathLike[str], delivery: str, *, woken: bool) -> None:
    """-odq: nothing; a daemon was woken: nothing more; else a one-shot ``mxsend queue run``,
    in the background (-odb) or waited for (-odi)."""
    if delivery == "queue" or woken:
        return
    command = [sys.executable, "-m", "mxsend", "queue", "run", "--queue-dir", str(queue_dir)]
    if delivery == "interactive":
        subprocess.run(command, check=False, stdin=subprocess.DEVNULL)
    else:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command, as a sendmail's delivery does
        )


def _qualified(address: str, host: str) -> str:
    return address if "@" in address or not address else f"{address}@{host}"


def _addresses(headers: email.message.Message, name: str) -> list[str]:
    """The addresses in every ``name`` field: each an addr-spec, or a bare local name (the
    caller qualifies it); a UserError (65) naming the field when one is neither."""
    found = []
    try:
        values = headers.get_all(name, [])
        parsed_values = [getattr(value, "addresses", None) for value in values]
    except Exception:  # the email package's parser raises on some broken fields
        raise UserError(Exit.DATAERR, f"header {name.title()}: cannot be parsed") from None
    for parsed in parsed_values:
        if parsed is None or (not parsed and name in ("from", "sender")):
            raise UserError(Exit.DATAERR, f"header {name.title()}: not a list of addresses")
        for address in parsed:
            if not _ADDR_SPEC.fullmatch(address.addr_spec):
                raise UserError(
                    Exit.DATAERR, f"header {name.title()}: {address.addr_spec!r} is not an address"
                )
            found.append(address.addr_spec)
    return found


def _check_addresses(headers: email.message.Message) -> None:
    """Each field that carries addresses must hold some (RFC 5322 3.6.2, 3.6.3); a group
    such as "undisclosed-recipients:;" may be empty."""
    for name in _ADDRESS_FIELDS:
        _addresses(headers, name)


def _header_recipients(headers: email.message.Message) -> list[str]:
    """To, Cc and Bcc; or Resent-To, Resent-Cc and Resent-Bcc when the message was resent
    (RFC 5322 3.6.6)."""
    names = ("to", "cc", "bcc")
    if any(headers.get_all(f"resent-{n}") for n in names):
        names = ("resent-to", "resent-cc", "resent-bcc")
    return [address for n in names for address in _addresses(headers, n)]


def _fix_ups(
    headers: email.message.Message, sender: str, full_name: str | None, host: str
) -> bytes:
    """The fields to put first: From, Date and Message-ID, each when it is missing."""
    added = []
    if headers.get("from") is None:
        added.append(f"From: {email.utils.formataddr((full_name or '', sender))}")
    if headers.get("date") is None:
        added.append(f"Date: {email.utils.formatdate(localtime=True)}")
    if headers.get("message-id") is None:
        added.append(f"Message-ID: {email.utils.make_msgid(domain=host)}")
    return "".join(f"{line}\r\n" for line in added).encode("utf-8")
