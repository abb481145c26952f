"""DKIM signing (mxsend.dkim) and ``mxsend dkim keygen``, verified with dkimpy: signatures over
the stored CRLF bytes, the streaming body hash against dkimpy's, the From and header rules,
key files and their errors, new keys and their TXT records. DNS is a dict here; the tests
with a real DNS server are in tests/integration/test_dkim_dns.py."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import itertools
import math
import os
import random
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from unittest import mock

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

import mxsend.cli._main
from mxsend._exits import Exit
from mxsend.cli import dkim as dkim_command
from mxsend.cli._common import Parser, UserError
from mxsend.dkim import (
    NEVER_SIGNED,
    DkimKey,
    DkimKeyError,
    DkimParameterError,
    KeygenError,
    SigningError,
    body_hash,
    headers_to_sign,
    keygen,
    keys_for,
    load_keys,
    sign,
)
from mxsend.options import ConfigError
from mxsend.protocol import BodyEncoder

DOMAIN = "example.test"
MESSAGE = (
    b"From: Ann <ann@example.test>\r\n"
    b"To: bob@beta.test\r\n"
    b"Subject: DKIM  test\r\n"
    b" folded\r\n"
    b"Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"Hello  Bob, \t\r\n"
    b".a line with a dot\r\n"
    b"\r\n"
    b"\r\n"
)


# -- keys and a DNS made of a dict -------------------------------------------------------------


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, form: str = "pkcs8") -> bytes:
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "pkcs1": serialization.PrivateFormat.TraditionalOpenSSL,
    }[form]
    return key.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    )


@cache
def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    if bits >= 1024:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _small_rsa(bits)  # cryptography makes none so small: build it from two primes


def _small_rsa(bits: int) -> rsa.RSAPrivateKey:
    rng = random.Random(bits)

    def prime(size: int) -> int:
        while True:
            n = rng.getrandbits(size) | 1 << size - 1 | 1
            if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31)):
                return n

    while True:
        p, q = prime(bits // 2), prime(bits - bits // 2)
        phi = (p - 1) * (q - 1)
        if (p * q).bit_length() == bits and p != q and math.gcd(65537, phi) == 1:
            break
    d = pow(65537, -1, phi)
    public = rsa.RSAPublicNumbers(65537, p * q)
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public)
    return numbers.private_key()


@cache
def rsa_key(selector: str = "rsa1") -> DkimKey:
    return DkimKey.from_bytes(_pem(_rsa()), domain=DOMAIN, selector=selector, algorithm="rsa")


@cache
def ed_key(selector: str = "ed1") -> DkimKey:
    seed = base64.b64encode(hashlib.sha256(selector.encode()).digest())
    return DkimKey.from_bytes(seed, domain=DOMAIN, selector=selector, algorithm="ed25519")


def dns_of(*keys: DkimKey) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc answering with the keys' TXT records."""
    records = {f"{k.dns_name}.".encode(): k.txt_value().encode() for k in keys}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)

    return lookup


