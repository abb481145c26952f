"""A message prepared for submission: read as it will be sent, never whole into memory.

:func:`prepare` turns a file (or standard input) into streaming :class:`~mxsend.protocol.Content`
and, when asked, takes recipients and the sender from its header block and removes Bcc fields.
Only the header block is ever read here; the body is read when it is scanned and sent. Used by
``mxsend send``, and meant for any command that submits a message (a sendmail-compatible one).

No Twisted or event loop here. Problems are :class:`MessageError` subclasses whose kind says
what went wrong, not how a program should exit::

    MessageError
     +-- UnreadableMessageError  the input cannot be read (missing, a directory, a read error)
     +-- InvalidMessageError     the message cannot be sent as it is (header block, long line)
     +-- SpoolError              no temporary copy of once-only input could be made: try later
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import os
import re
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from mxsend.dkim import DkimError, sign
from mxsend.protocol import (
    MAX_LINE_OCTETS,
    BodyEncoder,
    BodyInfo,
    Content,
    ContentError,
    LinePolicy,
    MxsendError,
)

if TYPE_CHECKING:
    from mxsend.dkim import DkimKey

__all__ = [
    "MAX_HEADER_OCTETS",
    "InvalidMessageError",
    "MessageError",
    "Prepared",
    "SpoolError",
    "UnreadableMessageError",
    "content_of",
    "ends_with_empty_line",
    "folded",
    "header_fields",
    "header_recipients",
    "prepare",
    "read_header_block",
    "scan",
    "signed",
    "spool",
    "strip_bcc",
]

#: Octets copied from standard input at a time into the spool file.
_SPOOL_CHUNK = 65536
#: The most header block read to find recipients and From; the body is never read for them.
MAX_HEADER_OCTETS = 1024 * 1024
_HEADER_BLOCK = 8192  # read a header block this much at a time
_LINE_END = re.compile(rb"\r\n|\r|\n")  # as BodyEncoder ends lines
_FIELD_NAME = re.compile(rb"[!-9;-~]+")  # RFC 5322 3.6.8: printable ASCII but the colon


class MessageError(MxsendError):
    """A message cannot be prepared for submission; the subclass says why, in one line."""


class UnreadableMessageError(MessageError):
    """The input cannot be read: missing, not readable, a directory, or a read failed."""


class InvalidMessageError(MessageError):
    """The message cannot be sent as it is: its header block or one of its lines is too long."""


class SpoolError(MessageError):
    """Input that can be read only once could not be copied to a temporary file: try later."""


@dataclass
class Prepared:
    """A message ready to send: its content (a file streamed in chunks, never whole in
    memory), and what its header block says when it was asked."""

    content: Content
    recipients: list[str]  #: To, Cc and Bcc, when the header block was read
    sender: str | None  #: the From address, when the header block was read


def prepare(
    name: str, *, stdin: BinaryIO | None = None, read_headers: bool, remove_bcc: bool
) -> Prepared:
    """The message at ``name`` (a path, or ``-`` for ``stdin``, by default standard input) as
    streaming content.

    Only the header block is ever read here, and only when ``read_headers``: for recipients
    and From. With ``remove_bcc`` the content is the header block without Bcc fields followed
    by the file's bytes after the original header block, untouched."""
    file, path = _open(name, stdin)
    try:
        head = read_header_block(file, name) if read_headers else b""
        recipients, sender = header_recipients(head) if read_headers else ([], None)
        prefix = strip_bcc(head) if remove_bcc else head
        if read_headers and not ends_with_empty_line(head):
            prefix += b"\r\n"  # the body starts here: the empty line it needs (RFC 5322 2.1)
        if prefix == head:  # nothing changed: send the file as it is
            prefix, offset = b"", 0
        else:
            offset = len(head)
        return Prepared(content_of(file, path, prefix, offset), recipients, sender)
    finally:
        if path is not None:
            file.close()  # the content opens the path again for each read


