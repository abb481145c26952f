"""Message content on the wire: canonical line endings and DATA transparency.

RFC 5321 2.3.8 and 4.5.2; SMTP smuggling (CVE-2023-51764/51765/51766). Every CRLF, bare LF
and bare CR becomes CRLF, so no receiver can find an end-of-data sequence of its own making;
with DATA every line starting with ``.`` is stuffed, including the first line and lines that
start at a chunk boundary (state is carried from chunk to chunk); content ends with CRLF
before the final ``.`` CRLF. With BDAT (RFC 3030) nothing is stuffed but line endings are
still made canonical, so the bytes a signature covers are the bytes sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mxsend.protocol._errors import LineTooLongError

__all__ = [
    "MAX_LINE_OCTETS",
    "BodyEncoder",
    "BodyInfo",
    "LinePolicy",
    "encode_whole",
    "has_long_line",
    "measure",
    "scan_body",
]

# RFC 5322 2.1.1 and RFC 5321 4.5.3.1.6: 998 octets before the CRLF.
MAX_LINE_OCTETS = 998


class LinePolicy(enum.Enum):
    """What to do with a line over :data:`MAX_LINE_OCTETS`."""

    REJECT = "reject"  #: raise LineTooLongError
    FOLD = "fold"  #: insert CRLF SP, as Postfix's smtp_line_length_limit does
    ALLOW = "allow"  #: send as is; for scanning, or for a receiver known to take them


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What :func:`scan_body` learned: canonical size (RFC 1870: CRLF line endings, no
    stuffing), whether any octet is 8-bit, how many lines are over 998 octets, and the raw
    size of what was scanned (None when unknown)."""

    size: int
    eight_bit: bool
    long_lines: int
    raw_size: int | None = None


class BodyEncoder:
    """Encodes message content chunk by chunk; :meth:`finish` ends it.

    The attributes ``size``, ``eight_bit`` and ``long_lines`` describe the content seen so far.
    """

    __slots__ = (
        "_at_line_start",
        "_counted",
        "_cr_pending",
        "_dot_stuff",
        "_line_length",
        "_policy",
        "eight_bit",
        "long_lines",
        "size",
    )

    def __init__(self, *, dot_stuff: bool = True, line_policy: LinePolicy = LinePolicy.REJECT):
        self._dot_stuff = dot_stuff
        self._policy = line_policy
        self._cr_pending = False
        self._at_line_start = True
        self._line_length = 0
        self._counted = False  # the current line was already counted as long
        self.size = 0
        self.eight_bit = False
        self.long_lines = 0

    def encode(self, chunk: bytes) -> bytes:
        """Return the wire bytes for ``chunk`` (possibly fewer: a final CR waits for its LF)."""
        if self._cr_pending:
            chunk = b"\r" + chunk
            self._cr_pending = False
        if chunk[-1:] == b"\r":
            chunk = chunk[:-1]
            self._cr_pending = True
        if not chunk:
            return b""
        out = _crlf(chunk)
        if not self.eight_bit and not out.isascii():
            self.eight_bit = True
        out = self._check_lines(out)
        self.size += len(out)
        if self._dot_stuff:
            if self._at_line_start and out[:1] == b".":
                out = b"." + out
            out = _stuff(out)
        self._at_line_start = out[-1:] == b"\n"
        return out

    def finish(self) -> bytes:
        """End the content: a final CRLF if the last line lacks one, then ``.`` CRLF for DATA."""
        tail = b""
        if self._cr_pending or not self._at_line_start:
            self._cr_pending = False
            self._at_line_start = True
            self._line_length = 0
            self.size += 2
            tail = b"\r\n"
        return tail + b".\r\n" if self._dot_stuff else tail

    def _check_lines(self, text: bytes) -> bytes:
        """Count (and under FOLD, break) lines over 998 octets in CRLF ``text``; lines may
        span chunks."""
        carried = self._line_length
        # Fast paths: the chunk is too short to hold a long line, or a search finds none.
        if carried + len(text) <= MAX_LINE_OCTETS or not _long_line_in(text, carried):
            last_newline = text.rfind(b"\n")
            if last_newline >= 0:
                self._line_length = len(text) - last_newline - 1
                self._counted = False
            else:
                self._line_length += len(text)
            return text
        lines = text.split(b"\r\n")
        over: list[int] = []
        if len(lines[0]) + carried > MAX_LINE_OCTETS or max(map(len, lines)) > MAX_LINE_OCTETS:
            lengths = [len(line) for line in lines]
            lengths[0] += carried
            over = [i for i, length in enumerate(lengths) if length > MAX_LINE_OCTETS]
        if over:
            # A line already counted in an earlier chunk is not counted again.
            self.long_lines += len(over) - (over[0] == 0 and self._counted)
            if self._policy is LinePolicy.REJECT:
                raise LineTooLongError(f"message has a line longer than {MAX_LINE_OCTETS} octets")
            if self._policy is LinePolicy.FOLD:
                for i in over:
                    lines[i] = _fold(lines[i], carried if i == 0 else 0)
                text = b"\r\n".join(lines)
        last = len(lines) - 1
        self._counted = last in over or (last == 0 and self._counted)
        last_newline = text.rfind(b"\n")
        self._line_length = len(text) - last_newline - 1 + (carried if last_newline < 0 else 0)
        return text


