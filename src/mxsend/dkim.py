"""DKIM signing at submission: rsa-sha256 (RFC 6376, RFC 8301) and ed25519-sha256 (RFC 8463).

:func:`sign` returns the ``DKIM-Signature`` header fields to put before a message's content,
one per :class:`DkimKey` (RFC 8463 6: sign with both an RSA and an ed25519 key for now).
It signs the exact bytes that are stored and sent: the content must already be canonical
(CRLF line ends only, as the queue stores it after the submission fix-ups), and a bare CR or
LF is refused rather than signed as something the wire will change. The body is read in
chunks and hashed as it is read (:func:`body_hash`), never held whole; only the header block
is in memory. dkimpy (``dkim``) canonicalizes and signs the header fields, folds the result
and is what the tests verify with; it is imported only when a key is loaded or a message
signed, so importing this module stays cheap (dkimpy itself pulls in dnspython: ~90 ms).

Choices, with their reasons:

- Canonicalization ``relaxed/relaxed`` (RFC 6376 3.4.2, 3.4.4): survives the refolding and
  whitespace changes relays make; OpenDKIM, rspamd and the large providers all sign so.
- Signed header fields (RFC 6376 5.4, 8.15): From always, and exactly one From, or the
  message is refused (RFC 5322 3.6 allows one; a second is how signatures are replayed over
  a forged From). The visible fields From, To, Cc, Subject and Reply-To are *oversigned*:
  listed once more than they occur, even when absent, so none can be added without breaking
  the signature. Sender, Date, Message-ID, the MIME fields, In-Reply-To, References and
  List-Unsubscribe(-Post) (RFC 8058 4 requires them signed) are oversigned when present.
  Resent-*, Content-ID/-Description and the other List-* fields are signed as often as they
  occur. This is rspamd's default (its ``(o)`` and ``(x)`` marks), and covers every field
  OpenDKIM and dkimpy sign by default (they oversign nothing, or From only). Return-Path,
  Received, Bcc and DKIM-Signature are never signed (RFC 6376 5.4.1).
- Tags as dkimpy writes them (``v a c d i q s t h bh b``), with no ``l=`` (a body length lets
  anyone append to the body: RFC 6376 8.2) and no ``x=``.

Key files (:meth:`DkimKey.load`):

- rsa-sha256: an unencrypted PEM private key, PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8
  (``BEGIN PRIVATE KEY``), as ``openssl genrsa`` and opendkim-genkey write; at least 1024 bits
  (RFC 8301 3.2 MUST; 2048 SHOULD, and :func:`keygen` makes no smaller ones).
- ed25519-sha256: the base64 of the 32-octet seed (RFC 8032 5.1.5), as dkimpy's dknewkey
  writes and :func:`keygen` writes; the base64 of seed and public key (64 octets, libsodium's
  form) and a PKCS#8 PEM (``openssl genpkey -algorithm ed25519``) are read too.
- A key file must be a regular file, not readable or writable by others nor writable by its
  group (as OpenDKIM's RequireSafeKeys; group-readable is fine); anything else is a
  :class:`DkimKeyError` naming the file and why.

Errors (all :class:`~mxsend.protocol.MxsendError`)::

    DkimError
     +-- DkimKeyError         a configured key cannot be used (also a ConfigError)
     +-- DkimParameterError   a domain, selector, algorithm, key size or header list that
     |                        cannot be used (also a ValueError)
     +-- SigningError         this message cannot be signed: no From, two From fields, not
     |                        canonical, a header block that is not one (also a ValueError)
     +-- KeygenError          the new key's file cannot be created (exists, no folder...)

Pure: no Twisted, no network. Standards: RFC 6376 (DKIM), RFC 8301 (rsa-sha1 gone, key
sizes), RFC 8463 (ed25519-sha256), RFC 8058 (signed List-Unsubscribe-Post).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol, TypeAlias

from mxsend.options import ConfigError
from mxsend.protocol import CHUNK_SIZE, AddressError, MxsendError, validate_domain

__all__ = [
    "MAX_HEADER_OCTETS",
    "MAX_KEY_FILE_OCTETS",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "NEVER_SIGNED",
    "NEW_RSA_BITS",
    "OVERSIGNED",
    "OVERSIGNED_IF_PRESENT",
    "SIGNED_IF_PRESENT",
    "Algorithm",
    "DkimError",
    "DkimKey",
    "DkimKeyError",
    "DkimParameterError",
    "KeyConfig",
    "KeyEntry",
    "KeygenError",
    "SigningError",
    "body_hash",
    "check_names",
    "headers_to_sign",
    "keygen",
    "keys_for",
    "load_keys",
    "sign",
]

#: The signing algorithms (RFC 6376 3.3; RFC 8301 4 took rsa-sha1 away; RFC 8463 3).
Algorithm: TypeAlias = Literal["rsa-sha256", "ed25519-sha256"]


class KeyEntry(Protocol):
    """One key as the configuration gives it (mxsend.config's DkimKeyConfig)."""

    @property
    def selector(self) -> str: ...
    @property
    def key_file(self) -> str: ...
    @property
    def algorithm(self) -> str: ...


#: One configured key: a KeyEntry, or (selector, key file, "rsa" or "ed25519").
KeyConfig: TypeAlias = "KeyEntry | tuple[str, str, str]"

_ALGORITHMS: dict[str, Algorithm] = {
    "rsa": "rsa-sha256",
    "rsa-sha256": "rsa-sha256",
    "ed25519": "ed25519-sha256",
    "ed25519-sha256": "ed25519-sha256",
}

#: RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits...
MIN_RSA_BITS = 1024
#: ... and SHOULD use at least 2048: the size of new keys, and the least keygen makes.
NEW_RSA_BITS = 2048
#: RFC 8301 3.2: verifiers MUST handle up to 4096 bits (MAY more): the most keygen makes.
MAX_RSA_BITS = 4096
#: A key file larger than this is not a key (an RSA 4096 PEM is about 3.3 KB).
MAX_KEY_FILE_OCTETS = 65536
#: The most header block read before the body; as mxsend.message reads for recipients.
MAX_HEADER_OCTETS = 1024 * 1024
# RFC 1035 3.3.14: a TXT character-string is at most 255 octets; RFC 6376 3.6.2.2: a key
# record in several strings is their concatenation.
_TXT_STRING_OCTETS = 255

#: Signed once more than they occur, even when absent: the fields a reader sees.
OVERSIGNED = ("from", "to", "cc", "subject", "reply-to")
#: Signed once more than they occur when present, so a second one cannot be added.
OVERSIGNED_IF_PRESENT = (
    "sender", "date", "message-id", "mime-version", "content-type",
    "content-transfer-encoding", "in-reply-to", "references",
    "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
#: Signed as often as they occur.
SIGNED_IF_PRESENT = (
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
    "resent-message-id", "content-id", "content-description", "list-id", "list-help",
    "list-owner", "list-subscribe", "list-post", "list-archive",
)  # fmt: skip
#: Never signed: trace fields and what relays may remove (RFC 6376 5.4.1; dkimpy refuses them).
NEVER_SIGNED = (
    "return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature",
)  # fmt: skip
_SIGNED = frozenset(OVERSIGNED + OVERSIGNED_IF_PRESENT + SIGNED_IF_PRESENT)

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 3.6.8: printable ASCII but the colon
_FROM_LINE = re.compile(rb"(?:^|\r\n)from[ \t]*:", re.IGNORECASE)  # obs-fields: WSP before ':'
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_WSP = re.compile(rb"[ \t]{2,}|\t")  # the runs that are not a single SP already
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
# RFC 8410 7: PKCS#8 of an Ed25519 key (OID 1.3.101.112), then the 32-octet seed.
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_OID = bytes.fromhex("06032b6570")


class DkimError(MxsendError):
    """Something about DKIM signing cannot be done; the subclass says what."""


class DkimKeyError(DkimError, ConfigError):
    """A configured key cannot be used: its file is missing, unreadable, not a key, a key of
    the wrong type or too small. One line, naming the file and why."""


class DkimParameterError(DkimError, ValueError):
    """A domain, selector, algorithm, key size or list of header fields that cannot be used."""


class SigningError(DkimError, ValueError):
    """This message cannot be signed as it is (no From or two, a bare CR or LF, a header
    block that is not one). It concerns the message, not the key."""


class KeygenError(DkimError):
    """The new key's file cannot be created: it exists, or its folder cannot take it."""


def _dkimpy() -> Any:
    import dkim  # type: ignore[import-untyped]  # noqa: PLC0415 - 90 ms, only when signing

    return dkim


def _algorithm(name: str) -> Algorithm:
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise DkimParameterError(
            f"unknown DKIM key type {name!r}: rsa or ed25519 (rsa-sha256, ed25519-sha256)"
        ) from None


def _dns_name(text: str, what: str) -> str:
    """``text`` as lower-case A-labels (RFC 6376 3.5: d= and s= are A-labels)."""
    try:
        name = validate_domain(text)
    except AddressError as exc:
        raise DkimParameterError(f"bad DKIM {what} {text!r}: {exc}") from None
    if name.startswith("["):
        raise DkimParameterError(f"bad DKIM {what} {text!r}: an address literal")
    return name.lower()


def check_names(domain: str, selector: str) -> tuple[str, str]:
    """``(domain, selector)`` as they go in ``d=`` and ``s=``: lower-case A-labels, checked
    (RFC 6376 3.1 selectors are dot-separated labels). Raises :class:`DkimParameterError`."""
    domain, selector = _dns_name(domain, "domain"), _dns_name(selector, "selector")
    record = f"{selector}._domainkey.{domain}"
    if len(record) > 253:  # RFC 1035 2.3.4, without the final dot
        raise DkimParameterError(f"DKIM record name {record} is longer than 253 octets")
    return domain, selector


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing key for one domain and selector.

    ``private_key`` is the key as dkimpy takes it: PEM for RSA, the base64 seed for ed25519.
    Build one with :meth:`load` (from a file) or :meth:`from_bytes`, which check the key; the
    constructor checks the names only. ``domain`` and ``selector`` become lower-case A-labels.
    """

    domain: str
    selector: str
    algorithm: Algorithm
    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        domain, selector = check_names(self.domain, self.selector)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "selector", selector)
        object.__setattr__(self, "algorithm", _algorithm(self.algorithm))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, domain: str, selector: str, algorithm: str
    ) -> DkimKey:
        """The key in the file at ``path`` (formats in the module docstring). Raises
        :class:`DkimKeyError` naming the file: missing, unreadable, not a regular file,
        readable by others, not a key, the wrong type, or an RSA key under 1024 bits."""
        name = os.fspath(path)
        try:
            _algorithm(algorithm)
            check_names(domain, selector)
            data = _read_key_file(name)
            return cls.from_bytes(data, domain=domain, selector=selector, algorithm=algorithm)
        except (DkimParameterError, DkimKeyError) as exc:
            raise DkimKeyError(f"DKIM key {name}: {exc}") from None

    @classmethod
    def check_file(
        cls, path: str | os.PathLike[str], *, domain: str, selector: str, algorithm: str
    ) -> None:
        """What :meth:`load` checks, short of dkimpy's parse of an RSA key (its size):
        dkimpy imports the network modules, and every command reads the config file that
        names keys. Raises :class:`DkimKeyError` as :meth:`load` does."""
        name = os.fspath(path)
        try:
            chosen = _algorithm(algorithm)
            check_names(domain, selector)
            data = _read_key_file(name)
            if chosen == "rsa-sha256":
                _rsa_form(data)
            else:
                _ed25519_seed(data)
        except (DkimParameterError, DkimKeyError) as exc:
            raise DkimKeyError(f"DKIM key {name}: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes, *, domain: str, selector: str, algorithm: str) -> DkimKey:
        """The key in ``data`` (a key file's content), checked as :meth:`load` does."""
        chosen = _algorithm(algorithm)
        key = _rsa_pem(data) if chosen == "rsa-sha256" else _ed25519_seed(data)
        return cls(domain, selector, chosen, key)

    @property
    def dns_name(self) -> str:
        """Where the public key is published (RFC 6376 3.6.2.1), without the final dot."""
        return f"{self.selector}._domainkey.{self.domain}"

    def txt_value(self) -> str:
        """The key record to publish (RFC 6376 3.6.1): ``v=DKIM1; k=rsa; p=...``."""
        if self.algorithm == "rsa-sha256":
            from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

            private = serialization.load_pem_private_key(self.private_key, password=None)
            public = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
        import nacl.signing  # noqa: PLC0415

        verify_key = nacl.signing.SigningKey(base64.b64decode(self.private_key)).verify_key
        # RFC 8463 4.2: p= is the base64 of the raw 32-octet public key.
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(verify_key)).decode()}"

    def txt_record(self) -> str:
        """The record as a zone file line, the value in strings of at most 255 octets."""
        value = self.txt_value()
        strings = " ".join(
            f'"{value[i : i + _TXT_STRING_OCTETS]}"'
            for i in range(0, len(value), _TXT_STRING_OCTETS)
        )
        return f"{self.dns_name}. IN TXT {strings}"

    def _signing_key(self, dkim: Any) -> Any:
        """The key as dkimpy's signer takes it."""
        try:
            if self.algorithm == "rsa-sha256":
                return dkim.crypto.parse_pem_private_key(self.private_key)
            import nacl.encoding  # noqa: PLC0415
            import nacl.signing  # noqa: PLC0415

            return nacl.signing.SigningKey(self.private_key, encoder=nacl.encoding.Base64Encoder)
        except Exception as exc:  # a DkimKey built by hand with bytes that are no key
            raise DkimKeyError(f"DKIM key {self.dns_name} cannot be used: {exc}") from None


# -- key files --------------------------------------------------------------------------------


def _read_key_file(path: str) -> bytes:
    """The content of a key file: a regular file no other user can read or write, and its
    group cannot write."""
    try:
        # O_NONBLOCK: a FIFO put where a key should be fails below instead of hanging.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DkimKeyError(_why(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DkimKeyError("is a directory")
        if not stat.S_ISREG(mode):
            raise DkimKeyError("is not a regular file")
        if mode & 0o007:
            mode = stat.S_IMODE(mode)
            raise DkimKeyError(f"is open to other users (mode {mode:04o}): chmod o-rwx it")
        if mode & 0o020:  # whoever can write it can sign as the domain
            mode = stat.S_IMODE(mode)
            raise DkimKeyError(f"is writable by its group (mode {mode:04o}): chmod g-w it")
        data = b""
        while len(data) <= MAX_KEY_FILE_OCTETS and (more := os.read(fd, MAX_KEY_FILE_OCTETS)):
            data += more
    except OSError as exc:
        raise DkimKeyError(_why(exc)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_OCTETS:
        raise DkimKeyError(f"is over {MAX_KEY_FILE_OCTETS} octets: not a key")
    return data


def _why(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    return f"cannot be read: {exc.strerror or exc}"


def _pem(data: bytes) -> tuple[str, bytes] | None:
    """The label and DER of the first PEM block in ``data``, or None if there is none."""
    found = _PEM.search(data)
    if found is None:
        return None
    label, body = found.group(1).decode("ascii"), found.group(2)
    if b"Proc-Type:" in body or "ENCRYPTED" in label:
        raise DkimKeyError("is encrypted: mxsend needs the key unencrypted (mode 0600)")
    try:
        return label, base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise DkimKeyError(f"has a {label} PEM block that is not base64") from None


def _rsa_form(data: bytes) -> tuple[str, bytes]:
    """The label and DER of an RSA private key's PEM block, its form checked (not its
    content: that needs dkimpy)."""
    found = _pem(data)
    if found is None:
        hint = " (it looks like an ed25519 key)" if _looks_like_seed(data) else ""
        raise DkimKeyError(f"is not a PEM private key, as rsa-sha256 needs{hint}")
    label, der = found
    if label == "PRIVATE KEY" and _ED25519_OID in der[:16]:
        raise DkimKeyError("holds an ed25519 key, not an RSA key for rsa-sha256")
    if label not in ("RSA PRIVATE KEY", "PRIVATE KEY"):
        raise DkimKeyError(f"holds a {label}, not an RSA private key for rsa-sha256")
    return label, der


def _rsa_pem(data: bytes) -> bytes:
    """An RSA private key in PEM, as dkimpy reads it (PKCS#1 or PKCS#8, LF line ends)."""
    label, der = _rsa_form(data)
    encoded = base64.encodebytes(der)  # lines of 76 and LF, which dkimpy's parser wants
    pem = b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label.encode(), encoded, label.encode())
    dkim = _dkimpy()
    try:
        modulus = dkim.crypto.parse_pem_private_key(pem)["modulus"]
    except Exception:  # dkimpy's ASN.1 parser raises more than UnparsableKeyError
        raise DkimKeyError(f"holds a {label} that is not an RSA key dkimpy can read") from None
    bits = int(modulus).bit_length()
    if bits < MIN_RSA_BITS:
        raise DkimKeyError(
            f"is an RSA key of {bits} bits: RFC 8301 3.2 requires at least {MIN_RSA_BITS} "
            f"({NEW_RSA_BITS} recommended)"
        )
    return pem


def _looks_like_seed(data: bytes) -> bool:
    try:
        return len(base64.b64decode(data.strip(), validate=True)) in (32, 64)
    except binascii.Error:
        return False


def _ed25519_seed(data: bytes) -> bytes:
    """The base64 of an ed25519 key's 32-octet seed, as dkimpy takes it."""
    import nacl.signing  # noqa: PLC0415

    found = _pem(data)
    if found is not None:
        label, der = found
        if label == "PRIVATE KEY" and der.startswith(_ED25519_PKCS8) and len(der) == 48:
            return base64.b64encode(der[len(_ED25519_PKCS8) :])
        if label == "RSA PRIVATE KEY" or (label == "PRIVATE KEY" and _ED25519_OID not in der):
            raise DkimKeyError("holds an RSA key, not an ed25519 key for ed25519-sha256")
        if label == "PRIVATE KEY":
            raise DkimKeyError("holds an ed25519 PKCS#8 form other than RFC 8410's: re-export it")
        raise DkimKeyError(f"holds a {label}, not an ed25519 private key for ed25519-sha256")
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) not in (32, 64):
        raise DkimKeyError(
            "is not an ed25519 key: the base64 of a 32-octet seed (as dknewkey writes), "
            "or a PKCS#8 PEM, for ed25519-sha256"
        )
    seed = raw[:32]
    if len(raw) == 64 and bytes(nacl.signing.SigningKey(seed).verify_key) != raw[32:]:
        raise DkimKeyError("holds 64 octets whose second half is not the seed's public key")
    return base64.b64encode(seed)


# -- configuration ----------------------------------------------------------------------------


def _load_domain(domain: str, entries: Sequence[KeyConfig]) -> tuple[DkimKey, ...]:
    keys: list[DkimKey] = []
    for entry in entries:
        if isinstance(entry, tuple):
            selector, key_file, key_type = entry
        else:
            selector, key_file, key_type = entry.selector, entry.key_file, entry.algorithm
        try:
            key = DkimKey.load(key_file, domain=domain, selector=selector, algorithm=key_type)
        except DkimKeyError as exc:
            raise DkimKeyError(f"{exc} (domain {domain}, selector {selector})") from None
        if any(k.selector == key.selector for k in keys):
            raise DkimKeyError(f"DKIM domain {domain}: selector {key.selector} is given twice")
        keys.append(key)
    return tuple(keys)


def load_keys(configured: Mapping[str, Sequence[KeyConfig]]) -> dict[str, tuple[DkimKey, ...]]:
    """Every configured key, loaded now, by sender domain (lower-case A-labels), so a bad one
    is a configuration error at start. ``configured`` maps a domain to its entries:
    ``Config.dkim`` (DkimKeyConfig values), or ``(selector, key_file, "rsa" | "ed25519")``."""
    loaded: dict[str, tuple[DkimKey, ...]] = {}
    for domain, entries in configured.items():
        try:
            name = _dns_name(domain, "domain")
        except DkimParameterError as exc:
            raise DkimKeyError(str(exc)) from None
        if name in loaded:
            raise DkimKeyError(f"DKIM domain {name} is configured twice")
        loaded[name] = _load_domain(name, entries)
    return loaded


def keys_for(domain: str, configured: Mapping[str, Sequence[KeyConfig]]) -> tuple[DkimKey, ...]:
    """The keys for sender ``domain`` (any case, U- or A-labels), read from their files now;
    ``()`` when it has none. Only an exact match counts: a subdomain has keys of its own.
    Raises :class:`DkimKeyError` when one of them cannot be used."""
    try:
        wanted = _dns_name(domain, "domain")
    except DkimParameterError:
        return ()  # an address literal or a broken name: no key can be configured for it
    for name, entries in configured.items():
        try:
            matches = _dns_name(name, "domain") == wanted
        except DkimParameterError as exc:
            raise DkimKeyError(str(exc)) from None
        if matches:
            return _load_domain(wanted, entries)
    return ()


# -- new keys ---------------------------------------------------------------------------------


def keygen(
    domain: str,
    selector: str,
    algorithm: str,
    path: str | os.PathLike[str],
    *,
    bits: int = NEW_RSA_BITS,
) -> str:
    """Make a new key (RSA of ``bits``, by default 2048, or ed25519), write it to ``path``
    and return the TXT record to publish (:meth:`DkimKey.txt_record`).

    The file is created with mode 0600, ``O_EXCL`` and ``O_NOFOLLOW``: an existing file or
    link is never overwritten or followed (:class:`KeygenError`). Bad names, type or size
    raise :class:`DkimParameterError` before anything is written."""
    chosen = _algorithm(algorithm)
    check_names(domain, selector)
    if chosen == "rsa-sha256" and not NEW_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise DkimParameterError(
            f"RSA key size {bits}: from {NEW_RSA_BITS} (RFC 8301 3.2) to {MAX_RSA_BITS} bits"
        )
    data = _new_rsa(bits) if chosen == "rsa-sha256" else _new_ed25519()
    key = DkimKey.from_bytes(data, domain=domain, selector=selector, algorithm=chosen)
    _write_new(os.fspath(path), data)
    return key.txt_record()


def _new_rsa(bits: int) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ed25519() -> bytes:
    import nacl.signing  # noqa: PLC0415

    return base64.b64encode(bytes(nacl.signing.SigningKey.generate())) + b"\n"


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (never an existing file, never through a link) holding ``data``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeygenError(f"{path} exists; a key file is never overwritten") from None
    except OSError as exc:
        raise KeygenError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        os.unlink(path)
        raise KeygenError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # the new name survives a crash, like its content
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


# -- signing ----------------------------------------------------------------------------------


class _RelaxedBody:
    """RFC 6376 3.4.4 body canonicalization fed in chunks, into SHA-256. Complete lines are
    hashed as they arrive; only the line in progress and a count of empty lines are held."""

    __slots__ = ("_blank", "_hash", "_partial")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._partial: list[bytes] = []  # the line in progress, no LF seen yet
        self._blank = 0  # empty lines held back: 3.4.4 (c) ignores them at the end

    def update(self, chunk: bytes) -> None:
        if b"\n" not in chunk:
            if chunk:
                self._partial.append(chunk)
            return
        data = b"".join(self._partial) + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1
        self._partial = [data[end:]] if end < len(data) else []
        self._lines(data[:end])

    def digest(self) -> bytes:
        """The body hash. A last line with no CRLF counts as ended by one, as the wire ends
        content with CRLF (and 3.4.4 adds one); an empty body hashes nothing."""
        rest = b"".join(self._partial)
        self._partial = []
        if rest:
            self._lines(rest + b"\r\n")
        return self._hash.digest()

    def _lines(self, text: bytes) -> None:
        """Hash complete lines, each ending with CRLF."""
        if not text.count(b"\r") == text.count(b"\n") == text.count(b"\r\n"):
            raise SigningError(_NOT_CANONICAL.format(where="body"))
        # 3.4.4 (a): no WSP at line ends, other runs of WSP become one SP.
        canonical = _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", text))
        kept = canonical.rstrip(b"\r\n")  # CR and LF only come as CRLF here
        if not kept:
            self._blank += len(canonical) // 2
            return
        self._hash.update(b"\r\n" * self._blank)
        self._hash.update(kept)
        self._hash.update(b"\r\n")
        self._blank = (len(canonical) - len(kept)) // 2 - 1


_NOT_CANONICAL = (
    "cannot DKIM-sign: the message {where} has a CR or LF that is not part of a CRLF; "
    "sign the bytes as they are stored, with CRLF line ends"
)


def body_hash(chunks: Iterable[bytes]) -> bytes:
    """SHA-256 of the relaxed canonical form of the body given in ``chunks`` (RFC 6376
    3.4.4, 3.7): what ``bh=`` holds, before base64. CRLF line ends only (SigningError)."""
    hasher = _RelaxedBody()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest()


def headers_to_sign(names: Iterable[str]) -> tuple[str, ...]:
    """The default ``h=`` list for a header block with fields ``names`` (top to bottom):
    each field of the lists above as often as it occurs, in the message's order, then one
    more of each oversigned field (see the module docstring)."""
    present = [name.lower() for name in names]
    counts = Counter(present)
    signed = [name for name in present if name in _SIGNED]
    extra = [*OVERSIGNED, *(name for name in OVERSIGNED_IF_PRESENT if counts[name])]
    return (*signed, *extra)


def sign(
    content: bytes | BinaryIO,
    keys: Iterable[DkimKey],
    *,
    signed_headers: Sequence[str] | None = None,
    now: float | None = None,
) -> bytes:
    """The ``DKIM-Signature`` header fields to put before ``content``, one per key, in the
    order of ``keys``, each folded and ending with CRLF (``b""`` for no key).

    ``content`` is the message exactly as it is stored and sent (CRLF line ends): bytes, or a
    seekable binary file read in chunks from where it is and put back there. The body is
    hashed as it is read; the header block (at most MAX_HEADER_OCTETS) is held. The message
    must have exactly one From field. ``signed_headers`` replaces the default ``h=`` list
    (:func:`headers_to_sign`); it must name From and none of NEVER_SIGNED. ``now`` is the
    signing time for ``t=`` (default: the clock).

    Raises :class:`SigningError` for a message that cannot be signed,
    :class:`DkimParameterError` for a bad ``signed_headers``."""
    keys = tuple(keys)
    if not keys:
        return b""
    head, digest = _read(content)
    count = len(_FROM_LINE.findall(head))
    if count != 1:
        raise SigningError(
            f"cannot DKIM-sign a message with {count or 'no'} From field"
            f"{'s' if count != 1 else ''}: it needs exactly one (RFC 5322 3.6, RFC 6376 8.15)"
        )
    dkim = _dkimpy()
    try:
        fields = dkim.rfc822_parse(head)[0]
    except (dkim.DKIMException, IndexError):  # IndexError: a continuation line first
        raise SigningError(
            "cannot DKIM-sign: the header block has a line that is neither a field nor "
            "the continuation of one (RFC 5322 2.2)"
        ) from None
    names = [bytes(name).decode("ascii").lower() for name, _ in fields]
    include = _include(names, signed_headers)
    stamp = str(int(time.time() if now is None else now)).encode("ascii")
    return b"".join(
        _signature(dkim, key, head, include=include, digest=digest, stamp=stamp) for key in keys
    )


def _include(names: list[str], signed_headers: Sequence[str] | None) -> list[bytes]:
    if signed_headers is None:
        chosen = headers_to_sign(names)
    else:
        chosen = tuple(name.lower() for name in signed_headers)
        bad = [name for name in chosen if not _FIELD_NAME.fullmatch(name)]
        if bad:
            raise DkimParameterError(f"not a header field name: {bad[0]!r}")
        if "from" not in chosen:
            raise DkimParameterError("the signed header fields must include From (RFC 6376 5.4)")
        never = sorted(set(chosen) & set(NEVER_SIGNED))
        if never:
            raise DkimParameterError(f"{never[0]} is never signed (RFC 6376 5.4.1)")
    return [name.encode("ascii") for name in chosen]


def _read(content: bytes | BinaryIO) -> tuple[bytes, bytes]:
    """The header block (up to and including the empty line that ends it) and the body
    hash, reading ``content`` once, in chunks."""
    if isinstance(content, bytes | bytearray | memoryview):
        data = bytes(content)
        return _hash_chunks(data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE))
    if not content.seekable():
        raise ValueError("DKIM signing needs bytes or a seekable binary file")
    start = content.tell()
    try:
        return _hash_chunks(iter(lambda: content.read(CHUNK_SIZE), b""))
    finally:
        content.seek(start)


