"""DSNs (RFC 3464, RFC 6522) parse back with the stdlib ``email`` package field by field,
stream a returned message without holding it, and survive hostile reply text."""

from __future__ import annotations

import ast
import email
import email.message
import email.policy
import email.utils
import itertools
import pathlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mxsend.queue._bounce
from mxsend.protocol import ContentError
from mxsend.queue._bounce import (
    DSN,
    MAX_DIAGNOSTIC_LENGTH,
    Action,
    DSNError,
    DSNRecipient,
    DSNRequest,
    NullSenderError,
    build_dsn,
)

ARRIVAL = datetime(2024, 3, 1, 9, 30, 0, tzinfo=UTC)
NOW = datetime(2024, 3, 2, 10, 0, 0, tzinfo=timezone(timedelta(hours=1)))
HEADERS = b"From: alice@example.com\nTo: bob@example.net\nSubject: hello\n"
EMAIL_HEADERS = email.policy.default

BOB = DSNRecipient(
    "bob@example.net",
    Action.FAILED,
    "5.1.1",
    original_recipient="Bob@example.net",
    remote_mta="mx1.example.net",
    diagnostic="550 5.1.1 <bob@example.net>: no such user",
    last_attempt=ARRIVAL + timedelta(minutes=1),
)


def _request(*recipients: DSNRecipient, **changes: Any) -> DSNRequest:
    fields: dict[str, Any] = {
        "reporting_mta": "mta.example.org",
        "sender": "alice@example.com",
        "arrival": ARRIVAL,
        "recipients": recipients or (BOB,),
        "headers": HEADERS,
        "now": NOW,
    }
    fields.update(changes)
    return DSNRequest(**fields)


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def _parts(message: email.message.Message) -> list[email.message.EmailMessage]:
    """The parts of a multipart, the message in a message/rfc822, or the header blocks of a
    message/delivery-status (the stdlib parses each block as a headers-only message)."""
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert all(isinstance(part, email.message.EmailMessage) for part in parts)
    return [part for part in parts if isinstance(part, email.message.EmailMessage)]


