"""Delivery status notifications: bounces, delay warnings and success reports (RFC 3464).

:func:`build_dsn` turns a :class:`DSNRequest` into a :class:`DSN`, a ``multipart/report;
report-type=delivery-status`` message (RFC 6522) ready to be queued and sent with ``MAIL
FROM:<>`` to the original sender. It has three parts: a short text for people, the
``message/delivery-status`` report (RFC 3464 2.2 per-message and 2.3 per-recipient fields),
and the returned original: its header block as ``text/rfc822-headers`` (RFC 6522 4), or with
RET=FULL (RFC 3461 4.3) the whole message as ``message/rfc822``.

A returned message is never held in memory: a :class:`DSN` is ``head``, the original's file
(read in chunks, line ends made CRLF), then ``tail``; iterate over it to stream it.

Everything that came from elsewhere is made safe before it is written: a server's reply text
loses its control characters (CR, LF, NUL...) and 8-bit characters, is cut to
:data:`MAX_DIAGNOSTIC_LENGTH` and folded (RFC 5322 2.2.3), so no line passes 998 octets and
nothing can add a field or a part. Pure: no Twisted, event loop, socket or TLS library.
"""

from __future__ import annotations

import binascii
import enum
import re
import secrets
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mxsend.protocol import (
    CHUNK_SIZE,
    Address,
    AddressError,
    BodyEncoder,
    ContentError,
    LinePolicy,
    MxsendError,
    validate_domain,
)

__all__ = [
    "DSN",
    "MAX_DIAGNOSTIC_LENGTH",
    "Action",
    "DSNError",
    "DSNRecipient",
    "DSNRequest",
    "NullSenderError",
    "build_dsn",
]

#: Characters of a server's reply kept in Diagnostic-Code (and the text part); the rest is cut.
MAX_DIAGNOSTIC_LENGTH = 1000
# RFC 3461 4.4: an ENVID has at most 100 characters.
_MAX_ENVID_LENGTH = 100
# RFC 3463 2: class "." subject "." detail, each of 1 to 3 digits.
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_TOKEN = re.compile(r"[A-Za-z0-9]{1,60}")
# Fields are folded near this width (RFC 5322 2.1.1 SHOULD), text is wrapped at it.
_FOLD_WIDTH = 78
_TEXT_WIDTH = 76
# A word longer than this is cut so a folded line stays far below 998 octets.
_MAX_WORD = 900
_BOUNDARY_TRIES = 8
_CRLF = b"\r\n"


class DSNError(MxsendError, ValueError):
    """A DSN cannot be built from what was given (a bad address, status, date or token)."""


class NullSenderError(DSNError):
    """The message had the null sender ``<>``: it never gets a DSN (RFC 5321 4.5.5), so
    bounces cannot loop. The caller checks first; this is the last line of defence."""


