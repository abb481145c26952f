"""Envelope values and their ESMTP parameters: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8
(RFC 6531), DSN RET/ENVID/NOTIFY/ORCPT (RFC 3461, RFC 6533), REQUIRETLS (RFC 8689)."""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mxsend.protocol._address import Address
from mxsend.protocol._errors import ParameterError
from mxsend.protocol._values import fast_init

if TYPE_CHECKING:
    from mxsend.protocol._encoder import BodyInfo

__all__ = [
    "MAX_ENVID_LENGTH",
    "Body",
    "Envelope",
    "MailOptions",
    "Notify",
    "RcptOptions",
    "Recipient",
    "Ret",
    "xtext",
]

# RFC 3461 4.4: "The ENVID ... MUST NOT be longer than 100 characters".
MAX_ENVID_LENGTH = 100


class Body(enum.Enum):
    """The BODY parameter (RFC 6152)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"


class Ret(enum.Enum):
    """What a failure DSN returns (RFC 3461 4.3)."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(enum.Enum):
    """When the recipient's server sends a DSN (RFC 3461 4.1)."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


def xtext(text: str) -> str:
    """RFC 3461 4: encode ``+``, ``=`` and anything outside ``!``..``~`` as ``+XX``."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _utf8_addr_xtext(text: str) -> str:
    # RFC 6533 3: QCHAR stays; everything else becomes \x{HEXPOINT}.
    out = []
    for char in text:
        point = ord(char)
        if 33 <= point <= 126 and char not in "+=\\":
            out.append(char)
        else:
            out.append(f"\\x{{{point:X}}}")
    return "".join(out)


@fast_init
@dataclass(frozen=True, slots=True)
class MailOptions:
    """Parameters of MAIL FROM.

    ``size`` and ``body`` describe the message (see :func:`mxsend.protocol.scan_body`); BODY=
    8BITMIME and SMTPUTF8 are requirements, so a server without them refuses the transaction
    locally. RET and ENVID, like NOTIFY and ORCPT, are dropped (and the drop recorded) when the
    server lacks DSN, unless ``require_dsn`` is set. ``requiretls`` is always a requirement.
    """

    size: int | None = None
    body: Body | None = None
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None
    requiretls: bool = False
    require_dsn: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 0:
            raise ParameterError("SIZE must not be negative")
        if self.envid is not None:
            if not self.envid or len(self.envid) > MAX_ENVID_LENGTH:
                raise ParameterError(f"ENVID must have 1 to {MAX_ENVID_LENGTH} characters")
            if not all(32 <= ord(c) < 127 for c in self.envid):
                raise ParameterError("ENVID must be printable ASCII (RFC 3461 4.4)")

    @classmethod
    def for_content(
        cls,
        info: BodyInfo,
        *,
        ret: Ret | None = None,
        envid: str | None = None,
        smtputf8: bool = False,
    ) -> MailOptions:
        """SIZE and BODY for content as :meth:`Content.scan` described it (RFC 1870, 6152),
        with the DSN's RET and ENVID, and SMTPUTF8 when the message must keep it."""
        body = Body.EIGHT_BIT_MIME if info.eight_bit else None
        return cls(size=info.size, body=body, ret=ret, envid=envid, smtputf8=smtputf8)

    @property
    def wants_dsn(self) -> bool:
        return self.ret is not None or self.envid is not None


@dataclass(frozen=True, slots=True)
class RcptOptions:
    """Parameters of RCPT TO: DSN NOTIFY and ORCPT (RFC 3461 4.1, 4.2)."""

    notify: frozenset[Notify] = frozenset()
    orcpt: str | None = None

    def __post_init__(self) -> None:
        if Notify.NEVER in self.notify and len(self.notify) > 1:
            raise ParameterError("NOTIFY=NEVER cannot be combined with other values")
        if self.orcpt is not None:
            Address.parse(self.orcpt)

    @property
    def wants_dsn(self) -> bool:
        return bool(self.notify) or self.orcpt is not None

    def parameters(self) -> tuple[str, ...]:
        """The RCPT parameters, in a stable order."""
        params = []
        if self.notify:
            order = [n for n in Notify if n in self.notify]
            params.append("NOTIFY=" + ",".join(n.value for n in order))
        if self.orcpt is not None:
            if self.orcpt.isascii():
                params.append("ORCPT=rfc822;" + xtext(self.orcpt))
            else:
                params.append("ORCPT=utf-8;" + _utf8_addr_xtext(self.orcpt))
        return tuple(params)


NO_RCPT_OPTIONS = RcptOptions()  # immutable, so every plain recipient shares it


@fast_init
@dataclass(frozen=True, slots=True)
class Recipient:
    address: Address
    options: RcptOptions = NO_RCPT_OPTIONS


@fast_init
@dataclass(frozen=True, slots=True)
class Envelope:
    """The sender (None for the null path ``<>``, used by bounces), recipients and options."""

    sender: Address | None
    recipients: tuple[Recipient, ...]
    options: MailOptions = field(default_factory=MailOptions)
    # Facts about every recipient, found once here rather than for each session.
    _utf8: bool = field(init=False, repr=False, compare=False)
    _dsn: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ParameterError("an envelope needs at least one recipient")
        utf8 = self.options.smtputf8 or (self.sender is not None and self.sender.needs_smtputf8)
        dsn = self.options.wants_dsn
        for r in self.recipients:
            utf8 = utf8 or not r.address.local_part.isascii()
            dsn = dsn or (r.options is not NO_RCPT_OPTIONS and r.options.wants_dsn)
        _set_utf8(self, utf8)
        _set_dsn(self, dsn)

    @classmethod
    def build(
        cls,
        sender: str | None,
        recipients: Iterable[str],
        options: MailOptions | None = None,
        rcpt_options: RcptOptions | None = None,
    ) -> Envelope:
        """Validate addresses given as text; ``sender`` of None or ``""`` is the null path."""
        each = rcpt_options or NO_RCPT_OPTIONS
        parse = Address.parse
        if each is NO_RCPT_OPTIONS:
            made = tuple([_plain_recipient(r) for r in recipients])
        else:
            made = tuple([Recipient(parse(r), each) for r in recipients])
        return cls(parse(sender) if sender else None, made, options or _NO_MAIL_OPTIONS)

    @property
    def needs_smtputf8(self) -> bool:
        """True when an address (or ORCPT) has a UTF-8 local part (RFC 6531)."""
        return self._utf8

    @property
    def wants_dsn(self) -> bool:
        """True when MAIL or any RCPT carries a DSN parameter (RFC 3461)."""
        return self._dsn


_NO_MAIL_OPTIONS = MailOptions()
# The slots' own setters: a frozen class's fields set past object.__setattr__ (see _values).
_set_utf8 = Envelope.__dict__["_utf8"].__set__
_set_dsn = Envelope.__dict__["_dsn"].__set__


def _plain_recipient(text: str) -> Recipient:
    if type(text) is str:
        return _shared_recipient(text)
    return Recipient(Address.parse(text))  # a str subclass is not shared (nor a non-str)


@functools.lru_cache(maxsize=1024)
def _shared_recipient(text: str) -> Recipient:
    # As Address.parse's: the last plain recipients built are shared (a Recipient is
    # immutable), so a repeated one costs a lookup.
    return Recipient(Address.parse(text))
