"""The sendmail front end's full path: any message, with every check of ``mxsend.message`` and
the protocol core, queued through :class:`mxsend.queue.DiskStore`.

:mod:`mxsend.cli.sendmail` comes here when its lean path (:mod:`mxsend.cli._drop`) does not
take a message; both give the same entry for a message the lean path takes.
"""

from __future__ import annotations

import email.message
import email.utils
import os
import re
from typing import TYPE_CHECKING, BinaryIO

from mxsend._exits import Exit
from mxsend.cli._common import UserError
from mxsend.cli._drop import NO_REWRITE, UNDISCLOSED, Rewrite, qualified

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mxsend.cli._drop import Settings
    from mxsend.cli.sendmail import SendmailArgs
    from mxsend.config import Config
    from mxsend.dkim import DkimKey
    from mxsend.protocol import Message

__all__ = ["load_settings", "prepare", "signing", "submit", "submit_request"]

_ADDRESS_FIELDS = (
    "from", "sender", "reply-to", "to", "cc", "bcc",
    "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc",
)  # fmt: skip
_ADDR_SPEC = re.compile(r"[^\s<>@]+(?:@[^\s<>@]+)?")  # checked again as it is queued


def submit(
    args: SendmailArgs,
    stdin: BinaryIO,
    *,
    host: str,
    own_address: str,
    rewrite: Rewrite = NO_REWRITE,
    signing: Callable[[str], Sequence[DkimKey]] | None = None,
) -> str:
    """Queue the message on ``stdin`` durably; its queue id. A UserError when it cannot be:
    65 for a bad message or address, 75 when the queue cannot take it (nothing queued)."""
    from mxsend.cli.send import open_queue
    from mxsend.queue import QueueError, enqueue

    message, file = prepare(
        args, stdin, host=host, own_address=own_address, rewrite=rewrite, signing=signing
    )
    try:
        store = open_queue(args.queue_dir)
    except UserError as exc:
        file.close()
        raise UserError(Exit.TEMPFAIL, str(exc)) from None  # not queued: the caller retries
    try:
        [queue_id] = enqueue(store, message, uid=os.getuid())
    except QueueError as exc:
        raise UserError(Exit.TEMPFAIL, str(exc)) from None
    finally:
        store.close()
        file.close()
    return queue_id


def prepare(
    args: SendmailArgs,
    stdin: BinaryIO,
    *,
    host: str,
    own_address: str,
    rewrite: Rewrite = NO_REWRITE,
    signing: Callable[[str], Sequence[DkimKey]] | None = None,
) -> tuple[Message, BinaryIO]:
    """The message on ``stdin`` as it is to be queued, and the spool file its content reads
    (the caller closes it); a UserError (65, 66, 75) when it cannot be. ``signing`` gives
    the DKIM keys of a sender domain (the From field's): with some, the message is stored
    with CRLF line ends and signed over exactly those bytes."""
    from mxsend.cli._common import message_error
    from mxsend.message import MessageError, spool

    try:
        # Without -i, a line holding only "." ends the input (sendmail's old rule).
        file = spool(stdin, "standard input", until_dot=args.dot_ends)
    except MessageError as exc:
        raise message_error(exc) from None
    try:
        message = _prepared(
            args, file, host=host, own_address=own_address, rewrite=rewrite, signing=signing
        )
    except BaseException:
        file.close()
        raise
    return message, file


def _prepared(
    args: SendmailArgs,
    file: BinaryIO,
    *,
    host: str,
    own_address: str,
    rewrite: Rewrite,
    signing: Callable[[str], Sequence[DkimKey]] | None,
) -> Message:
    from mxsend.cli._common import dsn_options, message_error
    from mxsend.message import (
        MessageError,
        content_of,
        ends_with_empty_line,
        folded,
        header_fields,
        read_header_block,
        signed,
        strip_bcc,
    )
    from mxsend.protocol import (
        Address,
        AddressError,
        Envelope,
        MailOptions,
        Message,
        ParameterError,
    )

    try:
        head = read_header_block(file, "standard input")
        headers = header_fields(head)
        _check_addresses(headers)
        # A bare local name gets this host's name (or the config's domain), as Postfix
        # appends myorigin.
        try:
            Address.parse(own_address)
        except AddressError:
            raise UserError(
                Exit.DATAERR,
                f"this user's address {own_address!r} is not one: give -f, or set the sender",
            ) from None
        origin = rewrite.domain or host
        given = own_address if args.sender is None else qualified(args.sender, origin)
        sender = rewrite.sender(given)
        recipients = [qualified(r, origin) for r in args.recipients]
        if args.from_headers:
            recipients += [qualified(r, origin) for r in _header_recipients(headers)]
        if not recipients:
            raise UserError(Exit.USAGE, "no recipients: give them as arguments, or -t")
        added = _fix_ups(headers, sender or rewrite.sender(own_address), args.full_name, host)
        if rewrite.undisclosed and headers.get("to") is None and headers.get("cc") is None:
            added += UNDISCLOSED
        # The fields as they were, without Bcc; an empty line before the body if none did.
        kept = strip_bcc(head) + (b"" if ends_with_empty_line(head) else b"\r\n")
        content = content_of(file, None, added + kept, len(head))
        keys = signing(_author_domain(headers, sender or own_address)) if signing else ()
        content, info = signed(content, keys) if keys else folded(content)
        notify, ret = dsn_options(args.notify, args.ret, "-N/-R")
        # A message taken with SMTPUTF8 (-bs) goes on with it (RFC 6531 3.2).
        options = MailOptions.for_content(info, ret=ret, envid=args.envid, smtputf8=args.smtputf8)
        envelope = Envelope.build(sender or None, recipients, options, notify)
    except MessageError as exc:
        raise message_error(exc) from None
    except (AddressError, ParameterError) as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    return Message(envelope, content)


