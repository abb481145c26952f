"""DATA transparency and canonical line endings (RFC 5321 4.5.2; docs/security.md, SMTP
smuggling)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsend.protocol import BodyEncoder, LinePolicy, LineTooLongError, scan_body
from mxsend.protocol._encoder import encode_whole


def normalise(data: bytes) -> bytes:
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b".\r\n")
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def encode(chunks: list[bytes], **kwargs: object) -> bytes:
    encoder = BodyEncoder(**kwargs)  # type: ignore[arg-type]
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# Bytes rich in the characters that matter, plus anything at all.
interesting = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"\n.\n", b"a", b"\xff"])
    | st.binary(max_size=8),
    max_size=40,
).map(b"".join)


@settings(max_examples=1000)
@given(data=interesting, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_property_data_transparency(data: bytes, cuts: list[int]) -> None:
    wire = encode(chunked(data, cuts), line_policy=LinePolicy.ALLOW)
    # The DATA command line ends in CRLF, so the end-of-data mark is CRLF . CRLF.
    stream = b"\r\n" + wire
    assert stream.count(b"\r\n.\r\n") == 1 and stream.endswith(b"\r\n.\r\n")
    assert wire.count(b"\r") == wire.count(b"\r\n") == wire.count(b"\n")
    assert unstuff(wire) == normalise(data)


@settings(max_examples=300)
@given(data=interesting, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_chunking_never_changes_the_output(data: bytes, cuts: list[int]) -> None:
    whole = encode([data], line_policy=LinePolicy.ALLOW)
    assert encode(chunked(data, cuts), line_policy=LinePolicy.ALLOW) == whole
    assert encode(chunked(data, cuts), dot_stuff=False, line_policy=LinePolicy.ALLOW) == normalise(
        data
    )


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b""], b".\r\n"),
        ([b".\nMAIL FROM:<ceo@bank>"], b"..\r\nMAIL FROM:<ceo@bank>\r\n.\r\n"),
        ([b"a\r\n", b".\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r", b"\n.", b"b"], b"a\r\n..b\r\n.\r\n"),
        ([b"x\r\n.\r\n", b"DATA"], b"x\r\n..\r\nDATA\r\n.\r\n"),
        ([b"bare\rcr\n"], b"bare\r\ncr\r\n.\r\n"),
        ([b"crcr\r\r\n"], b"crcr\r\n\r\n.\r\n"),
        ([b"ends in cr\r"], b"ends in cr\r\n.\r\n"),
        ([b"\n.\r\n"], b"\r\n..\r\n.\r\n"),
    ],
)
def test_known_smuggling_shapes(chunks: list[bytes], wire: bytes) -> None:
    assert encode(chunks) == wire
    assert encode_whole(b"".join(chunks))[0] == wire  # given whole, with its transaction


# Content given whole (with its transaction) takes encode_whole; streamed, a BodyEncoder.
lines_and_long = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"a", b"\xff", b"x" * 500])
    | st.binary(max_size=8),
    max_size=40,
).map(b"".join)


@settings(max_examples=500)
@given(data=lines_and_long, stuff=st.booleans(), policy=st.sampled_from(list(LinePolicy)))
def test_content_given_whole_encodes_as_the_encoder_does(
    data: bytes, stuff: bool, policy: LinePolicy
) -> None:
    encoder = BodyEncoder(dot_stuff=stuff, line_policy=policy)
    try:
        expected: object = (encoder.encode(data) + encoder.finish(), encoder.size)
    except LineTooLongError:
        expected = LineTooLongError
    try:
        got: object = encode_whole(data, dot_stuff=stuff, line_policy=policy)
    except LineTooLongError:
        got = LineTooLongError
    assert got == expected


def test_reports_eight_bit_and_size() -> None:
    encoder = BodyEncoder()
    encoder.encode(b"caf\xc3\xa9\n")
    encoder.finish()
    assert encoder.eight_bit and encoder.size == 7
    info = scan_body(b"plain\nascii")
    assert (info.size, info.eight_bit, info.long_lines) == (14, False, 0)


def test_long_line_rejected_by_default() -> None:
    encoder = BodyEncoder()
    encoder.encode(b"a" * 500)
    with pytest.raises(LineTooLongError) as caught:
        encoder.encode(b"b" * 499 + b"\n")
    assert caught.value.reply.code == 554


@settings(max_examples=200)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=6),
)
def test_fold_keeps_every_line_within_998(lengths: list[int], cuts: list[int]) -> None:
    data = b"\n".join(b"x" * n for n in lengths)
    encoder = BodyEncoder(line_policy=LinePolicy.FOLD)
    wire = b"".join(encoder.encode(c) for c in chunked(data, cuts)) + encoder.finish()
    lines = wire[:-3].split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    # Unfolding (dropping each inserted CRLF SP) gives the content back.
    assert wire[:-3].replace(b"\r\n ", b"") == normalise(data).replace(b"\r\n ", b"")
    assert encoder.long_lines == sum(1 for n in lengths if n > 998)
    assert scan_body(data).long_lines == encoder.long_lines


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 500, 997, 998, 999, 1000, 2100]),
            st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r", b"\n\r", b""]),
        ),
        max_size=6,
    )
)
def test_has_long_line_matches_splitlines(parts: list[tuple[int, bytes]]) -> None:
    """The LF-jumping fast path of has_long_line agrees with splitting at every line end."""
    from mxsend.protocol._encoder import has_long_line

    data = b"".join(b"x" * size + end for size, end in parts)
    assert has_long_line(data) == (max(map(len, data.splitlines()), default=0) > 998)