class Action(enum.Enum):
    """What became of a recipient (RFC 3464 2.3.3)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


# The status classes each action can carry (RFC 3464 2.3.4; a message that expired in the
# queue fails with a 4.x.x status, as Postfix reports 4.4.7).
_CLASSES = {
    Action.FAILED: "45",
    Action.DELAYED: "4",
    Action.DELIVERED: "2",
    Action.RELAYED: "2",
    Action.EXPANDED: "2",
}


@dataclass(frozen=True, slots=True)
class DSNRecipient:
    """One recipient's block of the report (RFC 3464 2.3).

    ``final_recipient`` is the address as tried; ``original_recipient`` the ORCPT address when
    the sender gave one (RFC 3461 4.2), written ``rfc822;`` or, when it is not ASCII,
    ``utf-8;`` (RFC 6533 3). ``status`` is an RFC 3463 code of a class that fits ``action``.
    ``diagnostic`` is the server's reply as text (made safe when written); ``remote_mta`` the
    host that gave it. ``will_retry_until`` is for :attr:`Action.DELAYED` only.
    """

    final_recipient: str
    action: Action
    status: str
    original_recipient: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    def __post_init__(self) -> None:
        match = _STATUS.fullmatch(self.status) if isinstance(self.status, str) else None
        if match is None:
            raise DSNError(f"bad status {self.status!r}: not an RFC 3463 code like 5.1.1")
        if match[1] not in _CLASSES[self.action]:
            raise DSNError(f"status {self.status} does not fit action {self.action.value!r}")
        _address(self.final_recipient, "final recipient")
        if self.original_recipient is not None:
            _address(self.original_recipient, "original recipient")
        if self.remote_mta is not None:
            _domain(self.remote_mta, "remote MTA")
        _aware(self.last_attempt, "last_attempt")
        _aware(self.will_retry_until, "will_retry_until")
        if self.will_retry_until is not None and self.action is not Action.DELAYED:
            raise DSNError("will_retry_until is only for a delayed recipient (RFC 3464 2.3.9)")


@dataclass(frozen=True, slots=True)
class DSNRequest:
    """What a DSN reports, about which message, to whom.

    ``sender`` is the original envelope sender, whom the DSN is addressed to; the null sender
    (``""`` or ``"<>"``) raises :class:`NullSenderError`. ``headers`` is the original's
    header block (a blank line and anything after it are dropped). With ``ret_full`` the file
    at ``body_path``, the whole original message, is returned instead, but only in a DSN that
    reports a failure (RFC 3461 4.3); other DSNs return the headers. ``envid`` is the ENVID,
    xtext-decoded (RFC 3461 4.4). ``postmaster`` (default ``MAILER-DAEMON@reporting_mta``)
    is the From address; ``now`` the Date (default: the current time). Dates must be
    timezone-aware.
    """

    reporting_mta: str
    sender: str
    arrival: datetime
    recipients: tuple[DSNRecipient, ...]
    headers: bytes
    body_path: str | None = None
    ret_full: bool = False
    envid: str | None = None
    postmaster: str | None = None
    now: datetime | None = None
    message_id_domain: str | None = None

    def __post_init__(self) -> None:
        if self.sender in ("", "<>"):
            raise NullSenderError("a message from the null sender <> never gets a DSN")
        _address(self.sender, "sender")
        _domain(self.reporting_mta, "reporting MTA")
        if self.message_id_domain is not None:
            _domain(self.message_id_domain, "Message-ID domain")
        if self.postmaster is not None:
            _address(self.postmaster, "postmaster")
        if not self.recipients:
            raise DSNError("a DSN reports on at least one recipient")
        if not isinstance(self.headers, bytes):
            raise DSNError("headers must be bytes")
        if self.ret_full and self.body_path is None:
            raise DSNError("ret_full needs body_path, the message to return")
        if self.envid is not None and not (
            0 < len(self.envid) <= _MAX_ENVID_LENGTH and all(" " <= c <= "~" for c in self.envid)
        ):
            raise DSNError(f"ENVID must be 1 to {_MAX_ENVID_LENGTH} printable ASCII characters")
        _aware(self.arrival, "arrival")
        _aware(self.now, "now")

    @property
    def returns_full(self) -> bool:
        """Whether the whole message goes back: RET=FULL and a failure is reported."""
        return self.ret_full and any(r.action is Action.FAILED for r in self.recipients)


@dataclass(frozen=True, slots=True)
class DSN:
    """A built DSN: ``head``, then the file ``original`` when the whole message is returned
    (``original_size`` octets once its line ends are CRLF), then ``tail``.

    Iterating (or :meth:`chunks`) streams it; :meth:`as_bytes` joins it, for small ones.
    ``eight_bit``: some octet is 8-bit, so send with BODY=8BITMIME (RFC 6152); ``smtputf8``:
    a header address is UTF-8 (RFC 6532), so send with SMTPUTF8 (RFC 6531).
    """

    head: bytes
    tail: bytes
    original: str | None = None
    original_size: int = 0
    eight_bit: bool = False
    smtputf8: bool = False

    @property
    def size(self) -> int:
        """Octets the DSN has, as streamed (for SIZE, RFC 1870)."""
        return len(self.head) + self.original_size + len(self.tail)

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The DSN in pieces; the original is read ``chunk_size`` octets at a time.

        Raises :class:`ContentError` (from the iterator, before the last part) when the
        original cannot be read or is no longer what was scanned at build time."""
        yield self.head
        if self.original is not None:
            encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
            try:
                with open(self.original, "rb") as file:
                    while chunk := file.read(chunk_size):
                        out = encoder.encode(chunk)
                        if encoder.size > self.original_size:
                            raise ContentError(f"{self.original} grew since the DSN was built")
                        if out:
                            yield out
            except OSError as exc:
                raise ContentError(f"cannot read {self.original}: {exc.strerror}") from None
            out = encoder.finish()
            if encoder.size != self.original_size:
                raise ContentError(f"{self.original} changed since the DSN was built")
            if out:
                yield out
        yield self.tail

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def as_bytes(self) -> bytes:
        """The whole DSN in memory."""
        return b"".join(self.chunks())