def _open(name: str, stdin: BinaryIO | None) -> tuple[BinaryIO, str | None]:
    """An open binary file at its start, and the path to read it again by.

    A regular file is read from its path; standard input, a pipe or a device can be read
    only once, so it is first copied to an anonymous temporary file (path None)."""
    if name == "-":
        return spool(sys.stdin.buffer if stdin is None else stdin, "standard input"), None
    try:
        file = open(name, "rb")  # noqa: SIM115 - closed by the caller or below
    except OSError as exc:
        raise UnreadableMessageError(f"cannot read {name}: {exc.strerror}") from None
    try:
        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return file, name
        with file:
            return spool(file, name), None
    except OSError as exc:
        file.close()
        raise UnreadableMessageError(f"cannot read {name}: {exc.strerror}") from None


def spool(source: BinaryIO, name: str, *, until_dot: bool = False) -> BinaryIO:
    """``source`` copied, a chunk at a time, to an anonymous temporary file (mode 0600,
    already unlinked); returned positioned at its start. ``until_dot``: read by lines and
    stop at one holding only ".", sendmail's end of input without -i. A read that fails is
    :class:`UnreadableMessageError`, a write that fails (a full disk) :class:`SpoolError`."""
    try:
        copy = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the content
    except OSError as exc:
        raise SpoolError(f"cannot spool {name}: {exc.strerror}") from None
    lines = iter(source) if until_dot else None
    while True:
        try:
            chunk = source.read(_SPOOL_CHUNK) if lines is None else next(lines, b"")
        except OSError as exc:
            copy.close()
            raise UnreadableMessageError(f"cannot read {name}: {exc.strerror}") from None
        if not chunk or (lines is not None and chunk.rstrip(b"\r\n") == b"."):
            break
        try:
            copy.write(chunk)
        except OSError as exc:
            copy.close()
            raise SpoolError(f"cannot spool {name}: {exc.strerror}") from None
    copy.seek(0)
    return copy


def read_header_block(file: BinaryIO, name: str) -> bytes:
    """The header block from ``file``'s position, as it is in the file: its fields up to and
    including the empty line that ends them; or, when a line comes that is not a field (nor
    a field's continuation), the fields before it: the body starts there, as Postfix's
    cleanup has it. Lines end as the encoder ends them (CRLF, LF or a bare CR), so no header
    can hide behind a bare CR. Reads in small blocks, at most :data:`MAX_HEADER_OCTETS` and
    a block."""
    data = bytearray()
    line_start = 0
    while True:
        try:
            block = file.read(_HEADER_BLOCK)
        except OSError as exc:
            raise UnreadableMessageError(f"cannot read {name}: {exc.strerror}") from None
        data += block
        end, line_start = _header_end(data, line_start, eof=not block)
        if end is not None and end <= MAX_HEADER_OCTETS:
            return bytes(data[:end])
        if len(data) > MAX_HEADER_OCTETS:
            raise InvalidMessageError(
                f"message header block is longer than {MAX_HEADER_OCTETS >> 20} MiB "
                "(no empty line ends it)"
            )


def _header_end(data: bytearray, line_start: int, *, eof: bool) -> tuple[int | None, int]:
    """Where the header block ends, if ``data`` holds its end (after the empty line, or
    where a line that is not a field starts), and where the line being read starts, to go
    on from there when more data comes."""
    for match in _LINE_END.finditer(data, line_start):
        if match.group() == b"\r" and match.end() == len(data) and not eof:
            return None, line_start  # a CR at the end may be the first half of a CRLF
        if match.start() == line_start:
            return match.end(), line_start
        if not _is_field(data, line_start, match.start()):
            return line_start, line_start
        line_start = match.end()
    if line_start == len(data) or _is_field(data, line_start, len(data), finished=eof):
        return (len(data) if eof else None), line_start  # only fields, or more to read
    return line_start, line_start


def _is_field(data: bytearray, start: int, end: int, *, finished: bool = True) -> bool:
    """Whether ``data[start:end]`` is a header field (RFC 5322 2.2: a name of printable
    ASCII but ":", then ":") or, after the first line, a continuation (RFC 5322 2.2.3).
    An unfinished line counts as one while its name may still end in ":" (and is no longer
    than a line may be)."""
    if start < end and data[start] in (0x20, 0x09):  # SP or HT
        return start > 0
    name = _FIELD_NAME.match(data, start, end)
    stop = name.end() if name else start
    if stop == end:  # no ":" yet: the name may go on in the next block
        return not finished and end - start <= MAX_LINE_OCTETS
    return stop > start and data[stop : stop + 1] == b":"