def verified(message: bytes, *keys: DkimKey, count: int | None = None) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of ``message``, top to bottom."""
    checker = dkim.DKIM(message)
    total = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    assert count is None or total == count
    return [_verify(message, i, dns_of(*keys)) for i in range(total)]


def _verify(message: bytes, index: int, dnsfunc: Callable[..., bytes | None]) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc))
    except dkim.DKIMException:  # a body hash mismatch, say
        return False


def tags(signature: bytes) -> dict[bytes, bytes]:
    value = signature.split(b":", 1)[1]
    return {k: re.sub(rb"\s+", b"", v) for k, v in dkim.util.parse_tag_value(value).items()}


# -- signing and verifying -------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [(rsa_key(),), (ed_key(),), (rsa_key(), ed_key()), (ed_key(), rsa_key())],
    ids=["rsa", "ed25519", "rsa+ed25519", "ed25519+rsa"],
)
def test_signatures_verify_with_dkimpy(keys: tuple[DkimKey, ...]) -> None:
    signatures = sign(MESSAGE, keys)
    assert verified(signatures + MESSAGE, *keys, count=len(keys)) == [True] * len(keys)
    fields = re.findall(rb"DKIM-Signature:.*?\r\n(?=\S|\Z)", signatures, re.DOTALL)
    assert b"".join(fields) == signatures  # one field per key, in order, CRLF ended
    for field_, key in zip(fields, keys, strict=True):
        found = tags(field_)
        assert found[b"a"] == key.algorithm.encode()
        assert found[b"s"] == key.selector.encode() and found[b"d"] == DOMAIN.encode()
        assert found[b"c"] == b"relaxed/relaxed" and b"l" not in found
        assert all(len(line) <= 78 for line in field_.split(b"\r\n"))


def test_no_keys_no_signature() -> None:
    assert sign(MESSAGE, []) == b""


def test_signature_covers_the_stored_bytes_as_they_go_on_the_wire() -> None:
    signatures = sign(MESSAGE, [rsa_key()])
    encoder = BodyEncoder(dot_stuff=False)  # BDAT: the bytes as sent, no stuffing
    wire = encoder.encode(MESSAGE) + encoder.finish()
    assert wire == MESSAGE  # canonical content is sent as it is stored
    assert verified(signatures + wire, rsa_key()) == [True]


def test_a_changed_byte_breaks_the_signature() -> None:
    signatures = sign(MESSAGE, [rsa_key(), ed_key()])
    for changed in (
        MESSAGE.replace(b"Hello", b"Jello"),
        MESSAGE.replace(b"DKIM  test", b"DKIM test!"),
        MESSAGE + b"appended\r\n",
    ):
        assert verified(signatures + changed, rsa_key(), ed_key()) == [False, False]


def test_relaxed_canonicalization_survives_relay_whitespace_changes() -> None:
    signatures = sign(MESSAGE, [rsa_key()])
    relayed = MESSAGE.replace(b"Subject: DKIM  test\r\n folded", b"subject:   DKIM test folded")
    relayed = relayed.replace(b"Hello  Bob, \t", b"Hello Bob,") + b"\r\n\r\n"
    assert verified(signatures + relayed, rsa_key()) == [True]


@pytest.mark.parametrize(
    "added",
    [
        b"Subject: forged\r\n",
        b"From: mallory@evil.test\r\n",
        b"To: someone@else.test\r\n",
        b"Reply-To: mallory@evil.test\r\n",
        b"Cc: mallory@evil.test\r\n",
        b"Date: Tue, 2 Dec 2025 10:00:00 +0000\r\n",
    ],
)
def test_oversigned_fields_cannot_be_added(added: bytes) -> None:
    signed = sign(MESSAGE, [rsa_key()])
    assert verified(signed + added + MESSAGE, rsa_key()) == [False]  # prepended, as shown
    head, body = MESSAGE.split(b"\r\n\r\n", 1)
    assert verified(signed + head + b"\r\n" + added + b"\r\n" + body, rsa_key()) == [False]


def test_trace_fields_may_be_added() -> None:
    signed = sign(MESSAGE, [rsa_key()])
    relayed = b"Received: from x by y; Mon, 1 Dec 2025 10:00:01 +0000\r\n" + signed + MESSAGE
    assert verified(relayed, rsa_key()) == [True]


def test_default_signed_header_list() -> None:
    names = ["From", "To", "Subject", "Received", "Date", "X-Mailer", "To", "List-Id", "Bcc"]
    assert headers_to_sign(names) == (
        "from", "to", "subject", "date", "to", "list-id",  # each as often as it occurs
        "from", "to", "cc", "subject", "reply-to",  # oversigned, present or not
        "date",  # oversigned because present
    )  # fmt: skip
    signature = sign(MESSAGE, [rsa_key()])
    assert tags(signature)[b"h"] == b":".join(
        n.encode() for n in headers_to_sign(["From", "To", "Subject", "Date", "Message-ID"])
    )


def test_signed_headers_replace_the_default() -> None:
    signature = sign(MESSAGE, [ed_key()], signed_headers=["From", "Subject", "From"])
    assert tags(signature)[b"h"] == b"from:subject:from"
    assert verified(signature + MESSAGE, ed_key()) == [True]


@pytest.mark.parametrize(
    ("signed_headers", "why"),
    [
        (["Subject", "To"], "must include From"),
        (["From", "Bcc"], "bcc is never signed"),
        (["From", "Received"], "received is never signed"),
        (["From", "Bad Name"], "not a header field name"),
        (["From", ""], "not a header field name"),
    ],
)
def test_bad_signed_headers_are_refused(signed_headers: list[str], why: str) -> None:
    with pytest.raises(DkimParameterError, match=why):
        sign(MESSAGE, [rsa_key()], signed_headers=signed_headers)


def test_never_signed_matches_dkimpy() -> None:
    assert set(NEVER_SIGNED) == {name.decode() for name in dkim.DKIM.SHOULD_NOT}


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"To: b@beta.test\r\n\r\nbody\r\n", "no From field"),
        (b"From: a@example.test\r\nFrom: c@evil.test\r\n\r\nbody\r\n", "2 From fields"),
        (b"From: a@example.test\r\nfrom : c@evil.test\r\n\r\nbody\r\n", "2 From fields"),
        (b"\r\nFrom: a@example.test\r\n", "no From field"),  # no header block at all
        (b"", "no From field"),
    ],
)
def test_exactly_one_from_field(message: bytes, why: str) -> None:
    with pytest.raises(SigningError, match=why):
        sign(message, [rsa_key()])


@pytest.mark.parametrize(
    ("message", "where"),
    [
        (b"From: a@example.test\n\nbody\n", "header block"),
        (b"From: a@example.test\r\nTo: b\rc\r\n\r\nbody\r\n", "header block"),
        (b"From: a@example.test\r\n\r\nbody\nmore\r\n", "body"),
        (b"From: a@example.test\r\n\r\nbody\rmore\r\n", "body"),
        (b"From: a@example.test\r\n\r\nbody ends in CR\r", "body"),
    ],
)
def test_content_that_is_not_canonical_is_refused(message: bytes, where: str) -> None:
    # The stored bytes are signed as they are: a bare CR or LF would be changed on the wire.
    with pytest.raises(SigningError, match=f"message {where} has a CR or LF"):
        sign(message, [rsa_key()])


def test_a_header_block_that_is_not_one_is_refused() -> None:
    for message in (
        b"From: a@example.test\r\nnot a field\r\n\r\nbody\r\n",
        b" continued\r\nFrom: a@example.test\r\n\r\nbody\r\n",
    ):
        with pytest.raises(SigningError, match="neither a field nor the continuation of one"):
            sign(message, [rsa_key()])
    with pytest.raises(SigningError, match="header block over"):
        sign(b"From: a@example.test\r\nX: " + b"y" * (1024 * 1024) + b"\r\n", [rsa_key()])


def test_header_fields_without_a_body() -> None:
    message = b"From: a@example.test\r\nSubject: only fields\r\n"
    assert verified(sign(message, [rsa_key()]) + message, rsa_key()) == [True]
    # No final CRLF: the wire adds it, and the signature is for what is sent.
    encoder = BodyEncoder(dot_stuff=False)
    wire = encoder.encode(message[:-2]) + encoder.finish()
    assert verified(sign(message[:-2], [rsa_key()]) + wire, rsa_key()) == [True]


def test_a_last_line_without_crlf_is_signed_as_sent() -> None:
    message = b"From: a@example.test\r\n\r\nlast line, trailing space \t"
    encoder = BodyEncoder(dot_stuff=False)
    wire = encoder.encode(message) + encoder.finish()
    assert wire == message + b"\r\n"
    assert verified(sign(message, [ed_key()]) + wire, ed_key()) == [True]


def test_time_stamp() -> None:
    assert tags(sign(MESSAGE, [ed_key()], now=1_700_000_000.9))[b"t"] == b"1700000000"
    before = int(time.time())
    stamp = int(tags(sign(MESSAGE, [ed_key()]))[b"t"])
    assert before <= stamp <= time.time()


def test_file_content_is_read_from_its_position_and_put_back() -> None:
    file = io.BytesIO(b"junk before" + MESSAGE)
    file.seek(len(b"junk before"))
    signed = sign(file, [rsa_key()], now=1_700_000_000)
    assert file.tell() == len(b"junk before")
    assert signed == sign(MESSAGE, [rsa_key()], now=1_700_000_000)


def test_file_content_must_be_seekable() -> None:
    read, write = os.pipe()
    os.write(write, MESSAGE)
    os.close(write)
    with open(read, "rb") as pipe, pytest.raises(ValueError, match="seekable"):
        sign(pipe, [rsa_key()])


# -- the streaming body hash and dkimpy -------------------------------------------------------

_TEXT = st.binary(min_size=0, max_size=30).map(
    lambda b: bytes(c for c in b if c not in (10, 13))  # lines of any octet but CR and LF
)
_SPACED = st.lists(
    st.one_of(_TEXT, st.sampled_from([b" ", b"\t", b"  \t ", b"."])), max_size=6
).map(b"".join)
_BODIES = st.lists(_SPACED, max_size=12).map(b"\r\n".join)
_BODIES_ENDED = st.tuples(_BODIES, st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b" \r\n\t\r\n"]))


def _as_sent(body: bytes) -> bytes:
    """A body as the wire sends it: a last line always ends with CRLF."""
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def _chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return (data[a:b] for a, b in itertools.pairwise(points))


@settings(max_examples=400, deadline=None)
@given(_BODIES_ENDED, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_body_hash_is_dkimpys_relaxed_body_hash(
    ended: tuple[bytes, bytes], cuts: list[int]
) -> None:
    body = ended[0] + ended[1]
    expected = hashlib.sha256(Relaxed.canonicalize_body(_as_sent(body))).digest()
    assert body_hash(_chunked(body, cuts)) == expected
    assert body_hash([body]) == expected


def test_body_hash_edges() -> None:
    empty = hashlib.sha256(b"").digest()  # RFC 6376 3.4.4: an empty body hashes nothing
    assert body_hash([]) == body_hash([b"\r\n\r\n"]) == body_hash([b" \t\r\n"]) == empty
    line = hashlib.sha256(b"a b\r\n").digest()
    assert body_hash([b"a", b" ", b"\t", b"b", b"\r", b"\n", b"\r\n"]) == line
    assert body_hash([b"a \t b  \r\n\r\n"]) == line
    with pytest.raises(SigningError):
        body_hash([b"a\r", b"b\r\n"])


_NAMES = st.sampled_from(
    ["To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "X-Tag", "MIME-Version",
     "Content-Type", "Received", "List-Id", "Sender", "Resent-From", "subject", "TO"]
)  # fmt: skip
_VALUE = st.lists(
    st.binary(min_size=1, max_size=20).map(lambda b: bytes(c for c in b if c not in (10, 13))),
    min_size=1,
    max_size=3,
).map(lambda parts: b"\r\n\t".join(p or b"x" for p in parts))  # folded values
_FIELDS = st.lists(st.tuples(_NAMES, _VALUE), max_size=8)


@settings(max_examples=60, deadline=None)
@given(_FIELDS, st.integers(min_value=0, max_value=8), _BODIES_ENDED, st.booleans())
def test_signatures_are_dkimpys_byte_for_byte(
    fields: list[tuple[str, bytes]], at: int, ended: tuple[bytes, bytes], ed: bool
) -> None:
    fields = list(fields)
    fields.insert(at % (len(fields) + 1), ("From", b" a@example.test"))
    head = b"".join(name.encode() + b":" + value + b"\r\n" for name, value in fields)
    message = head + b"\r\n" + ended[0] + ended[1]
    key = ed_key() if ed else rsa_key()
    ours = sign(io.BytesIO(message), [key], now=1_700_000_000)
    include = list(headers_to_sign(name for name, _ in fields))
    with mock.patch.object(time, "time", return_value=1_700_000_000):
        theirs = dkim.sign(
            head + b"\r\n" + _as_sent(ended[0] + ended[1]),
            key.selector.encode(),
            key.domain.encode(),
            key.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm.encode(),
            include_headers=[name.encode() for name in include],
        )
    assert ours == theirs
    wire = head + b"\r\n" + _as_sent(ended[0] + ended[1])
    assert verified(ours + wire, key) == [True]


# -- key files ------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _load(path: Path, algorithm: str = "rsa") -> DkimKey:
    return DkimKey.load(path, domain=DOMAIN, selector="s1", algorithm=algorithm)


def _pkcs8_ed25519() -> bytes:
    return _pem(ed25519.Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    ("algorithm", "data"),
    [
        ("rsa", lambda: _pem(_rsa(), "pkcs1")),
        ("rsa", lambda: _pem(_rsa(), "pkcs8")),
        ("rsa-sha256", lambda: _pem(_rsa()).replace(b"\n", b"\r\n")),
        ("rsa", lambda: b"comment first\n" + _pem(_rsa(1024))),  # the least allowed
        ("ed25519", lambda: ed_key().private_key),  # dknewkey's base64 seed
        ("ed25519-sha256", lambda: ed_key().private_key + b"\n"),
        ("ed25519", lambda: base64.b64encode(  # libsodium's seed and public key
            base64.b64decode(ed_key().private_key)
            + base64.b64decode(ed_key().txt_value().split("p=")[1])
        )),
        ("ed25519", _pkcs8_ed25519),  # openssl genpkey -algorithm ed25519
    ],
    ids=["pkcs1", "pkcs8", "crlf", "1024", "seed", "seed-lf", "seed+public", "ed-pkcs8"],
)  # fmt: skip
def test_key_formats_that_load_and_sign(
    tmp_path: Path, algorithm: str, data: Callable[[], bytes]
) -> None:
    key = _load(_write(tmp_path / "k", data()), algorithm)
    assert key.algorithm == ("rsa-sha256" if algorithm.startswith("rsa") else "ed25519-sha256")
    assert verified(sign(MESSAGE, [key]) + MESSAGE, key) == [True]
    assert b"PRIVATE" not in repr(key).encode() and "private_key" not in repr(key)


# RFC 8410 / RFC 5958 OneAsymmetricKey version 2: the seed, then the public key ([1]).
_V2_PKCS8 = (
    bytes.fromhex("3051020101300506032b657004220420") + bytes(32) + b"\x81\x21\x00" + bytes(32)
)


def _pem_block(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def _encrypted() -> bytes:
    return _rsa().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _ec() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _public() -> bytes:
    return (
        _rsa()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("algorithm", "data", "why"),
    [
        ("rsa", lambda: b"garbage\n", "is not a PEM private key"),
        ("rsa", lambda: b"", "is not a PEM private key"),
        ("rsa", lambda: ed_key().private_key, "looks like an ed25519 key"),
        ("rsa", _pkcs8_ed25519, "holds an ed25519 key, not an RSA key"),
        ("rsa", lambda: _pem(_rsa(512), "pkcs1"), "RSA key of 512 bits: RFC 8301 3.2"),
        ("rsa", lambda: _pem(_rsa(1023)), "RSA key of 1023 bits"),
        ("rsa", _encrypted, "is encrypted"),
        ("rsa", _ec, "holds a EC PRIVATE KEY, not an RSA private key"),
        ("rsa", _public, "holds a PUBLIC KEY"),
        ("rsa", lambda: b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
         "not base64"),
        ("rsa", lambda: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
         "not an RSA key dkimpy can read"),
        ("ed25519", lambda: _pem(_rsa()), "holds an RSA key, not an ed25519 key"),
        ("ed25519", lambda: _pem(_rsa(), "pkcs1"), "holds an RSA key, not an ed25519 key"),
        ("ed25519", lambda: b"garbage\n", "is not an ed25519 key"),
        ("ed25519", lambda: base64.b64encode(b"x" * 31), "is not an ed25519 key"),
        ("ed25519", lambda: base64.b64encode(b"x" * 64), "not the seed's public key"),
        ("ed25519", _public, "holds a PUBLIC KEY"),
        ("ed25519", lambda: _pem_block("PRIVATE KEY", _V2_PKCS8), "other than RFC 8410's"),
        ("dsa", lambda: _pem(_rsa()), "unknown DKIM key type 'dsa'"),
    ],
)  # fmt: skip
def test_keys_that_are_refused(
    tmp_path: Path, algorithm: str, data: Callable[[], bytes], why: str
) -> None:
    path = _write(tmp_path / "k", data())
    with pytest.raises(DkimKeyError, match=re.escape(why)) as caught:
        _load(path, algorithm)
    assert str(caught.value).startswith(f"DKIM key {path}: ")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ConfigError)  # a key that cannot be used is a config error
    # The config file's check refuses it too, but for what only dkimpy's parse finds.
    if "bits" in why or "dkimpy" in why:
        DkimKey.check_file(path, domain=DOMAIN, selector="s1", algorithm=algorithm)
    else:
        with pytest.raises(DkimKeyError, match=re.escape(why)):
            DkimKey.check_file(path, domain=DOMAIN, selector="s1", algorithm=algorithm)


def test_key_file_problems(tmp_path: Path) -> None:
    good = _pem(_rsa())
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path: "is a directory",
        _write(tmp_path / "big", b"x" * 70000): "is over 65536 octets",
        _write(tmp_path / "open", good, 0o644): "is open to other users (mode 0644)",
        _write(tmp_path / "writable", good, 0o602): "is open to other users (mode 0602)",
        _write(tmp_path / "groupw", good, 0o660): "is writable by its group (mode 0660)",
        tmp_path / "nodir" / "k": "does not exist",
        _write(tmp_path / "file", good) / "k": "cannot be read: Not a directory",
    }
    os.mkfifo(tmp_path / "fifo", 0o600)  # a FIFO is refused, never waited on
    cases[tmp_path / "fifo"] = "is not a regular file"
    for path, why in cases.items():
        with pytest.raises(DkimKeyError, match=re.escape(f"DKIM key {path}: {why}")):
            _load(path)
        # The config file's check (no dkimpy) refuses the same files, in the same words.
        with pytest.raises(DkimKeyError, match=re.escape(f"DKIM key {path}: {why}")):
            DkimKey.check_file(path, domain=DOMAIN, selector="s1", algorithm="rsa")
    assert _load(_write(tmp_path / "group", good, 0o640)).algorithm == "rsa-sha256"
    DkimKey.check_file(tmp_path / "group", domain=DOMAIN, selector="s1", algorithm="rsa")


UNREADABLE = textwrap.dedent(
    """
    import os, sys
    from mxsend.dkim import DkimKey, DkimKeyError
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # nobody: root reads any file
    try:
        DkimKey.load(sys.argv[1], domain="example.test", selector="s", algorithm="rsa")
    except DkimKeyError as exc:
        print(exc)
    """
)


def test_unreadable_key_file(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    tmp_path.chmod(0o755)
    folder.chmod(0o755)
    path = _write(folder / "k", _pem(_rsa()), 0o600)
    if os.geteuid() != 0:
        path.chmod(0o000)
    done = subprocess.run(
        [sys.executable, "-c", UNREADABLE, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout == f"DKIM key {path}: cannot be read: permission denied\n"


def test_bad_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", _pem(_rsa()))
    for domain, selector, why in [
        ("exa mple.test", "s1", "bad DKIM domain"),
        ("[192.0.2.1]", "s1", "an address literal"),
        ("example.test", "s_1", "bad DKIM selector"),
        ("example.test", "", "bad DKIM selector"),
        ("example.test", "a." * 120 + "b", "longer than 253 octets"),
    ]:
        with pytest.raises(DkimKeyError, match=re.escape(why)):
            DkimKey.load(path, domain=domain, selector=selector, algorithm="rsa")
        with pytest.raises(DkimParameterError, match=re.escape(why)):
            DkimKey(domain, selector, "rsa-sha256", b"")


def test_names_become_lower_case_a_labels() -> None:
    key = DkimKey("Bücher.Example", "Sel.2026", "rsa-sha256", b"")
    assert (key.domain, key.selector) == ("xn--bcher-kva.example", "sel.2026")
    assert key.dns_name == "sel.2026._domainkey.xn--bcher-kva.example"


def test_a_hand_built_key_that_is_no_key_fails_to_sign() -> None:
    with pytest.raises(DkimKeyError, match="cannot be used"):
        sign(MESSAGE, [DkimKey(DOMAIN, "s", "ed25519-sha256", b"not base64!")])


# -- configuration --------------------------------------------------------------------------


def test_keys_for_a_sender_domain(tmp_path: Path) -> None:
    rsa_file = _write(tmp_path / "rsa", rsa_key().private_key)
    ed_file = _write(tmp_path / "ed", ed_key().private_key)
    configured = {
        "Example.Test": [("rsa1", str(rsa_file), "rsa"), ("ed1", str(ed_file), "ed25519")],
        "bücher.test": [("s", str(ed_file), "ed25519")],
    }
    keys = keys_for("example.TEST", configured)
    assert [(k.selector, k.algorithm) for k in keys] == [
        ("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256"),
    ]  # fmt: skip
    assert verified(sign(MESSAGE, keys) + MESSAGE, *keys) == [True, True]
    assert keys_for("xn--bcher-kva.test", configured)[0].domain == "xn--bcher-kva.test"
    assert keys_for("sub.example.test", configured) == ()  # exact matches only
    assert keys_for("[192.0.2.1]", configured) == ()
    assert load_keys(configured) == {
        "example.test": keys, "xn--bcher-kva.test": keys_for("bücher.test", configured),
    }  # fmt: skip


def test_keys_for_the_config_files_entries(tmp_path: Path) -> None:
    from mxsend.config import DkimKeyConfig

    ed_file = str(_write(tmp_path / "ed", ed_key().private_key))
    rsa_file = str(_write(tmp_path / "rsa", rsa_key().private_key))
    configured = {DOMAIN: (DkimKeyConfig("ed1", ed_file, "ed25519"), DkimKeyConfig("r", rsa_file))}
    keys = keys_for(DOMAIN, configured)
    assert [(k.selector, k.algorithm) for k in keys] == [
        ("ed1", "ed25519-sha256"), ("r", "rsa-sha256"),
    ]  # fmt: skip
    assert load_keys(configured) == {DOMAIN: keys}


def test_configured_keys_that_cannot_be_used(tmp_path: Path) -> None:
    rsa_file = str(_write(tmp_path / "rsa", rsa_key().private_key))
    missing = str(tmp_path / "missing")
    with pytest.raises(DkimKeyError, match=re.escape(f"DKIM key {missing}: does not exist")):
        keys_for(DOMAIN, {DOMAIN: [("s1", rsa_file, "rsa"), ("s2", missing, "rsa")]})
    with pytest.raises(ConfigError, match=r"domain example\.test, selector s2"):
        load_keys({DOMAIN: [("s1", rsa_file, "rsa"), ("s2", missing, "rsa")]})
    with pytest.raises(DkimKeyError, match="selector s1 is given twice"):
        load_keys({DOMAIN: [("s1", rsa_file, "rsa"), ("S1", rsa_file, "rsa")]})
    with pytest.raises(DkimKeyError, match="configured twice"):
        load_keys({DOMAIN: [], DOMAIN.upper(): []})
    with pytest.raises(DkimKeyError, match="bad DKIM domain"):
        load_keys({"bad domain": []})
    with pytest.raises(DkimKeyError, match="bad DKIM domain"):
        keys_for(DOMAIN, {"bad domain": []})
    with pytest.raises(DkimKeyError, match="unknown DKIM key type 'dsa'"):
        keys_for(DOMAIN, {DOMAIN: [("s1", rsa_file, "dsa")]})


# -- new keys -------------------------------------------------------------------------------


def _strings(record: str) -> tuple[str, list[str]]:
    """A TXT record line's name and strings, checked for the zone file form."""
    found = re.fullmatch(r'(\S+)\. IN TXT ((?:"[^"\\]{1,255}" ?)+)', record)
    assert found, record
    return found.group(1), re.findall(r'"([^"]*)"', found.group(2))


