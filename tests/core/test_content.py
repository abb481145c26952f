"""Content sources and the driver's streaming path, in memory."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    ClientConfig,
    ClientConnection,
    Content,
    ContentError,
    Envelope,
    Event,
    Message,
    SessionDriver,
    Status,
    scan_body,
)
from mxsend.protocol._session import INLINE_BODY
from mxsend.testing import FakeServer, converse

BODY = b"Subject: s\n\n" + b"".join(b".%d line\r\n" % i for i in range(50_000))


def test_bytes_path_file_and_chunks_give_the_same_stream(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(BODY)
    with path.open("rb") as handle:
        sources = [
            Content.from_bytes(BODY),
            Content.from_path(path),
            Content.from_file(handle),
            Content.from_chunks([BODY[:7], BODY[7:]]),
        ]
        for content in sources:
            assert content.repeatable
            assert b"".join(content.chunks()) == BODY
            assert b"".join(content.chunks()) == BODY  # again, for the next MX host
            assert content.scan() == scan_body(BODY)


def test_prefix_and_offset_replace_the_header_block(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Bcc: x@example.org\nTo: y@example.org\n\nbody\n")
    content = Content.from_path(path, prefix=b"To: y@example.org\n", offset=37)
    assert b"".join(content.chunks()) == b"To: y@example.org\n\nbody\n"
    assert content.size == 24 and content.in_memory is None


def test_a_file_is_read_from_where_it_was_given(tmp_path: Path) -> None:
    handle = io.BytesIO(b"skip" + BODY)
    handle.seek(4)
    content = Content.from_file(handle)
    assert b"".join(content.chunks()) == BODY
    assert max(map(len, content.chunks(chunk_size=1000))) == 1000


def test_one_shot_sources_are_read_once_and_never_scanned() -> None:
    content = Content.from_chunks(iter([b"a\n", b"b\n"]))
    assert not content.repeatable
    with pytest.raises(ContentError, match="scanned"):
        content.scan()
    assert b"".join(content.chunks()) == b"a\nb\n"
    with pytest.raises(ContentError, match="only once"):
        content.chunks()


def test_unreadable_and_changed_files_raise_content_error(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="cannot read"):
        list(Content.from_path(tmp_path / "missing").chunks())
    path = tmp_path / "m.eml"
    path.write_bytes(BODY)
    content = Content.from_path(path)
    content.scan()
    with path.open("ab") as handle:
        handle.write(b"more\n")
    with pytest.raises(ContentError, match="changed"):
        list(content.chunks())
    os.truncate(path, 10)
    with pytest.raises(ContentError, match="only 10 octets"):
        list(content.chunks())


def test_chunks_must_be_bytes() -> None:
    with pytest.raises(ContentError, match="must be bytes"):
        list(Content.from_chunks(["text"]).chunks())  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 700))
def test_scan_of_any_chunking_matches_scan_body(data: bytes, size: int) -> None:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    assert Content.from_chunks(pieces).scan() == scan_body(data)


def deliver(content: bytes | Content, server: FakeServer) -> SessionDriver:
    conn = ClientConnection(ClientConfig("client.example"))
    envelope = Envelope.build("a@example.com", ["b@example.net"])
    driver = SessionDriver(conn, [Message(envelope, content)])

    def on_event(event: Event) -> None:
        driver.handle(event)

    converse(conn, server, on_event, driver=driver)
    return driver


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_streamed_content_arrives_whole(tmp_path: Path, chunking: bool) -> None:
    assert len(BODY) > INLINE_BODY
    path = tmp_path / "m.eml"
    path.write_bytes(BODY)
    extensions = ("PIPELINING", "CHUNKING") if chunking else ("PIPELINING",)
    server = FakeServer(extensions=extensions)
    driver = deliver(Content.from_path(path), server)
    assert driver.results[0].recipients[0].status is Status.DELIVERED
    assert server.messages[0].content == BODY.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_a_content_error_defers_that_message_with_a_local_reply() -> None:
    content = Content.from_chunks(iter([b"x" * (INLINE_BODY + 1)]))
    list(content.chunks())  # used up before the send
    server = FakeServer()
    driver = deliver(content, server)
    [recipient] = driver.results[0].recipients
    assert recipient.status is Status.DEFERRED and str(recipient.reply.enhanced) == "4.3.0"
    assert not server.messages


def test_a_scanned_long_line_is_refused_before_the_transaction(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: s\n\n" + b"x" * 1200 + b"\n")
    content = Content.from_path(path)
    content.scan()
    server = FakeServer()
    driver = deliver(content, server)
    assert driver.results[0].recipients[0].reply.code == 554
    assert not server.messages