def ends_with_empty_line(head: bytes) -> bool:
    """Whether a header block from :func:`read_header_block` ends with its empty line (not
    at a line that is no field, nor at the end of the input)."""
    return _LINE_END.split(head)[-2:] == [b"", b""]


def _canonical_lines(head: bytes) -> bytes:
    """``head`` with every line ending (CRLF, bare LF, bare CR) made one LF."""
    return head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def header_fields(head: bytes) -> email.message.Message:
    """The fields of a header block, parsed (the modern policy: address fields have
    ``.addresses``; a field that does not parse may raise)."""
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
        _canonical_lines(head) + b"\n"
    )


def header_recipients(head: bytes) -> tuple[list[str], str | None]:
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


def strip_bcc(message: bytes) -> bytes:
    """``message`` (a header block, or a whole message) without its Bcc and Resent-Bcc fields, their
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
            skipping = text.lower().startswith((b"bcc:", b"resent-bcc:"))
        if skipping:
            removed = True
        else:
            kept.append(text)
    else:
        text = message[start:]  # a last line with no ending
        if text and not (
            (text[:1] in (b" ", b"\t") and skipping)
            or text.lower().startswith((b"bcc:", b"resent-bcc:"))
        ):
            kept.append(text)
        elif text:
            removed = True
    if not removed:
        return message
    return b"".join(line + b"\r\n" for line in kept) + rest


def content_of(file: BinaryIO, path: str | None, prefix: bytes, offset: int) -> Content:
    """``prefix``, then ``file`` (or the file at ``path``) from ``offset`` on, as content."""
    if path is not None:
        return Content.from_path(path, prefix=prefix, offset=offset)
    file.seek(offset)  # a spool file is read from here (after the header block) on every send
    return Content.from_file(file, prefix=prefix)


def scan(content: Content) -> BodyInfo:
    """One streaming pass over the content, for SIZE, BODY=8BITMIME and long lines."""
    try:
        info = content.scan()
    except ContentError as exc:
        raise UnreadableMessageError(str(exc)) from None
    if info.long_lines:
        raise InvalidMessageError("message has a line longer than 998 octets (RFC 5322 2.1.1)")
    return info


def folded(content: Content) -> tuple[Content, BodyInfo]:
    """``content``, or when a line is over 998 octets (RFC 5322 2.1.1), a copy with each such
    line broken by CRLF SP, as Postfix does on output: mail from cron is not lost for one
    long line of output. Read in chunks, never whole."""
    try:
        info = content.scan()
    except ContentError as exc:
        raise UnreadableMessageError(str(exc)) from None
    if not info.long_lines:
        return content, info
    result = Content.from_file(_wire_copy(content))
    return result, scan(result)


def signed(content: Content, keys: Sequence[DkimKey]) -> tuple[Content, BodyInfo]:
    """``content`` as it goes on the wire (CRLF line ends, long lines folded), in a new
    spool file, with a DKIM-Signature field per key before it (RFC 6376 5): the signature
    covers exactly the bytes stored and sent. Read in chunks, never whole."""
    copy = _wire_copy(content)
    try:
        signature = sign(copy, keys)
    except DkimError as exc:
        copy.close()
        raise InvalidMessageError(f"cannot DKIM-sign the message: {exc}") from None
    result = Content.from_file(copy, prefix=signature)
    return result, scan(result)


def _wire_copy(content: Content) -> BinaryIO:
    """``content`` as the encoder sends it (CRLF line ends, long lines folded, no dots
    stuffed) in an anonymous temporary file, at its start."""
    try:
        copy = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the content
    except OSError as exc:
        raise SpoolError(f"cannot spool the message: {exc.strerror}") from None
    try:
        encoder = BodyEncoder(dot_stuff=False, line_policy=LinePolicy.FOLD)
        for chunk in content.chunks():
            copy.write(encoder.encode(chunk))
        copy.write(encoder.finish())
        copy.seek(0)
    except ContentError as exc:
        copy.close()
        raise UnreadableMessageError(str(exc)) from None
    except OSError as exc:
        copy.close()
        raise SpoolError(f"cannot spool the message: {exc.strerror}") from None
    return copy
