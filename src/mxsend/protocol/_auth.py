"""SASL mechanisms for SMTP AUTH (RFC 4954), as pure challenge/response objects.

A mechanism gets raw challenges (already base64-decoded by the connection) and returns raw
responses. It never sees a socket; SCRAM's nonce source is injected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections.abc import Callable
from typing import Protocol

from mxsend.protocol._errors import AuthenticationError

__all__ = [
    "MAX_SCRAM_ITERATIONS",
    "MIN_SCRAM_ITERATIONS",
    "CramMD5",
    "Login",
    "Mechanism",
    "Plain",
    "ScramSHA256",
    "XOAuth2",
    "saslprep",
]

# RFC 7677 4: at least 4096. The upper bound stops a hostile server from making us burn CPU.
MIN_SCRAM_ITERATIONS = 4096
MAX_SCRAM_ITERATIONS = 1_000_000


class Mechanism(Protocol):
    """What the connection needs from a SASL mechanism."""

    @property
    def name(self) -> str: ...

    def initial_response(self) -> bytes | None:
        """Sent with AUTH (RFC 4954 4), or None to wait for the first challenge."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """Answer a 334 challenge; raise AuthenticationError if it makes no sense."""
        ...

    def succeeded(self) -> None:
        """Called on 235; raise AuthenticationError if the server did not prove itself."""
        ...


class _Simple:
    """Base for mechanisms that answer a fixed number of challenges and verify nothing."""

    name = ""

    def initial_response(self) -> bytes | None:
        return None

    def succeeded(self) -> None:
        return None

    def _unexpected(self) -> AuthenticationError:
        return AuthenticationError(f"unexpected {self.name} challenge from the server")


class Plain(_Simple):
    """PLAIN (RFC 4616): authzid NUL authcid NUL password, sent with AUTH."""

    name = "PLAIN"

    def __init__(self, username: str, password: str, authzid: str = "") -> None:
        self._message = f"{authzid}\0{username}\0{password}".encode()
        self._sent = False

    def initial_response(self) -> bytes | None:
        self._sent = True
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        # A server that refuses initial responses asks with an empty challenge.
        if self._sent or challenge:
            raise self._unexpected()
        self._sent = True
        return self._message


class Login(_Simple):
    """LOGIN (draft-murchison-sasl-login): user name, then password, one per challenge."""

    name = "LOGIN"

    def __init__(self, username: str, password: str) -> None:
        self._answers = [username.encode(), password.encode()]

    def respond(self, challenge: bytes) -> bytes:
        if not self._answers:
            raise self._unexpected()
        return self._answers.pop(0)


class CramMD5(_Simple):
    """CRAM-MD5 (RFC 2195): user name and the HMAC-MD5 of the challenge."""

    name = "CRAM-MD5"

    def __init__(self, username: str, password: str) -> None:
        self._username = username.encode()
        self._password = password.encode()
        self._done = False

    def respond(self, challenge: bytes) -> bytes:
        if self._done or not challenge:
            raise self._unexpected()
        self._done = True
        digest = hmac.new(self._password, challenge, hashlib.md5).hexdigest()
        return self._username + b" " + digest.encode()


class XOAuth2(_Simple):
    """XOAUTH2 (Google/Microsoft): a bearer token sent with AUTH. A failing server sends a
    JSON error as a challenge, answered by an empty line, then the final 5xx."""

    name = "XOAUTH2"

    def __init__(self, username: str, token: str) -> None:
        self._message = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
        self._error_seen = False

    def initial_response(self) -> bytes | None:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if self._error_seen:
            raise self._unexpected()
        self._error_seen = True
        return b""


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep, query profile (unassigned code points allowed)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    mapped = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for char in mapped:
        if any(check(char) for check in prohibited):
            raise ValueError(f"SASLprep: prohibited character {char!r}")
    # RFC 3454 6: RandALCat strings must not contain LCat and must start and end RandALCat.
    if any(stringprep.in_table_d1(c) for c in mapped) and (
        any(stringprep.in_table_d2(c) for c in mapped)
        or not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1]))
    ):
        raise ValueError("SASLprep: bad bidirectional text")
    return mapped


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _attributes(message: bytes) -> dict[str, str]:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationError("SCRAM message is not UTF-8") from None
    attributes: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if len(key) != 1 or not eq:
            raise AuthenticationError(f"malformed SCRAM attribute {part[:20]!r}")
        attributes.setdefault(key, value)
    return attributes


class ScramSHA256:
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding; the server's signature is
    verified, so a server that does not know the password cannot pass for authenticated."""

    name = "SCRAM-SHA-256"

    def __init__(
        self,
        username: str,
        password: str,
        *,
        nonce: str | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        user = saslprep(username).replace("=", "=3D").replace(",", "=2C")
        self._password = saslprep(password).encode()
        self._nonce = nonce or base64.b64encode(random_bytes(18)).decode("ascii")
        self._client_first_bare = f"n={user},r={self._nonce}".encode()
        self._expected_signature: bytes | None = None
        self._verified = False

    def initial_response(self) -> bytes | None:
        return b"n,," + self._client_first_bare

    def respond(self, challenge: bytes) -> bytes:
        if self._expected_signature is None:
            return self._client_final(challenge)
        if self._verified:
            raise AuthenticationError("unexpected SCRAM challenge after the server's proof")
        self._verify(challenge)
        return b""

    def succeeded(self) -> None:
        if not self._verified:
            raise AuthenticationError("server accepted SCRAM without proving it knows the password")

    def _client_final(self, server_first: bytes) -> bytes:
        attrs = _attributes(server_first)
        if "m" in attrs:
            raise AuthenticationError("SCRAM server requires an unsupported extension")
        nonce, salt_text, iterations_text = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise AuthenticationError("SCRAM server nonce does not extend ours")
        if salt_text is None or not iterations_text.isdigit():
            raise AuthenticationError("SCRAM server-first message lacks salt or iterations")
        iterations = int(iterations_text)
        if not MIN_SCRAM_ITERATIONS <= iterations <= MAX_SCRAM_ITERATIONS:
            raise AuthenticationError(f"SCRAM iteration count {iterations} out of bounds")
        try:
            salt = base64.b64decode(salt_text, validate=True)
        except binascii.Error:
            raise AuthenticationError("SCRAM salt is not base64") from None
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        without_proof = b"c=biws,r=" + nonce.encode()
        auth_message = b",".join((self._client_first_bare, server_first, without_proof))
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._expected_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)

    def _verify(self, server_final: bytes) -> None:
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise AuthenticationError(f"SCRAM server error: {attrs['e'][:100]}")
        try:
            signature = base64.b64decode(attrs.get("v", ""), validate=True)
        except binascii.Error:
            raise AuthenticationError("SCRAM server signature is not base64") from None
        assert self._expected_signature is not None
        if not hmac.compare_digest(signature, self._expected_signature):
            raise AuthenticationError("SCRAM server signature does not match: not the real server")
        self._verified = True