@pytest.mark.parametrize(
    ("algorithm", "bits", "pieces"),
    [("rsa", 2048, 2), ("rsa", 4096, 3), ("ed25519", 2048, 1)],
)
def test_keygen_writes_a_key_and_returns_its_record(
    tmp_path: Path, algorithm: str, bits: int, pieces: int
) -> None:
    path = tmp_path / "new.key"
    record = keygen("Example.Test", "S2026", algorithm, path, bits=bits)
    assert path.stat().st_mode & 0o777 == 0o600
    key = DkimKey.load(path, domain=DOMAIN, selector="s2026", algorithm=algorithm)
    name, strings = _strings(record)
    assert name == "s2026._domainkey.example.test" and len(strings) == pieces
    value = "".join(strings)
    assert value == key.txt_value()
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    published = {b"s2026._domainkey.example.test.": value.encode()}
    signed = sign(MESSAGE, [key]) + MESSAGE
    assert dkim.verify(signed, dnsfunc=lambda n, timeout=5: published.get(n))
    if algorithm == "rsa":
        public = base64.b64decode(value.split("p=")[1])
        loaded = serialization.load_der_public_key(public)
        assert isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size == bits


def test_keygen_mode_whatever_the_umask(tmp_path: Path) -> None:
    for mask in (0o000, 0o077, 0o777):
        old = os.umask(mask)
        try:
            keygen(DOMAIN, "s", "ed25519", tmp_path / f"k{mask}")
        finally:
            os.umask(old)
        assert (tmp_path / f"k{mask}").stat().st_mode & 0o777 == 0o600