def _blocks(message: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    """The delivery-status part's header blocks: per-message first, then one per recipient."""
    report = _parts(message)[1]
    assert report.get_content_type() == "message/delivery-status"
    return _parts(report)


def _check_lines(data: bytes) -> None:
    """Every line ends with CRLF, and none is over 998 octets (RFC 5322 2.1.1)."""
    assert data.endswith(b"\r\n")
    for line in data[:-2].split(b"\r\n"):
        assert b"\r" not in line
        assert b"\n" not in line
        assert len(line) <= 998


def _tokens(*values: str) -> Callable[[], str]:
    return iter(values).__next__


# -- structure ----------------------------------------------------------------------------------


def test_a_bounce_is_a_multipart_report_of_three_parts() -> None:
    dsn = build_dsn(_request(), random_token=_tokens("b0und", "m1d"))
    data = dsn.as_bytes()
    _check_lines(data)
    message = _parse(data)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message.get_boundary() == "=_b0und"
    assert [p.get_content_type() for p in _parts(message)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert str(message["From"]) == "Mail Delivery System <MAILER-DAEMON@mta.example.org>"
    assert message["From"].addresses[0].display_name == "Mail Delivery System"
    assert message["To"].addresses[0].addr_spec == "alice@example.com"
    assert b"\r\nTo: alice@example.com\r\n" in data
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert email.utils.parsedate_to_datetime(str(message["Date"])) == NOW
    assert message["Message-ID"] == "<20240302090000.m1d@mta.example.org>"
    assert message["MIME-Version"] == "1.0"
    assert message["Auto-Submitted"] == "auto-replied"
    assert "Content-Transfer-Encoding" not in message
    assert not dsn.eight_bit
    assert not dsn.smtputf8
    assert dsn.original is None
    assert dsn.size == len(data)
    assert b"--=_b0und--\r\n" in data


def test_per_message_and_per_recipient_fields() -> None:
    data = build_dsn(_request(envid="QQ314159")).as_bytes()
    blocks = _blocks(_parse(data))
    assert len(blocks) == 2
    head, bob = blocks
    assert list(head.keys()) == ["Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"]
    assert head["Reporting-MTA"] == "dns; mta.example.org"
    assert head["Original-Envelope-Id"] == "QQ314159"
    assert email.utils.parsedate_to_datetime(head["Arrival-Date"]) == ARRIVAL
    assert list(bob.keys()) == [
        "Original-Recipient",
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
        "Last-Attempt-Date",
    ]
    assert bob["Original-Recipient"] == "rfc822; Bob@example.net"
    assert bob["Final-Recipient"] == "rfc822; bob@example.net"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx1.example.net"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: no such user"
    last = email.utils.parsedate_to_datetime(bob["Last-Attempt-Date"])
    assert last == ARRIVAL + timedelta(minutes=1)


def test_optional_fields_are_left_out_when_unknown() -> None:
    carol = DSNRecipient("carol@example.net", Action.FAILED, "5.4.4")
    blocks = _blocks(_parse(build_dsn(_request(carol)).as_bytes()))
    assert list(blocks[0].keys()) == ["Reporting-MTA", "Arrival-Date"]
    assert list(blocks[1].keys()) == ["Final-Recipient", "Action", "Status"]


def test_the_text_part_says_what_happened_in_plain_english() -> None:
    message = _parse(build_dsn(_request()).as_bytes())
    text = _parts(message)[0]
    assert text.get_content_charset() == "us-ascii"
    body = text.get_content()
    assert "mta.example.org" in body
    assert "<bob@example.net>: could not be delivered" in body
    assert "originally addressed to <Bob@example.net>" in body
    assert "mx1.example.net said: 550 5.1.1 <bob@example.net>: no such user" in body


def test_several_recipients_get_a_block_each_in_order() -> None:
    carol = DSNRecipient("carol@example.net", Action.FAILED, "5.2.2", diagnostic="552 full")
    dave = DSNRecipient(
        "dave@example.org", Action.DELAYED, "4.4.1", will_retry_until=ARRIVAL + timedelta(days=5)
    )
    message = _parse(build_dsn(_request(BOB, carol, dave)).as_bytes())
    blocks = _blocks(message)
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; bob@example.net",
        "rfc822; carol@example.net",
        "rfc822; dave@example.org",
    ]
    assert [b["Action"] for b in blocks[1:]] == ["failed", "failed", "delayed"]
    assert "Original-Recipient" in blocks[1]
    assert "Original-Recipient" not in blocks[2]
    assert "Will-Retry-Until" in blocks[3]
    assert message["Subject"] == "Undelivered Mail Returned to Sender"  # a failure comes first
    body = _parts(message)[0].get_content()
    assert "<carol@example.net>: could not be delivered" in body
    assert "<dave@example.org>: delayed, will keep trying until" in body


def test_a_delay_warning() -> None:
    until = ARRIVAL + timedelta(days=5)
    delayed = DSNRecipient(
        "bob@example.net",
        Action.DELAYED,
        "4.4.7",
        remote_mta="mx1.example.net",
        diagnostic="451 4.3.0 try again later",
        will_retry_until=until,
    )
    message = _parse(build_dsn(_request(delayed)).as_bytes())
    assert message["Subject"] == "Delayed Mail (still being retried)"
    block = _blocks(message)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.7"
    assert email.utils.parsedate_to_datetime(block["Will-Retry-Until"]) == until
    body = _parts(message)[0].get_content()
    assert "will keep trying until" in " ".join(body.split())
    assert email.utils.format_datetime(until) in " ".join(body.split())


@pytest.mark.parametrize("action", [Action.DELIVERED, Action.RELAYED, Action.EXPANDED])
def test_a_success_report(action: Action) -> None:
    done = DSNRecipient("bob@example.net", action, "2.0.0", remote_mta="mx1.example.net")
    message = _parse(build_dsn(_request(done)).as_bytes())
    assert message["Subject"] == "Successful Mail Delivery Report"
    assert _blocks(message)[1]["Action"] == action.value
    body = _parts(message)[0].get_content()
    assert "<bob@example.net>: " + ("relayed" if action is Action.RELAYED else "delivered") in body


def test_postmaster_and_message_id_domain_can_be_given() -> None:
    request = _request(postmaster="postmaster@example.org", message_id_domain="ids.example.org")
    message = _parse(build_dsn(request, random_token=_tokens("b", "id1")).as_bytes())
    assert message["From"].addresses[0].addr_spec == "postmaster@example.org"
    assert message["Message-ID"] == "<20240302090000.id1@ids.example.org>"


def test_utf8_addresses_stay_7bit_in_the_report() -> None:
    # RFC 6533 3: utf-8 address type with \x{HEX} escapes in message/delivery-status.
    jose = DSNRecipient(
        "josé@example.net", Action.FAILED, "5.1.1", original_recipient="josé@例え.jp"
    )
    dsn = build_dsn(_request(jose))
    data = dsn.as_bytes()
    assert data.isascii()
    assert not dsn.eight_bit
    assert not dsn.smtputf8
    message = _parse(data)
    block = _blocks(message)[1]
    assert block["Final-Recipient"] == "utf-8; jos\\x{E9}@example.net"
    assert block["Original-Recipient"] == "utf-8; jos\\x{E9}@xn--r8jz45g.jp"
    text = _parts(message)[0]
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert "<josé@example.net>: could not be delivered" in text.get_content()


def test_a_utf8_sender_needs_smtputf8() -> None:
    dsn = build_dsn(_request(sender="zoë@example.com"))
    assert dsn.smtputf8
    assert dsn.eight_bit
    # RFC 6532 UTF-8 in the header (the stdlib parses bytes headers as ASCII, so read raw).
    assert "\r\nTo: zoë@example.com\r\n".encode() in dsn.head


# -- the returned headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        b"From: alice@example.com\nTo: bob@example.net\nSubject: hello\n",
        b"From: alice@example.com\nTo: bob@example.net\nSubject: hello\n\n",
        b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nthe body\r\n",
        b"From: alice@example.com\r\nTo: bob@example.net\nSubject: hello",
        b"From: alice@example.com\rTo: bob@example.net\r\nSubject: hello\r\n\r\n",
    ],
    ids=["lf", "lf-blank", "crlf-with-body", "mixed-unended", "bare-cr"],
)
def test_the_headers_come_back_as_given_with_crlf_line_ends(headers: bytes) -> None:
    data = build_dsn(_request(headers=headers)).as_bytes()
    _check_lines(data)
    returned = _parts(_parse(data))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    expected = "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hello\r\n"
    assert returned.get_payload() == expected
    assert b"\r\nSubject: hello\r\n\r\n--=_" in data  # the part ends, then the delimiter
    assert b"the body" not in data