def encode_whole(
    data: bytes, *, dot_stuff: bool = True, line_policy: LinePolicy = LinePolicy.REJECT
) -> tuple[bytes, int]:
    """The wire bytes for content given whole, as a new :class:`BodyEncoder`'s ``encode(data)``
    and ``finish()`` give them, and the canonical size: once per message, with no encoder
    and no state carried between chunks."""
    text = _crlf(data)
    if len(text) > MAX_LINE_OCTETS and _long_line_in(text, 0):
        encoder = BodyEncoder(dot_stuff=dot_stuff, line_policy=line_policy)  # raises, or folds
        return encoder.encode(data) + encoder.finish(), encoder.size
    if text and text[-1:] != b"\n":
        text = text + b"\r\n"  # a new object: text may still be the caller's data
    size = len(text)
    if not dot_stuff:
        return text, size
    if text[:1] == b".":
        text = b"." + text
    return _stuff(text) + b".\r\n", size


def _crlf(text: bytes) -> bytes:
    """``text`` with every CRLF, bare LF and bare CR made CRLF (RFC 5321 2.3.8)."""
    # find(), not "in": bytes.__contains__ first tries its argument as an int, and the
    # TypeError it raises and clears costs more than the search (CPython 3.11).
    if text.find(b"\r") < 0:
        return text.replace(b"\n", b"\r\n")
    if _canonical(text):
        return text
    return text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _canonical(text: bytes) -> bool:
    """Whether every CR in ``text`` is followed by LF and every LF preceded by CR: with the
    CRLF pairs taken out, none of either is left. One split, one join and two memchr scans
    cost less than counting CR, LF and CRLF (three full passes)."""
    rest = b"".join(text.split(b"\r\n"))
    return rest.find(b"\r") < 0 and rest.find(b"\n") < 0  # not "in": see _crlf()


# Past this many dot lines in one chunk, one C-level split and join is cheaper than a loop.
_SPARSE_DOTS = 32
# A literal pattern: re's prefix scan finds it about three times faster than bytes.find.
_DOT_LINE = re.compile(rb"\n\.")


def _stuff(text: bytes) -> bytes:
    """Double the ``.`` that starts each line after the first (RFC 5321 4.5.2). Dot lines are
    rare in mail, so find them and join the pieces rather than copy through a replace."""
    first = _DOT_LINE.search(text)
    if first is None:
        return text
    found = first.start()
    pieces = []
    start = 0
    while found >= 0:
        pieces.append(text[start : found + 1])
        start = found + 1
        if len(pieces) > _SPARSE_DOTS:
            rest = text[start:]
            return b".".join(pieces) + b"." + b"\n..".join(rest.split(b"\n."))
        found = text.find(b"\n.", found + 2)
    pieces.append(text[start:])
    return b".".join(pieces)


def _long_line_in(text: bytes, carried: int) -> bool:
    """Whether canonical ``text`` has a line over 998 octets, its first line ``carried``
    octets long already. Jumps from each line start to the last LF within one line's reach,
    so a chunk of short lines costs a few dozen searches rather than a split."""
    reach = MAX_LINE_OCTETS + 2  # the longest line with its CRLF
    size = len(text)
    first = text.find(b"\n")
    if first < 0:
        return carried + size > MAX_LINE_OCTETS
    if carried + first + 1 > reach:
        return True
    rfind = text.rfind
    start = first + 1  # where the current line begins
    while start + reach <= size:
        newline = rfind(b"\n", start, start + reach)
        if newline < 0:
            return True
        start = newline + 1
    return size - rfind(b"\n") - 1 > MAX_LINE_OCTETS  # the unfinished last line


def _fold(line: bytes, carried: int) -> bytes:
    """Break ``line`` with CRLF SP so no piece, with ``carried`` octets before it, passes 998."""
    pieces = []
    room = MAX_LINE_OCTETS - carried
    pos = 0
    while len(line) - pos > room:
        pieces.append(line[pos : pos + room])
        pos += room
        room = MAX_LINE_OCTETS - 1  # the continuation starts with the inserted space
    pieces.append(line[pos:])
    return b"\r\n ".join(pieces)


def has_long_line(data: bytes) -> bool:
    """Whether any line of ``data`` is over 998 octets. bytes.splitlines() breaks at exactly
    the CRLF, LF and CR the encoder treats as line ends, in one C-level pass."""
    size = len(data)
    if size <= MAX_LINE_OCTETS:
        return False
    # Most mail has an LF at least every 998 octets, which proves every line short (a CR
    # only ends lines sooner) with a few dozen searches and no list of lines.
    rfind = data.rfind
    start = 0
    while size - start > MAX_LINE_OCTETS:
        newline = rfind(b"\n", start, start + MAX_LINE_OCTETS + 1)
        if newline < 0:
            return max(map(len, data.splitlines()), default=0) > MAX_LINE_OCTETS
        start = newline + 1
    return False


def scan_body(data: bytes) -> BodyInfo:
    """Describe ``data`` as it will be sent: size for SIZE, 8-bit for BODY, long lines."""
    return measure((data,))


def measure(chunks: Iterable[bytes]) -> BodyInfo:
    """Describe content given in ``chunks`` as it will be sent, in one pass."""
    encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.ALLOW)
    raw = 0
    for chunk in chunks:
        raw += len(chunk)
        encoder.encode(chunk)
    encoder.finish()
    return BodyInfo(encoder.size, encoder.eight_bit, encoder.long_lines, raw)
