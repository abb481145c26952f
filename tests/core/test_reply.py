"""The reply parser: strict, incremental, bounded (RFC 5321 4.2; docs/security.md, denial of
service)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    MAX_LINE_LENGTH,
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
    EnhancedStatus,
    RemoteProtocolError,
    Reply,
    ReplyParser,
)


def parse_all(data: bytes, *, enhanced: bool = False) -> list[Reply]:
    parser = ReplyParser()
    parser.enhanced_status_codes = enhanced
    parser.feed(data)
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


def test_multiline_reply() -> None:
    [reply] = parse_all(b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
    assert reply.code == 250 and reply.lines == ("mx.example", "PIPELINING", "SIZE 100")
    assert reply.is_positive and not reply.is_transient and not reply.is_permanent


def test_code_alone_and_bare_lf_are_accepted() -> None:
    assert [r.lines for r in parse_all(b"250\r\n354 go\n")] == [("",), ("go",)]


@pytest.mark.parametrize(
    "data",
    [
        b"2200 ok\r\n",  # Twisted reads this as 220
        b"220x ok\r\n",
        b"22 ok\r\n",
        b"620 ok\r\n",
        b"190 ok\r\n",
        b"260 ok\r\n",
        b"2a0 ok\r\n",
        b"250-a\r\n251 b\r\n",  # the code changed mid-reply
        b"\r\n",
        b"hello\r\n",
    ],
)
def test_strict_syntax(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_all(data)


def test_enhanced_status_only_when_advertised_and_matching() -> None:
    assert parse_all(b"550 5.1.1 no such user\r\n")[0].enhanced is None
    [reply] = parse_all(b"550 5.1.1 no such user\r\n", enhanced=True)
    assert reply.enhanced == EnhancedStatus(5, 1, 1) and str(reply.enhanced) == "5.1.1"
    assert parse_all(b"450 5.1.1 mismatched class\r\n", enhanced=True)[0].enhanced is None
    assert str(parse_all(b"550 5.1.1 x\r\n", enhanced=True)[0]) == "550 5.1.1 x"


def test_a_megabyte_line_is_refused_without_holding_it() -> None:
    parser = ReplyParser()
    with pytest.raises(RemoteProtocolError):
        for _ in range(1024):
            parser.feed(b"2" * 1024)
            assert parser.next_reply() is None
    assert parser.pending <= MAX_LINE_LENGTH + 1024


def test_endless_continuation_lines_are_refused() -> None:
    parser = ReplyParser()
    parser.feed(b"220-x\r\n" * 100_000)
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()
    assert MAX_REPLY_LINES < 100_000


def test_total_reply_size_is_bounded() -> None:
    line = b"250-" + b"x" * 4000 + b"\r\n"
    with pytest.raises(RemoteProtocolError):
        parse_all(line * (MAX_REPLY_BYTES // len(line) + 1))


def test_undecodable_text_is_replaced() -> None:
    assert parse_all(b"550 caf\xe9\r\n")[0].lines == ("caf\ufffd",)


def test_synthesized_reply() -> None:
    reply = Reply.synthesized(451, "4.4.2", "connection lost")
    assert reply.local and reply.is_transient and str(reply.enhanced) == "4.4.2"


@settings(max_examples=1000)
@given(
    data=st.lists(
        st.sampled_from([b"250", b"-", b" ", b"\r\n", b"\n", b"\r", b"5.1.1", b"2200"])
        | st.binary(max_size=12),
        max_size=30,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=8),
    enhanced=st.booleans(),
)
def test_property_parser_raises_only_remote_protocol_error(
    data: bytes, cuts: list[int], enhanced: bool
) -> None:
    parser = ReplyParser()
    parser.enhanced_status_codes = enhanced
    position = 0
    try:
        for size in [*cuts, len(data)]:
            parser.feed(data[position : position + size])
            position += size
            while (reply := parser.next_reply()) is not None:
                assert 200 <= reply.code <= 559 and reply.lines
    except RemoteProtocolError:
        pass