def build_dsn(request: DSNRequest, *, random_token: Callable[[], str] | None = None) -> DSN:
    """Build the DSN for ``request`` (RFC 3464, RFC 6522).

    ``random_token`` gives the random parts of the MIME boundary and the Message-ID (1 to 60
    letters and digits; tests inject it). A boundary found in the content is drawn again.
    With the whole message returned, its file is read once here, in chunks, to find 8-bit
    octets and its size. Raises :class:`DSNError` or :class:`ContentError`.
    """
    draw = random_token or _random_token
    now = request.now or datetime.now(UTC)
    sender = _address(request.sender, "sender")
    reporting_mta = _domain(request.reporting_mta, "reporting MTA")
    postmaster = (
        _address(request.postmaster, "postmaster")
        if request.postmaster is not None
        else Address("MAILER-DAEMON", reporting_mta)
    )
    text_type, text = _text_part(request, reporting_mta)
    report = _report(request, reporting_mta)
    full = request.returns_full
    headers = b"" if full else _header_block(request.headers)
    parts = [text, report, headers]

    original_size, original_8bit = 0, False
    for _ in range(_BOUNDARY_TRIES):
        boundary = "=_" + _token(draw)
        delimiter = b"--" + boundary.encode("ascii")
        if any(delimiter in part for part in parts):
            continue
        if full:
            assert request.body_path is not None
            original_size, original_8bit, found = _scan(request.body_path, delimiter)
            if found:
                continue
        break
    else:
        raise DSNError(f"no MIME boundary absent from the content in {_BOUNDARY_TRIES} tries")

    eight_bit = original_8bit if full else not headers.isascii()
    domain = (
        _domain(request.message_id_domain, "Message-ID domain")
        if request.message_id_domain is not None
        else reporting_mta
    )
    top = [
        _field("From", f"Mail Delivery System <{postmaster}>"),
        _field("To", str(sender)),
        _field("Subject", _subject(request.recipients)),
        _field("Date", format_datetime(now)),
        _field("Message-ID", f"<{now.astimezone(UTC):%Y%m%d%H%M%S}.{_token(draw)}@{domain}>"),
        _field("MIME-Version", "1.0"),
        _field("Auto-Submitted", "auto-replied"),
        _field(
            "Content-Type",
            f'multipart/report; report-type=delivery-status; boundary="{boundary}"',
        ),
    ]
    if eight_bit:
        top.append(_field("Content-Transfer-Encoding", "8bit"))
    if full:
        returned = [_field("Content-Type", "message/rfc822")]
        returned.append(_field("Content-Description", "Returned message"))
    else:
        returned = [_field("Content-Type", "text/rfc822-headers")]
        returned.append(_field("Content-Description", "Returned message headers"))
    if eight_bit:
        returned.append(_field("Content-Transfer-Encoding", "8bit"))

    dash = delimiter + _CRLF
    head = b"".join(
        [
            *top,
            _CRLF,
            b"This is a MIME-encapsulated message: a delivery status notification.\r\n",
            _CRLF,
            dash,
            *text_type,
            _CRLF,
            text,
            _CRLF,
            dash,
            _field("Content-Type", "message/delivery-status"),
            _field("Content-Description", "Delivery report"),
            _CRLF,
            report,
            _CRLF,
            dash,
            *returned,
            _CRLF,
            headers,
        ]
    )
    # Every part's content ends with CRLF, and the CRLF before a delimiter belongs to the
    # delimiter (RFC 2046 5.1.1): hence CRLF CRLF before each.
    tail = _CRLF + delimiter + b"--" + _CRLF
    return DSN(
        head=head,
        tail=tail,
        original=request.body_path if full else None,
        original_size=original_size,
        eight_bit=eight_bit or not head.isascii(),
        smtputf8=not (str(sender).isascii() and str(postmaster).isascii()),
    )