def test_keygen_never_overwrites_nor_follows_links(tmp_path: Path) -> None:
    existing = _write(tmp_path / "existing", b"keep me", 0o644)
    with pytest.raises(KeygenError, match=f"{existing} exists; a key file is never overwritten"):
        keygen(DOMAIN, "s", "rsa", existing)
    assert existing.read_bytes() == b"keep me"
    link = tmp_path / "link"
    link.symlink_to(existing)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "target")
    for path in (link, dangling):
        with pytest.raises(KeygenError, match="exists"):
            keygen(DOMAIN, "s", "ed25519", path)
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "target").exists()
    with pytest.raises(KeygenError, match="exists"):
        keygen(DOMAIN, "s", "ed25519", tmp_path)  # a folder


def test_keygen_removes_a_key_it_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", full)
        with pytest.raises(KeygenError, match=r"cannot write .*: No space left on device"):
            keygen(DOMAIN, "s", "ed25519", tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_keygen_refusals_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "k"
    with pytest.raises(KeygenError, match=r"cannot create .*: No such file or directory"):
        keygen(DOMAIN, "s", "ed25519", tmp_path / "no" / "k")
    with pytest.raises(KeygenError, match=r"cannot create .*: Not a directory"):
        keygen(DOMAIN, "s", "ed25519", _write(tmp_path / "f", b"") / "k")
    for domain, selector, algorithm, bits, why in [
        ("bad domain", "s", "rsa", 2048, "bad DKIM domain"),
        (DOMAIN, "bad/selector", "rsa", 2048, "bad DKIM selector"),
        (DOMAIN, "s", "dsa", 2048, "unknown DKIM key type"),
        (DOMAIN, "s", "rsa", 1024, "RSA key size 1024: from 2048"),
        (DOMAIN, "s", "rsa", 8192, "RSA key size 8192"),
    ]:
        with pytest.raises(DkimParameterError, match=why):
            keygen(domain, selector, algorithm, path, bits=bits)
    assert not path.exists()


# -- mxsend dkim keygen ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mxsend")
    dkim_command.setup(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return parser


def _run(*argv: str) -> int:
    return dkim_command.execute(_parser().parse_args(["dkim", *argv]))


def test_command_writes_the_key_and_prints_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run("keygen", "Example.Test", "S1", "--type", "ed25519") == 0
    out, err = capsys.readouterr()
    name, strings = _strings(out.removesuffix("\n"))
    assert name == "s1._domainkey.example.test" and strings[0].startswith("v=DKIM1; k=ed25519;")
    default = tmp_path / "s1.example.test.key"  # SELECTOR.DOMAIN.key, here
    assert err == f"mxsend: private key written to {default} (mode 0600)\n"
    key = DkimKey.load(default, domain=DOMAIN, selector="s1", algorithm="ed25519")
    assert key.txt_value() == "".join(strings)
    assert _run("keygen", DOMAIN, "s2", "--output", "other.pem", "--bits", "3072") == 0
    out, _ = capsys.readouterr()
    assert _strings(out.strip())[1][0].startswith("v=DKIM1; k=rsa; p=")
    loaded = DkimKey.load(tmp_path / "other.pem", domain=DOMAIN, selector="s2", algorithm="rsa")
    assert loaded.algorithm == "rsa-sha256"


@pytest.mark.parametrize(
    ("argv", "status", "why"),
    [
        (["keygen", "bad domain", "s"], Exit.USAGE, "bad DKIM domain 'bad domain'"),
        (["keygen", DOMAIN, "s", "--type", "ed25519", "--bits", "2048"], Exit.USAGE,
         "--bits is for RSA keys only"),
        (["keygen", DOMAIN, "s", "--bits", "1024"], Exit.USAGE, "RSA key size 1024"),
        (["keygen", DOMAIN, "s", "--output", "taken"], Exit.CANTCREAT, "taken exists"),
        (["keygen", DOMAIN, "s", "--output", "no/such/k"], Exit.CANTCREAT,
         "cannot create no/such/k: No such file or directory"),
    ],
)  # fmt: skip
def test_command_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], status: Exit, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_bytes(b"keep")
    with pytest.raises(UserError) as caught:
        _run(*argv)
    assert caught.value.status == status and why in str(caught.value)
    assert (tmp_path / "taken").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize(
    "argv",
    [["keygen", DOMAIN], ["keygen", DOMAIN, "s", "--bits", "x"], ["keygen", DOMAIN, "s",
     "--type", "dsa"], ["nothing"], []],
)  # fmt: skip
def test_command_usage_errors_are_one_line_and_64(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        _run(*argv)
    assert caught.value.code == Exit.USAGE
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mxsend: ")


def test_command_through_mxsend_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As mxsend.cli will run it once ``dkim`` is in its table of commands.
    monkeypatch.setitem(mxsend.cli._main._COMMANDS, "dkim", dkim_command)
    monkeypatch.chdir(tmp_path)
    assert mxsend.cli.main(["dkim", "keygen", DOMAIN, "s", "--type", "ed25519"]) == 0
    capsys.readouterr()
    assert mxsend.cli.main(["dkim", "keygen", DOMAIN, "s", "--type", "ed25519"]) == 73
    assert (
        capsys.readouterr().err
        == "mxsend: s.example.test.key exists; a key file is never overwritten\n"
    )


# -- a cheap, pure module -------------------------------------------------------------------


def test_importing_mxsend_dkim_pulls_in_no_signing_machinery() -> None:
    heavy = {"dkim", "nacl", "cryptography", "dns", "ssl", "twisted", "asyncio", "OpenSSL"}
    code = (
        "import sys, mxsend.dkim, mxsend.cli.dkim\n"
        f"bad = {sorted(heavy)!r}\n"
        "bad = sorted(set(bad) & {name.split('.')[0] for name in sys.modules})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_mxsend_dkim_imports_no_twisted() -> None:
    source = Path(sys.modules["mxsend.dkim"].__file__ or "").read_text()
    assert not re.search(r"^\s*(from|import) (twisted|asyncio|socket)\b", source, re.MULTILINE)
