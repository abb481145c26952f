"""Message content as a source of chunks: bytes in memory, a file, or any iterable of chunks.

A message may be sent more than once (to the next MX host, or again later), so a source gives
a fresh stream each time :meth:`Content.chunks` is called, where it can: bytes and files can,
a one-shot iterator cannot. Files are read in :data:`CHUNK_SIZE` pieces and never held whole;
a file that changes size between the scan and the send, or while it is being sent, raises
:class:`ContentError` before the end of data goes out, so a changed file is never delivered as
if it were the one that was scanned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from mxsend.protocol._encoder import BodyInfo, measure
from mxsend.protocol._errors import ContentError

__all__ = ["CHUNK_SIZE", "Content"]

#: Octets read from a file at a time: large enough for few system calls, small enough that a
#: message of any size costs the client a bounded amount of memory.
CHUNK_SIZE = 65536


class Content:
    """Where a message's content comes from, with what is known of it up front.

    ``size`` is the raw size in octets when known without reading (bytes, a file's size);
    ``info`` is what :meth:`scan` learnt (canonical size for SIZE, 8-bit, long lines).
    """

    __slots__ = ("_data", "_file", "_info", "_iterable", "_offset", "_path", "_prefix", "_used")

    def __init__(self) -> None:  # use the from_* constructors
        self._data: bytes | None = None
        self._path: str | None = None
        self._file: BinaryIO | None = None
        self._iterable: Iterable[bytes] | None = None
        self._prefix = b""
        self._offset = 0
        self._used = False
        self._info: BodyInfo | None = None

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Content:
        content = cls()
        content._data = bytes(data)
        return content

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, prefix: bytes = b"", offset: int = 0
    ) -> Content:
        """The file at ``path`` from ``offset`` on, after ``prefix`` (e.g. headers rewritten
        at submission, with the file's own header block skipped)."""
        content = cls()
        content._path = os.fspath(path)
        content._prefix = bytes(prefix)
        content._offset = offset
        return content

    @classmethod
    def from_file(cls, file: BinaryIO, *, prefix: bytes = b"") -> Content:
        """An open binary file, from its current position. A seekable file is read again
        from that position for every send; another can be sent once."""
        content = cls()
        content._file = file
        content._prefix = bytes(prefix)
        try:
            content._offset = file.tell() if file.seekable() else -1
        except OSError:
            content._offset = -1
        return content

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes]) -> Content:
        """Any iterable of bytes chunks; a list or tuple can be sent again, an iterator once."""
        content = cls()
        content._iterable = chunks
        return content

    @classmethod
    def of(cls, body: bytes | Content) -> Content:
        return body if isinstance(body, Content) else cls.from_bytes(body)

    # -- what is known -----------------------------------------------------------------------

    @property
    def in_memory(self) -> bytes | None:
        """The whole content when it is already in memory, else None."""
        return self._data

    @property
    def size(self) -> int | None:
        """Raw octets, when known without reading the content."""
        if self._data is not None:
            return len(self._data)
        if self._info is not None:
            return self._info.raw_size
        if self._path is not None:
            try:
                return len(self._prefix) + max(0, os.stat(self._path).st_size - self._offset)
            except OSError:
                return None
        return None

    @property
    def info(self) -> BodyInfo | None:
        """What :meth:`scan` found, or None before it ran."""
        return self._info

    @property
    def repeatable(self) -> bool:
        """Whether :meth:`chunks` can be called again."""
        if self._file is not None:
            return self._offset >= 0
        if self._iterable is not None:
            return iter(self._iterable) is not self._iterable
        return True

    def scan(self) -> BodyInfo:
        """Read the content once, in chunks, and describe it as it will be sent: canonical
        size (RFC 1870), 8-bit octets (RFC 6152), lines over 998 octets. The result is kept;
        later sends check that a file still has the size it had then. A one-shot source
        cannot be scanned (it would be used up): give its size and BODY in MailOptions."""
        if self._info is not None:
            return self._info
        if not self.repeatable:
            raise ContentError("content that can be read only once cannot be scanned first")
        self._info = measure(self.chunks())
        return self._info

    # -- reading -----------------------------------------------------------------------------

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """A fresh stream of the content in pieces of at most about ``chunk_size`` octets.

        Raises :class:`ContentError` (from the iterator) when the content cannot be read, or
        can be read only once and already was, or is no longer the size it was scanned at."""
        if self._data is not None:
            return _slices(self._data, chunk_size)
        if self._iterable is not None:
            if not self.repeatable:
                self._claim()
            return self._checked(iter(self._iterable))
        if self._file is not None:
            if self._offset < 0:
                self._claim()
            return self._checked(self._read_file(self._file, chunk_size, close=None))
        assert self._path is not None
        return self._checked(self._read_path(self._path, chunk_size))

    def _claim(self) -> None:
        if self._used:
            raise ContentError("the message content can be read only once and already was")
        self._used = True

    def _read_path(self, path: str, chunk_size: int) -> Iterator[bytes]:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by _read_file
        except OSError as exc:
            raise ContentError(f"cannot read {path}: {exc.strerror}") from None
        return self._read_file(file, chunk_size, close=file.close)

    def _read_file(
        self, file: BinaryIO, chunk_size: int, *, close: Callable[[], None] | None
    ) -> Iterator[bytes]:
        try:
            if self._prefix:
                yield self._prefix
            if self._offset > 0 or (close is None and self._offset == 0):
                file.seek(self._offset)  # a given file is read again from where it started
            read = file.read
            while chunk := read(chunk_size):
                yield chunk
        except OSError as exc:
            raise ContentError(f"cannot read the message content: {exc.strerror or exc}") from None
        finally:
            if close is not None:
                close()

    def _checked(self, stream: Iterator[bytes]) -> Iterator[bytes]:
        """Pass ``stream`` on, raising before its end if its length is not the scanned one."""
        expected = self._info.raw_size if self._info is not None else None
        seen = 0
        for chunk in stream:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ContentError(
                    f"message content chunks must be bytes, not {type(chunk).__name__}"
                )
            seen += len(chunk)
            if expected is not None and seen > expected:
                raise ContentError(_changed(expected, seen, "more"))
            yield bytes(chunk)
        if expected is not None and seen != expected:
            raise ContentError(_changed(expected, seen, "only"))


def _changed(expected: int, seen: int, how: str) -> str:
    return (
        f"the message content changed while it was sent: {how} {seen} octets, "
        f"{expected} when scanned"
    )


def _slices(data: bytes, size: int) -> Iterator[bytes]:
    if len(data) <= size:
        yield data
        return
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])