# -- the three parts ----------------------------------------------------------------------------


def _subject(recipients: tuple[DSNRecipient, ...]) -> str:
    actions = {r.action for r in recipients}
    if Action.FAILED in actions:
        return "Undelivered Mail Returned to Sender"
    if Action.DELAYED in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


def _text_part(request: DSNRequest, reporting_mta: str) -> tuple[list[bytes], bytes]:
    """The part for people: its fields and body. UTF-8 addresses make it quoted-printable."""
    actions = {r.action for r in request.recipients}
    arrival = format_datetime(request.arrival)
    if Action.FAILED in actions:
        returned = "the message" if request.returns_full else "the message's headers"
        intro = (
            f"Your message of {arrival} could not be delivered to one or more of its "
            f"recipients. The reasons are below; a copy of {returned} is attached."
        )
    elif Action.DELAYED in actions:
        intro = (
            f"Your message of {arrival} has not yet been delivered to one or more of its "
            "recipients. The mail system will keep trying; you do not need to send it again."
        )
    else:
        intro = f"This is the delivery report you asked for, about your message of {arrival}."
    paragraphs = [f"This is the mail delivery system at {reporting_mta}.", intro]
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += [*_wrap(paragraph, ""), ""]
    for recipient in request.recipients:
        lines += _wrap(f"<{recipient.final_recipient}>: {_outcome(recipient)}", "    ")
        if recipient.original_recipient not in (None, recipient.final_recipient):
            originally = f"(originally addressed to <{recipient.original_recipient}>)"
            lines += _wrap(originally, "    ", first="    ")
        diagnostic = _clean(recipient.diagnostic)
        if diagnostic:
            said = f"{recipient.remote_mta} said" if recipient.remote_mta else "The reply was"
            lines += _wrap(f"{said}: {diagnostic}", "    ", first="    ")
        lines.append("")
    text = "\n".join(lines)
    if text.isascii():
        fields = [_field("Content-Type", "text/plain; charset=us-ascii")]
        body = text.replace("\n", "\r\n").encode("ascii")
    else:
        fields = [
            _field("Content-Type", "text/plain; charset=utf-8"),
            _field("Content-Transfer-Encoding", "quoted-printable"),
        ]
        encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
        body = encoded.replace(b"\n", _CRLF)
        if not body.endswith(_CRLF):
            body += _CRLF
    return [*fields, _field("Content-Description", "Notification")], body


def _outcome(recipient: DSNRecipient) -> str:
    status = recipient.status
    if recipient.action is Action.FAILED:
        return f"could not be delivered (status {status})."
    if recipient.action is Action.DELAYED:
        if recipient.will_retry_until is not None:
            until = format_datetime(recipient.will_retry_until)
            return f"delayed, will keep trying until {until} (status {status})."
        return f"delayed, will keep trying (status {status})."
    if recipient.action is Action.RELAYED:
        return "relayed to a system that does not report on delivery."
    if recipient.action is Action.EXPANDED:
        return "delivered, and passed on to the addresses it stands for."
    return "delivered."


def _report(request: DSNRequest, reporting_mta: str) -> bytes:
    """The message/delivery-status body: per-message fields (RFC 3464 2.2), then a block
    per recipient (2.3), each block after a blank line."""
    fields = [_field("Reporting-MTA", f"dns; {reporting_mta}")]
    if request.envid is not None:
        fields.append(_field("Original-Envelope-Id", request.envid))
    fields.append(_field("Arrival-Date", format_datetime(request.arrival)))
    for recipient in request.recipients:
        fields.append(_CRLF)
        if recipient.original_recipient is not None:
            orcpt = _address(recipient.original_recipient, "original recipient")
            fields.append(_field("Original-Recipient", _typed_address(orcpt)))
        final = _address(recipient.final_recipient, "final recipient")
        fields.append(_field("Final-Recipient", _typed_address(final)))
        fields.append(_field("Action", recipient.action.value))
        fields.append(_field("Status", recipient.status))
        if recipient.remote_mta is not None:
            remote = _domain(recipient.remote_mta, "remote MTA")
            fields.append(_field("Remote-MTA", f"dns; {remote}"))
        diagnostic = _clean(recipient.diagnostic)
        if diagnostic:
            fields.append(_field("Diagnostic-Code", f"smtp; {diagnostic}"))
        if recipient.last_attempt is not None:
            fields.append(_field("Last-Attempt-Date", format_datetime(recipient.last_attempt)))
        if recipient.will_retry_until is not None:
            until = format_datetime(recipient.will_retry_until)
            fields.append(_field("Will-Retry-Until", until))
    return b"".join(fields)


