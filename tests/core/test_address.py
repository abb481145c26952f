"""Address and parameter validation (RFC 5321 4.1.2; docs/security.md, command injection):
refuse, never repair."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsend.protocol import (
    Address,
    AddressError,
    ClientConfig,
    ClientConnection,
    Envelope,
    MailOptions,
    Notify,
    ParameterError,
    RcptOptions,
    validate_domain,
    xtext,
)


@pytest.mark.parametrize(
    "text",
    [
        "b@example.net>\r\nRCPT TO:<evil@x.test",  # Twisted's quoteaddr truncates this
        "a\r\n@example.net",
        "a\n@example.net",
        "a\0b@example.net",
        "a\x7fb@example.net",
        "a b@example.net",
        "<a@example.net>",
        "a>@example.net",
        "a<@example.net",
        "a@exa mple.net",
        "a@example.net\r\n",
        "@example.net",
        "a@",
        "a",
        "",
        ".a@example.net",
        "a.@example.net",
        "a..b@example.net",
        "a@-example.net",
        "a@example-.net",
        "a@example..net",
        "a@example.net.",
        "a@exa_mple.net",
        "x" * 65 + "@example.net",
        "a@" + "x" * 64 + ".net",
        "a@" + ".".join(["x" * 60] * 5),
        '"unterminated@example.net',
        '"a"b"@example.net',
        '"a\tb"@example.net',
        "a@[300.1.1.1]",
        "a@[IPv6:zz::1]",
        "a@[1.2.3.4",
        "jo\u2028e@example.net",
        "a@exa\u200bmple.net",
        "a\u00a0b@example.net",
    ],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(AddressError):
        Address.parse(text)


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("alice@example.com", "alice", "example.com"),
        ("a.b+tag@sub.example.com", "a.b+tag", "sub.example.com"),
        ('"john doe"@example.com', '"john doe"', "example.com"),
        ('"a\\"b"@example.com', '"a\\"b"', "example.com"),
        ("x@[192.0.2.1]", "x", "[192.0.2.1]"),
        ("x@[IPv6:2001:db8::1]", "x", "[IPv6:2001:db8::1]"),
        ("user@bücher.example", "user", "xn--bcher-kva.example"),
        ("jösé@example.com", "jösé", "example.com"),
    ],
)
def test_good_addresses(text: str, local: str, domain: str) -> None:
    address = Address.parse(text)
    assert (address.local_part, address.domain) == (local, domain)
    assert address.needs_smtputf8 == (not local.isascii())


def test_path_length_limit() -> None:
    local = "l" * 64
    domain = ".".join(["d" * 63] * 3) + "." + "e" * 60  # 252 octets
    with pytest.raises(AddressError):
        Address.parse(f"{local}@{domain}")  # <64+1+252> is over 256


def test_domain_validation() -> None:
    assert validate_domain("Client.Example") == "Client.Example"
    with pytest.raises(AddressError):
        validate_domain("bad domain")
    with pytest.raises(AddressError):
        ClientConfig("helo\r\nMAIL FROM:<x@y>")


def test_xtext() -> None:
    assert xtext("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+C3+A9"


def test_parameter_validation() -> None:
    with pytest.raises(ParameterError):
        MailOptions(envid="x" * 101)
    with pytest.raises(ParameterError):
        MailOptions(envid="a\r\nb")
    with pytest.raises(ParameterError):
        MailOptions(size=-1)
    with pytest.raises(ParameterError):
        RcptOptions(frozenset({Notify.NEVER, Notify.DELAY}))
    with pytest.raises(AddressError):
        RcptOptions(orcpt="bad\r\naddress@x.test")
    with pytest.raises(ParameterError):
        Envelope(None, ())
    assert RcptOptions(orcpt="jösé@example.com").parameters() == (
        "ORCPT=utf-8;j\\x{F6}s\\x{E9}@example.com",
    )


def test_nothing_is_written_for_bad_input() -> None:
    conn = ClientConnection(ClientConfig("client.example"))
    with pytest.raises(AddressError):
        Envelope.build("a@example.com", ["evil@x.test>\r\nDATA"])
    assert conn.data_to_send() == b""


# Characters that matter to some rule: atext, specials, dots, quotes, hyphens, brackets,
# spaces, controls, 8-bit and a UTF-8 letter.
_TRICKY = st.text(alphabet=st.sampled_from(list('ab9.-_+@"[]:\\ \r\n\0\x7fé!#{}')), max_size=24)


@given(_TRICKY | st.from_regex(r"[a-z.]{0,70}@[a-z0-9-]{0,70}(\.[a-z0-9-]{0,65}){0,4}"))
@settings(max_examples=3000)
def test_fast_path_agrees_with_every_rule(text: str) -> None:
    """The one-match fast path of Address.parse accepts exactly what the full checks accept."""
    try:
        slow: Address | str = Address._checked(text)
    except AddressError as exc:
        slow = f"refused: {type(exc).__name__}"
    try:
        fast: Address | str = Address.parse(text)
    except AddressError as exc:
        fast = f"refused: {type(exc).__name__}"
    assert fast == slow
