"""DKIM signatures verified by dkimpy against public keys served as TXT records by a real DNS
server on 127.0.0.1 (twisted.names, in a child process started here and stopped by PID),
asked through dnspython: new RSA and ed25519 keys signing together, a 4096-bit key whose
record spans three strings, a body of several megabytes signed from a file in bounded
memory, and the real ``mxsend dkim keygen`` program."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import dns.resolver
import pytest

from mxsend.dkim import DkimKey, keygen, keys_for, sign

ROOT = Path(__file__).parent.parent.parent
DOMAIN = "example.test"
MESSAGE = (
    b"From: Ann <ann@example.test>\r\n"
    b"To: bob@beta.test\r\n"
    b"Subject: signed\r\n"
    b"Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
    b"Message-ID: <dns@example.test>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def record_strings(record: str) -> tuple[str, list[str]]:
    """The name and the strings of a TXT record line as keygen prints it."""
    found = re.fullmatch(r'(\S+)\. IN TXT ((?:"[^"]{1,255}" ?)+)', record.strip())
    assert found, record
    return found.group(1), re.findall(r'"([^"]*)"', found.group(2))


@contextlib.contextmanager
def dns_server(records: dict[str, list[str]]) -> Iterator[int]:
    """A DNS authority for the zone ``test`` serving ``records`` (name -> the strings of one
    TXT record) on 127.0.0.1; yields its port."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.dns_txt_server"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps({"zone": "test", "txt": records}))
        child.stdin.close()
        yield int(json.loads(child.stdout.readline())["port"])
    finally:
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


def txt_lookup(port: int) -> Callable[..., bytes | None]:
    """A dkimpy dnsfunc asking only the server on 127.0.0.1:port, with a deadline."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(answer[0].strings)

    return lookup


def verdicts(message: bytes, port: int) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of ``message``, top to bottom."""
    count = sum(1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature")
    results = []
    for index in range(count):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=txt_lookup(port))))
        except dkim.DKIMException:
            results.append(False)
    return results


def test_rsa_and_ed25519_keys_from_keygen_verify_through_dns(tmp_path: Path) -> None:
    records: dict[str, list[str]] = {}
    for selector, algorithm in (("rsa2026", "rsa"), ("ed2026", "ed25519")):
        name, strings = record_strings(
            keygen(DOMAIN, selector, algorithm, tmp_path / f"{selector}.key")
        )
        records[name] = strings
    configured = {
        DOMAIN: [
            ("rsa2026", str(tmp_path / "rsa2026.key"), "rsa"),
            ("ed2026", str(tmp_path / "ed2026.key"), "ed25519"),
        ]
    }
    keys = keys_for("Example.Test", configured)
    signed = sign(MESSAGE, keys) + MESSAGE
    with dns_server(records) as port:
        assert verdicts(signed, port) == [True, True]
        assert verdicts(signed.replace(b"Hello Bob", b"Hello Eve"), port) == [False, False]
        # A selector with no record in DNS: the key cannot be found, the signature fails.
        stray = DkimKey.load(
            tmp_path / "ed2026.key", domain=DOMAIN, selector="gone", algorithm="ed25519"
        )
        assert verdicts(sign(MESSAGE, [stray]) + MESSAGE, port) == [False]


def test_a_4096_bit_key_whose_record_spans_three_strings(tmp_path: Path) -> None:
    name, strings = record_strings(keygen(DOMAIN, "big", "rsa", tmp_path / "k", bits=4096))
    assert [len(s) for s in strings[:-1]] == [255, 255] and len(strings) == 3
    key = DkimKey.load(tmp_path / "k", domain=DOMAIN, selector="big", algorithm="rsa")
    with dns_server({name: strings}) as port:
        assert verdicts(sign(MESSAGE, [key]) + MESSAGE, port) == [True]


def test_a_large_body_is_signed_from_a_file_in_bounded_memory(tmp_path: Path) -> None:
    name, strings = record_strings(keygen(DOMAIN, "s1", "ed25519", tmp_path / "k"))
    key = DkimKey.load(tmp_path / "k", domain=DOMAIN, selector="s1", algorithm="ed25519")
    path = tmp_path / "large.eml"
    line = b"A line of the body as mail is written, words and single spaces,\tone tab \r\n"
    with path.open("wb") as out:
        out.write(MESSAGE)
        for i in range(7 * 1024 * 1024 // len(line)):
            out.write(line if i % 100 else b"\r\n")
        out.write(b"\r\n" * 1000)  # trailing empty lines, which the hash ignores
    size = path.stat().st_size
    assert size > 6 * 1024 * 1024
    with path.open("rb") as file:
        tracemalloc.start()
        try:
            signatures = sign(file, [key])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert file.tell() == 0
    # Chunks, never the whole message: what is held depends on CHUNK_SIZE, not on the size.
    assert peak < 1024 * 1024, peak
    with dns_server({name: strings}) as port:
        assert verdicts(signatures + path.read_bytes(), port) == [True]


MXSEND = Path(sys.executable).parent / "mxsend"


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_the_mxsend_dkim_keygen_program(tmp_path: Path, key_type: str) -> None:
    done = subprocess.run(
        [str(MXSEND), "dkim", "keygen", DOMAIN, "prog", "--type", key_type],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"prog.{DOMAIN}.key"
    assert done.stderr == f"mxsend: private key written to {path} (mode 0600)\n"
    assert path.stat().st_mode & 0o777 == 0o600
    name, strings = record_strings(done.stdout)
    key = DkimKey.load(path, domain=DOMAIN, selector="prog", algorithm=key_type)
    with dns_server({name: strings}) as port:
        assert verdicts(sign(MESSAGE, [key]) + MESSAGE, port) == [True]
    again = subprocess.run(
        [str(MXSEND), "dkim", "keygen", DOMAIN, "prog", "--type", key_type],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 73
    assert again.stderr == f"mxsend: prog.{DOMAIN}.key exists; a key file is never overwritten\n"