def _header_block(headers: bytes) -> bytes:
    """The original's header block as returned: line ends CRLF, lines over 998 octets folded,
    each line ended, cut at the first blank line (what follows is body)."""
    encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
    block = encoder.encode(headers) + encoder.finish()
    if block.startswith(_CRLF):
        return b""
    end = block.find(b"\r\n\r\n")
    return block if end < 0 else block[: end + 2]


def _scan(path: str, delimiter: bytes) -> tuple[int, bool, bool]:
    """Read the file at ``path`` as :meth:`DSN.chunks` will send it: its size, whether it
    has 8-bit octets, whether ``delimiter`` occurs in it."""
    encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
    keep = len(delimiter) - 1
    carry = b""
    found = False
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                out = carry + encoder.encode(chunk)
                found = found or delimiter in out
                carry = out[-keep:]
    except OSError as exc:
        raise ContentError(f"cannot read {path}: {exc.strerror}") from None
    found = found or delimiter in carry + encoder.finish()
    return encoder.size, encoder.eight_bit, found


# -- fields and text ---------------------------------------------------------------------------


def _field(name: str, value: str) -> bytes:
    """``name: value`` and CRLF, folded before spaces (RFC 5322 2.2.3) near 78 octets; a word
    too long for any line is cut (a space is put in). ``value`` has no control characters."""
    line = f"{name}:"
    lines: list[str] = []
    first = True
    for word in value.split(" "):
        for start in range(0, max(len(word), 1), _MAX_WORD):
            piece = word[start : start + _MAX_WORD]
            if not first and len(line) + 1 + len(piece.encode()) > _FOLD_WIDTH:
                lines.append(line)
                line = ""
            line += " " + piece
            first = False
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8") + _CRLF


def _wrap(text: str, indent: str, *, first: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=_TEXT_WIDTH,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    )


def _clean(text: str | None) -> str:
    """A server's reply made safe to write: control characters become spaces, anything not
    ASCII becomes ``?``, runs of spaces one, and at most MAX_DIAGNOSTIC_LENGTH characters."""
    if not text:
        return ""
    kept = "".join(
        char if " " <= char <= "~" else " " if char < " " or char == "\x7f" else "?"
        for char in text[: MAX_DIAGNOSTIC_LENGTH * 4]
    )
    words = " ".join(kept.split())
    if len(words) > MAX_DIAGNOSTIC_LENGTH:
        words = words[: MAX_DIAGNOSTIC_LENGTH - 3].rstrip() + "..."
    return words


def _typed_address(address: Address) -> str:
    """An address with its type (RFC 3464 2.3.2): ``rfc822;`` when ASCII, else ``utf-8;``
    with each non-ASCII (or +, =, backslash) character as ``\\x{HEX}`` (RFC 6533 3)."""
    text = str(address)
    if text.isascii():
        return f"rfc822; {text}"
    escaped = "".join(
        char if "!" <= char <= "~" and char not in "+=\\" else f"\\x{{{ord(char):X}}}"
        for char in text
    )
    return f"utf-8; {escaped}"


# -- checks ------------------------------------------------------------------------------------


def _address(text: str, what: str) -> Address:
    try:
        return Address.parse(text)
    except AddressError as exc:
        raise DSNError(f"bad {what}: {exc}") from None


def _domain(text: str, what: str) -> str:
    try:
        return validate_domain(text)
    except AddressError as exc:
        raise DSNError(f"bad {what}: {exc}") from None


def _aware(moment: datetime | None, what: str) -> None:
    if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
        raise DSNError(f"{what} must be a timezone-aware datetime")


def _random_token() -> str:
    return secrets.token_hex(16)


def _token(draw: Callable[[], str]) -> str:
    token = draw()
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise DSNError(f"random token {token!r} is not 1 to 60 letters and digits")
    return token
