"""Mailbox and domain validation (RFC 5321 4.1.2, 4.5.3.1; RFC 6531 3.3; IDNA 2008).

Bad input is refused, never repaired: a CR, LF, NUL, ``<``, ``>`` or stray space raises
:class:`AddressError` before any byte can reach a server (the Twisted ``quoteaddr`` truncation
and bpo-43124 injection classes).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass

import idna

from mxsend.protocol._errors import AddressError
from mxsend.protocol._values import fast_init

__all__ = [
    "MAX_DOMAIN_LENGTH",
    "MAX_LOCAL_PART_LENGTH",
    "MAX_PATH_LENGTH",
    "Address",
    "validate_domain",
]

# RFC 5321 4.5.3.1.1-3, in octets.
MAX_LOCAL_PART_LENGTH = 64
MAX_DOMAIN_LENGTH = 255
MAX_PATH_LENGTH = 256
_MAX_LABEL_LENGTH = 63

_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_ATEXT = _LDH | frozenset("!#$%&'*+/=?^_`{|}~")
# The common case, an ASCII dot-atom at a letter-digit-hyphen domain, checked in one match;
# anything else takes the full checks below. Lengths are checked after the match.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*", re.ASCII).fullmatch

# Unicode categories never allowed in an address: controls, surrogates, separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp", "Cf"})


def _check_unicode(text: str, what: str) -> None:
    for char in text:
        if char.isascii():
            if not 32 < ord(char) < 127:
                raise AddressError(f"{what} contains control or space character {char!r}")
        elif unicodedata.category(char) in _BAD_CATEGORIES:
            raise AddressError(f"{what} contains invalid character {char!r}")


def _check_dot_string(local: str) -> None:
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(f"local part {local!r} has a misplaced dot")
    for char in local:
        if char != "." and char not in _ATEXT and char.isascii():
            raise AddressError(f"local part {local!r} has {char!r}; quote it or remove it")


def _check_quoted_string(local: str) -> None:
    # RFC 5321 4.1.2: qtextSMTP is %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP is "\" %d32-126.
    body = local[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            if index == len(body) or not 32 <= ord(body[index]) < 127:
                raise AddressError(f"local part {local!r} has a bad backslash escape")
        elif char == '"':
            raise AddressError(f"local part {local!r} has an unescaped quote")
        elif char.isascii() and not 32 <= ord(char) < 127:
            raise AddressError(f"local part {local!r} contains a control character")
        index += 1


def _check_address_literal(domain: str) -> None:
    inner = domain[1:-1]
    try:
        if inner.upper().startswith("IPV6:"):
            ipaddress.IPv6Address(inner[5:])
            return
        if ":" not in inner:
            ipaddress.IPv4Address(inner)
            return
    except ValueError:
        raise AddressError(f"bad address literal {domain!r}") from None
    tag, _, content = inner.partition(":")
    # RFC 5321 4.1.3 General-address-literal: Standardized-tag ":" 1*dcontent.
    if not tag or not set(tag) <= _LDH or not content:
        raise AddressError(f"bad address literal {domain!r}")
    if any(not 33 <= ord(c) <= 126 or c in "[\\]" for c in content):
        raise AddressError(f"bad address literal {domain!r}")


def validate_domain(domain: str) -> str:
    """Return ``domain`` in ASCII (A-labels) or raise :class:`AddressError`.

    Address literals (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) are checked and returned as
    given. Internationalised names are converted with IDNA 2008 and UTS 46 mapping.
    """
    if not domain:
        raise AddressError("empty domain")
    if domain.startswith("["):
        _check_unicode(domain, "domain")
        if not domain.endswith("]"):
            raise AddressError(f"bad address literal {domain!r}")
        _check_address_literal(domain)
        return domain
    _check_unicode(domain, "domain")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise AddressError(f"bad internationalised domain {domain!r}: {exc}") from None
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise AddressError(f"domain longer than {MAX_DOMAIN_LENGTH} octets")
    for label in domain.split("."):
        if not label or len(label) > _MAX_LABEL_LENGTH:
            raise AddressError(f"bad domain {domain!r}: empty or overlong label")
        if not set(label) <= _LDH or label[0] == "-" or label[-1] == "-":
            raise AddressError(f"bad domain {domain!r}: label {label!r} is not letter-digit-hyphen")
    return domain


@fast_init
@dataclass(frozen=True, slots=True)
class Address:
    """A valid mailbox. ``domain`` is ASCII (A-labels or an address literal); ``local_part`` may
    be UTF-8, in which case sending needs SMTPUTF8 (RFC 6531)."""

    local_part: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """Validate ``local@domain`` (no angle brackets) or raise :class:`AddressError`."""
        if type(text) is str and cls is Address:
            return _parse_text(text)  # a str subclass or a subclass of Address is not shared
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Address:
        if not isinstance(text, str):
            raise AddressError(f"address must be text, not {type(text).__name__}")
        if _PLAIN(text) is not None and len(text) <= MAX_PATH_LENGTH - 2:
            local, _, domain = text.rpartition("@")
            if len(local) <= MAX_LOCAL_PART_LENGTH:
                return cls(local, domain)
        return cls._checked(text)

    @classmethod
    def _checked(cls, text: str) -> Address:
        """:meth:`parse` without the fast path: every rule, one at a time."""
        local, at, domain = text.rpartition("@")
        if not at or not local:
            raise AddressError(f"{text!r} is not an address of the form local-part@domain")
        if len(local) > 1 and local[0] == local[-1] == '"':
            _check_quoted_string(local)
            _check_unicode(local.replace(" ", "!"), "local part")
        else:
            _check_unicode(local, "local part")
            _check_dot_string(local)
        if len(local.encode("utf-8")) > MAX_LOCAL_PART_LENGTH:
            raise AddressError(f"local part longer than {MAX_LOCAL_PART_LENGTH} octets")
        address = cls(local, validate_domain(domain))
        if len(address.path) > MAX_PATH_LENGTH:
            raise AddressError(f"path longer than {MAX_PATH_LENGTH} octets")
        return address

    @property
    def needs_smtputf8(self) -> bool:
        return not self.local_part.isascii()

    @property
    def path(self) -> bytes:
        """The RFC 5321 path as sent: ``<local@domain>``, UTF-8 encoded."""
        return f"<{self.local_part}@{self.domain}>".encode()

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}"


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> Address:
    # A bulk sender gives the same sender (and often the same recipients) for every message,
    # and an Address is immutable: the last ones parsed are shared. A refusal is not kept.
    return Address._parse(text)