def _author_domain(headers: email.message.Message, sender: str) -> str:
    """The domain DKIM signs for: the From field's (RFC 6376 and DMARC's alignment), or the
    sender's when a From is added."""
    found = _addresses(headers, "from")
    address = found[0] if found else sender
    return address.rpartition("@")[2]


def _addresses(headers: email.message.Message, name: str) -> list[str]:
    """The addresses in every ``name`` field: each an addr-spec, or a bare local name (the
    caller qualifies it); a UserError (65) naming the field when one is neither."""
    found = []
    try:
        values = headers.get_all(name, [])
        parsed_values = [getattr(value, "addresses", None) for value in values]
    except Exception:  # the email package's parser raises on some broken fields
        raise UserError(Exit.DATAERR, f"header {name.title()}: cannot be parsed") from None
    # The field as written: an address must be in it literally, so that an RFC 2047
    # encoded-word the parser decodes (=?utf-8?q?evil?=@y.test) never names a recipient.
    raw = " ".join(v for k, v in headers.raw_items() if k.lower() == name)
    raw = raw.replace("\r", "").replace("\n", "")
    for parsed in parsed_values:
        if parsed is None or (not parsed and name in ("from", "sender")):
            raise UserError(Exit.DATAERR, f"header {name.title()}: not a list of addresses")
        for address in parsed:
            spec = address.addr_spec
            if not _ADDR_SPEC.fullmatch(spec) or spec not in raw or "=?" in spec:
                raise UserError(Exit.DATAERR, f"header {name.title()}: {spec!r} is not an address")
            found.append(spec)
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
        if sender.isascii():
            added.append(f"From: {email.utils.formataddr((full_name or '', sender))}")
        else:  # a UTF-8 address (RFC 6532), which formataddr refuses: the name alone quoted
            name = email.utils.formataddr((full_name, "a@b"))[: -len(" <a@b>")] if full_name else ""
            added.append(f"From: {name} <{sender}>" if name else f"From: {sender}")
    if headers.get("date") is None:
        added.append(f"Date: {email.utils.formatdate(localtime=True)}")
    if headers.get("message-id") is None:
        added.append(f"Message-ID: {email.utils.make_msgid(domain=host)}")
    return "".join(f"{line}\r\n" for line in added).encode("utf-8")


def submit_request(message: Message) -> tuple[bytes, int]:
    """The submission socket's request header for ``message`` (see
    :mod:`mxsend.queue._intake`), and the content's size in octets."""
    from mxsend.protocol import Content

    envelope = message.envelope
    info = Content.of(message.content).scan()
    assert info.raw_size is not None  # a spool file's content: known
    lines = [f"sender {envelope.sender or ''}"]
    lines += [f"rcpt {r.address}" for r in envelope.recipients]
    notify = envelope.recipients[0].options.notify if envelope.recipients else frozenset()
    if notify:
        lines.append("notify " + ",".join(sorted(n.value for n in notify)))
    if envelope.options.ret is not None:
        lines.append(f"ret {envelope.options.ret.value}")
    if envelope.options.envid is not None:
        lines.append(f"envid {envelope.options.envid}")
    lines.append(f"size {info.raw_size}")
    return b"MXSEND-SUBMIT/1\n" + "".join(f"{line}\n" for line in lines).encode() + b"\n", (
        info.raw_size
    )


def load_settings(path: str) -> Settings:
    """The settings of the config file at ``path`` for a submission, kept in this user's
    cache for the lean path; a UserError (78) with its first problem when it has some."""
    import os as _os

    from mxsend.cli._drop import Settings, keep_settings

    config = _config(path)
    sendmail = config.sendmail
    settings = Settings(
        hostname=config.hostname,
        sender=config.sender,
        queue_dir=config.queue_dir,
        delivery=sendmail.delivery,
        rewrite=Rewrite(
            domain=config.domain,
            force_sender=sendmail.force_sender,
            masquerade=sendmail.masquerade_domain,
            undisclosed=bool(sendmail.undisclosed_recipients),
        ),
        signs=any(config.dkim.values()),
    )
    keep_settings(path, settings, _os.environ)
    return settings


def signing(explicit: str | None) -> Callable[[str], Sequence[DkimKey]]:
    """The DKIM keys of a sender domain, from the config file's ``[[dkim."DOMAIN"]]``."""
    import os as _os

    from mxsend.cli._drop import config_path
    from mxsend.dkim import keys_for

    path = config_path(explicit, _os.environ)
    config = _config(path) if path is not None else None
    dkim = config.dkim if config is not None else {}
    loaded: dict[str, Sequence[DkimKey]] = {}  # each domain's key files read once (-bs)

    def keys(domain: str) -> Sequence[DkimKey]:
        if domain not in loaded:
            loaded[domain] = keys_for(domain, dkim)
        return loaded[domain]

    return keys


_CONFIGS: dict[str, Config] = {}


def _config(path: str) -> Config:
    """The config file at ``path``, read once per process; a UserError (78) naming its
    first problem (and how many more ``mxsend config check`` shows)."""
    from mxsend.config import ConfigError, load_config

    if path not in _CONFIGS:
        try:
            _CONFIGS[path] = load_config(path)
        except ConfigError as exc:
            first, more = exc.problems[0], len(exc.problems) - 1
            also = f" (and {more} more: mxsend config check)" if more else ""
            raise UserError(Exit.CONFIG, f"{first}{also}") from None
    return _CONFIGS[path]