def test_8bit_headers_are_labelled_8bit() -> None:
    headers = "From: alice@example.com\nSubject: café\n".encode()
    dsn = build_dsn(_request(headers=headers))
    assert dsn.eight_bit
    message = _parse(dsn.as_bytes())
    assert message["Content-Transfer-Encoding"] == "8bit"
    returned = _parts(message)[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert "Subject: café".encode() in dsn.as_bytes()


def test_a_header_line_over_998_octets_is_folded() -> None:
    headers = b"X-Long: " + b"y" * 3000 + b"\n"
    data = build_dsn(_request(headers=headers)).as_bytes()
    _check_lines(data)


def test_the_boundary_is_drawn_again_when_the_content_has_it() -> None:
    headers = HEADERS + b"X-Trap: --=_first\n"
    dsn = build_dsn(_request(headers=headers), random_token=_tokens("first", "second", "mid"))
    message = _parse(dsn.as_bytes())
    assert message.get_boundary() == "=_second"
    assert "X-Trap: --=_first" in _parts(message)[2].get_payload()
    assert message["Message-ID"].startswith("<20240302090000.mid@")


# -- RET=FULL ----------------------------------------------------------------------------------

ORIGINAL = (
    b"From: alice@example.com\nTo: bob@example.net\nSubject: the whole thing\n\n"
    + b"".join(b"line %d of the body\n" % i for i in range(2000))
    + b"--=_not-ours\n.\nlast line without an end"
)


def _canonical(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def test_ret_full_streams_the_whole_message_between_head_and_tail(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "message"
    path.write_bytes(ORIGINAL)
    dsn = build_dsn(_request(body_path=str(path), ret_full=True))
    assert dsn.original == str(path)
    assert dsn.original_size == len(_canonical(ORIGINAL))
    pieces = list(dsn.chunks(chunk_size=100))
    assert len(pieces) > 100  # read in pieces, never whole
    assert max(len(piece) for piece in pieces[1:-1]) <= 200
    data = b"".join(pieces)
    assert data == dsn.head + _canonical(ORIGINAL) + dsn.tail
    assert data == dsn.as_bytes() == b"".join(dsn)
    assert dsn.size == len(data)
    assert not dsn.eight_bit
    _check_lines(data)
    message = _parse(data)
    returned = _parts(message)[2]
    assert returned.get_content_type() == "message/rfc822"
    [inner] = _parts(returned)
    assert inner["Subject"] == "the whole thing"
    inner_body = inner.get_payload()
    assert isinstance(inner_body, str)
    assert inner_body.endswith("last line without an end\r\n")
    body = _parts(message)[0].get_content()
    assert "a copy of the message is attached" in " ".join(body.split())


def test_ret_full_with_an_8bit_message_is_labelled_8bit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "message"
    path.write_bytes("Subject: café\r\n\r\nnaïve\r\n".encode())
    dsn = build_dsn(_request(body_path=str(path), ret_full=True))
    assert dsn.eight_bit
    message = _parse(dsn.as_bytes())
    assert message["Content-Transfer-Encoding"] == "8bit"
    assert _parts(message)[2]["Content-Transfer-Encoding"] == "8bit"
    assert dsn.head.isascii()


def test_ret_full_returns_only_headers_when_nothing_failed(tmp_path: pathlib.Path) -> None:
    # RFC 3461 4.3: RET concerns failure DSNs; the others return the headers.
    path = tmp_path / "message"
    path.write_bytes(ORIGINAL)
    delayed = DSNRecipient("bob@example.net", Action.DELAYED, "4.4.1")
    dsn = build_dsn(_request(delayed, body_path=str(path), ret_full=True))
    assert dsn.original is None
    assert _parts(_parse(dsn.as_bytes()))[2].get_content_type() == "text/rfc822-headers"


def test_ret_full_boundary_is_checked_against_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "message"
    path.write_bytes(b"Subject: x\n\n" + b"a" * 70_000 + b"\n--=_taken\n")
    dsn = build_dsn(
        _request(body_path=str(path), ret_full=True), random_token=_tokens("taken", "free", "m")
    )
    assert _parse(dsn.as_bytes()).get_boundary() == "=_free"


def test_a_file_changed_after_the_build_is_not_sent(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "message"
    path.write_bytes(ORIGINAL)
    dsn = build_dsn(_request(body_path=str(path), ret_full=True))
    path.write_bytes(ORIGINAL + b"more\n")
    with pytest.raises(ContentError, match="since the DSN was built"):
        dsn.as_bytes()
    path.write_bytes(ORIGINAL[:-100])
    with pytest.raises(ContentError, match="since the DSN was built"):
        dsn.as_bytes()
    path.unlink()
    with pytest.raises(ContentError, match="cannot read"):
        dsn.as_bytes()


def test_an_unreadable_file_fails_the_build(tmp_path: pathlib.Path) -> None:
    request = _request(body_path=str(tmp_path / "missing"), ret_full=True)
    with pytest.raises(ContentError, match="cannot read"):
        build_dsn(request)


# -- hostile reply text ------------------------------------------------------------------------

HOSTILE = (
    "550 5.1.1 nope\r\nX-Injected: yes\r\n\r\nFinal-Recipient: rfc822; evil@example.com\n"
    "\rAction: delivered\x00\x1b[31m\x7f--=_b\r\n.\r\n\u2028\u00e9\udcff" + "A" * 5000 + " trailing"
)


def test_a_hostile_diagnostic_cannot_add_fields_parts_or_long_lines() -> None:
    request = _request(
        DSNRecipient("bob@example.net", Action.FAILED, "5.1.1", diagnostic=HOSTILE),
        DSNRecipient("carol@example.net", Action.FAILED, "5.1.1", diagnostic="550 " + "B" * 5000),
    )
    dsn = build_dsn(request)
    data = dsn.as_bytes()
    _check_lines(data)
    assert data.isascii()
    assert b"\x00" not in data
    assert b"\x1b" not in data
    assert b"\x7f" not in data
    message = _parse(data)
    assert len(_parts(message)) == 3
    blocks = _blocks(message)
    assert len(blocks) == 3
    expected = {"Final-Recipient", "Action", "Status", "Diagnostic-Code"}
    for block in blocks[1:]:
        assert set(block.keys()) == expected
        assert block["Action"] == "failed"
    assert blocks[1]["Final-Recipient"] == "rfc822; bob@example.net"
    code = blocks[1]["Diagnostic-Code"]
    assert code.startswith("smtp; 550 5.1.1 nope X-Injected: yes Final-Recipient:")
    assert code.endswith("...")
    assert len(code) <= len("smtp; ") + MAX_DIAGNOSTIC_LENGTH + 2  # spaces a cut word gains
    assert "X-Injected" not in _parts(message)[0]
    assert not any(re.match(rb"X-Injected", line) for line in data.split(b"\r\n"))


@settings(max_examples=60, deadline=None)
@given(
    diagnostics=st.lists(st.text(max_size=2500) | st.none(), min_size=1, max_size=3),
    headers=st.binary(max_size=300),
)
def test_any_diagnostic_keeps_the_structure(diagnostics: list[str | None], headers: bytes) -> None:
    recipients = tuple(
        DSNRecipient(f"r{i}@example.net", Action.FAILED, "5.0.0", diagnostic=text)
        for i, text in enumerate(diagnostics)
    )
    dsn = build_dsn(_request(*recipients, headers=headers))
    data = dsn.as_bytes()
    _check_lines(data)
    assert dsn.head.isascii() or headers
    message = _parse(data)
    assert message.get_content_type() == "multipart/report"
    assert not message.defects
    parts = _parts(message)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = _blocks(message)
    assert len(blocks) == 1 + len(recipients)
    allowed = {"Final-Recipient", "Action", "Status", "Diagnostic-Code"}
    for i, block in enumerate(blocks[1:]):
        assert set(block.keys()) <= allowed
        assert block["Final-Recipient"] == f"rfc822; r{i}@example.net"
        assert block["Status"] == "5.0.0"


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", ["", "<>"])
def test_the_null_sender_never_gets_a_dsn(sender: str) -> None:
    with pytest.raises(NullSenderError) as caught:
        _request(sender=sender)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, DSNError)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: DSNRecipient("b@example.net", Action.FAILED, "5.1"), "RFC 3463"),
        (lambda: DSNRecipient("b@example.net", Action.FAILED, "5.1.1000"), "RFC 3463"),
        (lambda: DSNRecipient("b@example.net", Action.FAILED, "2.0.0"), "does not fit"),
        (lambda: DSNRecipient("b@example.net", Action.DELAYED, "5.0.0"), "does not fit"),
        (lambda: DSNRecipient("b@example.net", Action.DELIVERED, "4.0.0"), "does not fit"),
        (lambda: DSNRecipient("b@exa\r\nmple.net", Action.FAILED, "5.0.0"), "final recipient"),
        (
            lambda: DSNRecipient("b@example.net", Action.FAILED, "5.0.0", remote_mta="a b"),
            "remote MTA",
        ),
        (
            lambda: DSNRecipient(
                "b@example.net", Action.FAILED, "5.0.0", last_attempt=datetime(2024, 1, 1)
            ),
            "timezone-aware",
        ),
        (
            lambda: DSNRecipient("b@example.net", Action.FAILED, "5.0.0", will_retry_until=ARRIVAL),
            "only for a delayed",
        ),
        (lambda: _request(arrival=datetime(2024, 1, 1)), "timezone-aware"),
        (lambda: _request(sender="alice"), "sender"),
        (lambda: _request(reporting_mta="mta\r\nX: y"), "reporting MTA"),
        (lambda: _request(recipients=()), "at least one"),
        (lambda: _request(ret_full=True), "body_path"),
        (lambda: _request(envid="a\r\nb"), "ENVID"),
        (lambda: _request(envid="x" * 101), "ENVID"),
    ],
)
def test_bad_values_are_refused(make: Callable[[], object], match: str) -> None:
    with pytest.raises(DSNError, match=match):
        make()


def test_a_bad_random_token_is_refused() -> None:
    with pytest.raises(DSNError, match="random token"):
        build_dsn(_request(), random_token=lambda: 'x"\r\n')


def test_a_boundary_that_always_collides_gives_up() -> None:
    headers = HEADERS + b"X-Trap: --=_same\n"
    with pytest.raises(DSNError, match="boundary"):
        build_dsn(_request(headers=headers), random_token=itertools.repeat("same").__next__)


def test_a_dsn_value_is_frozen() -> None:
    dsn = build_dsn(_request())
    assert isinstance(dsn, DSN)
    with pytest.raises(AttributeError):
        dsn.head = b""  # type: ignore[misc]


def test_the_module_is_pure() -> None:
    forbidden = {"twisted", "asyncio", "ssl", "OpenSSL", "socket"}
    path = pathlib.Path(mxsend.queue._bounce.__file__)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in forbidden, name
            assert not name.startswith(("mxsend.twisted", "mxsend.cli")), name
