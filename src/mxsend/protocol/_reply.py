"""SMTP replies: the value type and a strict, incremental, bounded parser (RFC 5321 4.2)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mxsend.protocol._errors import RemoteProtocolError
from mxsend.protocol._values import fast_init

__all__ = [
    "MAX_LINE_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "EnhancedStatus",
    "Reply",
    "ReplyParser",
]

# RFC 5321 4.5.3.1.5 sets 512 octets for a reply line; real servers send longer text, so allow
# 16 times that and no more: a server cannot make us hold an unbounded line.
MAX_LINE_LENGTH = 8192
# An EHLO reply is the longest legitimate one and rarely passes 30 lines.
MAX_REPLY_LINES = 128
# All lines of one reply together, so 128 long lines cannot pin 1 MiB either.
MAX_REPLY_BYTES = 32768

# One-line replies remembered per connection; a session repeats a handful.
_KNOWN_REPLIES = 32

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
# RFC 5321 4.2: three digits (first 2-5, second 0-5), then SP, "-" or the end of the line.
_REPLY_LINE = re.compile(rb"[2-5][0-5][0-9](?:[ -]|\Z)")


@fast_init
@dataclass(frozen=True, slots=True)
class EnhancedStatus:
    """An RFC 3463 enhanced status code, ``class.subject.detail``."""

    klass: int
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @classmethod
    def parse(cls, text: str) -> EnhancedStatus | None:
        """The code at the start of ``text``, or None when there is none."""
        return _parse_enhanced(text.partition(" ")[0])


@functools.lru_cache(maxsize=256)
def _parse_enhanced(word: str) -> EnhancedStatus | None:
    # Replies repeat a few codes ("2.1.0", "2.0.0"); parse each once.
    match = _ENHANCED.match(word)
    if match is None:
        return None
    return EnhancedStatus(int(match[1]), int(match[2]), int(match[3]))


@fast_init
@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply.

    ``lines`` holds the text of each line after the code and separator, exactly as sent (decoded
    as UTF-8, undecodable bytes replaced). ``local`` marks a reply mxsend made up to report an
    outcome no server gave, such as a lost connection (RFC 5321 3.8: counted as 451).
    """

    code: int
    lines: tuple[str, ...]
    enhanced: EnhancedStatus | None = None
    local: bool = False

    @classmethod
    def synthesized(cls, code: int, enhanced: str, text: str) -> Reply:
        """A reply made up by mxsend, e.g. ``Reply.synthesized(451, "4.4.2", "lost")``."""
        return cls(code, (f"{enhanced} {text}",), EnhancedStatus.parse(enhanced), local=True)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        """All lines joined by a newline."""
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {' / '.join(self.lines)}".rstrip()


class ReplyParser:
    """Turns received bytes into replies, strictly (RFC 5321 4.2).

    Each line is three digits (first 2-5, second 0-5), then SP, ``-`` or the end of the line;
    every line of a reply has the same code. Lines end with CRLF; a bare LF is tolerated. Any
    other input raises :class:`RemoteProtocolError`, and nothing else is ever raised. Memory is
    bounded by the ``MAX_*`` limits whatever the server sends.
    """

    __slots__ = (
        "_buffer",
        "_code",
        "_enhanced",
        "_known",
        "_lines",
        "_pos",
        "_size",
    )

    def __init__(self) -> None:
        # Replies usually arrive whole, so the bytes received are kept as they came and
        # sliced; only a partial line is ever copied, once, when the rest arrives.
        self._buffer = b""
        self._pos = 0
        self._code = 0
        self._lines: list[str] = []
        self._size = 0
        # One-line replies seen on this connection ("250 2.1.0 Ok" comes with every message):
        # a Reply is immutable, so an identical line can share it. Bounded, and per parser.
        self._known: dict[bytes, Reply] = {}
        self._enhanced = False

    @property
    def enhanced_status_codes(self) -> bool:
        """Parse RFC 3463 codes from reply text; set once the server advertises
        ENHANCEDSTATUSCODES (RFC 2034)."""
        return self._enhanced

    @enhanced_status_codes.setter
    def enhanced_status_codes(self, value: bool) -> None:
        if value != self._enhanced:
            self._known.clear()  # the same line now parses differently
        self._enhanced = value

    def feed(self, data: bytes) -> None:
        """Add received bytes; parse them with :meth:`next_reply`."""
        if self._pos == len(self._buffer):
            self._buffer = bytes(data)
        else:
            self._buffer = self._buffer[self._pos :] + data
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes received and not yet returned as part of a complete reply."""
        return len(self._buffer) - self._pos + self._size

    @property
    def partial_code(self) -> bytes:
        """Up to three octets of the code of the reply still incomplete (b"" when none)."""
        if self._lines:
            return str(self._code).encode()
        return self._buffer[self._pos : self._pos + 3]

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None until more bytes arrive."""
        buffer = self._buffer
        while True:
            start = self._pos
            end = buffer.find(b"\n", start)
            if end < 0:
                if len(buffer) - start >= MAX_LINE_LENGTH:
                    raise RemoteProtocolError(f"reply line longer than {MAX_LINE_LENGTH} octets")
                return None
            if end + 1 - start > MAX_LINE_LENGTH:
                raise RemoteProtocolError(f"reply line longer than {MAX_LINE_LENGTH} octets")
            self._pos = end + 1
            line = buffer[start : end - 1 if end > start and buffer[end - 1] == 0x0D else end]
            if not self._lines and (known := self._known.get(line)) is not None:
                return known
            reply = self._line(line)
            if reply is not None:
                if len(reply.lines) == 1:
                    if len(self._known) >= _KNOWN_REPLIES:
                        self._known.clear()
                    self._known[line] = reply
                return reply

    def _line(self, line: bytes) -> Reply | None:
        if _REPLY_LINE.match(line) is None:
            raise RemoteProtocolError(f"malformed reply line {line[:40]!r}")
        code = int(line[:3])
        separator = line[3:4]
        if self._lines and code != self._code:
            raise RemoteProtocolError(f"reply code changed from {self._code} to {code} mid-reply")
        self._code = code
        self._size += len(line) + 2
        if len(self._lines) >= MAX_REPLY_LINES or self._size > MAX_REPLY_BYTES:
            raise RemoteProtocolError(
                f"reply longer than {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} octets"
            )
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if separator == b"-":
            return None
        lines = tuple(self._lines)
        self._lines.clear()
        self._size = 0
        enhanced = None
        if self._enhanced:
            enhanced = EnhancedStatus.parse(lines[0])
            if enhanced is not None and enhanced.klass != code // 100:
                enhanced = None
        return Reply(code, lines, enhanced)
