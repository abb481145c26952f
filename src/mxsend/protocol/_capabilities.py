"""What a server offers, from its EHLO reply (RFC 5321 4.1.1.1 and the extension RFCs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mxsend.protocol._reply import Reply

__all__ = ["MAX_EHLO_KEYWORDS", "Capabilities"]

# The parser already bounds lines per reply; this bounds what we keep from them.
MAX_EHLO_KEYWORDS = 64
_MAX_AUTH_MECHANISMS = 32


def _empty() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Service extensions from an EHLO reply; keywords are upper-cased (they are
    case-insensitive). An empty value means HELO was used: no extension at all."""

    extensions: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    esmtp: bool = False

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """Parse the lines after the first (which names the server)."""
        found: dict[str, tuple[str, ...]] = {}
        for line in reply.lines[1:]:
            words = line.split()
            if not words or len(found) >= MAX_EHLO_KEYWORDS:
                continue
            keyword, params = words[0].upper(), tuple(words[1:])
            if keyword.startswith("AUTH="):
                # Pre-RFC 4954 form, still sent by some servers next to the standard one.
                keyword, params = "AUTH", (keyword[5:], *params)
            if not keyword.isascii() or not keyword.replace("-", "").isalnum():
                continue
            if keyword == "AUTH":
                params = found.get("AUTH", ()) + params
            found[keyword] = params
        return cls(MappingProxyType(found), esmtp=True)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self.extensions

    @property
    def size(self) -> int | None:
        """Declared maximum message size (RFC 1870); None if SIZE is absent or 0 (no limit)."""
        params = self.extensions.get("SIZE")
        if not params or not params[0].isdigit():
            return None
        return int(params[0]) or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        params = self.extensions.get("AUTH", ())
        return frozenset(p.upper() for p in params[:_MAX_AUTH_MECHANISMS])

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @property
    def eightbitmime(self) -> bool:
        return "8BITMIME" in self.extensions

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.extensions

    @property
    def dsn(self) -> bool:
        return "DSN" in self.extensions

    @property
    def chunking(self) -> bool:
        return "CHUNKING" in self.extensions

    @property
    def starttls(self) -> bool:
        return "STARTTLS" in self.extensions

    @property
    def enhanced_status_codes(self) -> bool:
        return "ENHANCEDSTATUSCODES" in self.extensions

    @property
    def requiretls(self) -> bool:
        return "REQUIRETLS" in self.extensions