def _hash_chunks(chunks: Iterator[bytes]) -> tuple[bytes, bytes]:
    buffer = b""
    for chunk in chunks:
        searched = max(0, len(buffer) - 3)
        buffer += chunk
        found = -2 if buffer.startswith(b"\r\n") else buffer.find(b"\r\n\r\n", searched)
        if found != -1:
            head, rest = buffer[: found + 4], buffer[found + 4 :]
            break
        if len(buffer) > MAX_HEADER_OCTETS:
            raise SigningError(f"cannot DKIM-sign: header block over {MAX_HEADER_OCTETS} octets")
    else:
        head, rest = buffer, b""  # header fields only, no body
    if not head.count(b"\r") == head.count(b"\n") == head.count(b"\r\n"):
        raise SigningError(_NOT_CANONICAL.format(where="header block"))
    hasher = _RelaxedBody()
    hasher.update(rest)
    for chunk in chunks:
        hasher.update(chunk)
    return head, hasher.digest()


def _signature(
    dkim: Any, key: DkimKey, head: bytes, *, include: list[bytes], digest: bytes, stamp: bytes
) -> bytes:
    """One DKIM-Signature field: dkimpy's DKIM.sign with our body hash (it would hash the
    whole body in memory), the same tags in the same order, and its gen_header."""
    algorithm = key.algorithm.encode("ascii")
    signer = dkim.DKIM(head, signature_algorithm=algorithm, linesep=b"\r\n")
    signer.hasher = hashlib.sha256  # both algorithms hash with SHA-256
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    domain, selector = key.domain.encode("ascii"), key.selector.encode("ascii")
    tags = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", stamp),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(digest)),
        (b"b", b"0" * 60),  # a placeholder, as dkimpy folds it onto a line of its own
    ]
    try:
        value: bytes = signer.gen_header(
            tags, include, policy, b"DKIM-Signature", key._signing_key(dkim)
        )
    except dkim.DKIMException as exc:
        raise DkimKeyError(f"DKIM key {key.dns_name} cannot sign: {exc}") from None
    return b"DKIM-Signature: " + value
