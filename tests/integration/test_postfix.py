"""Against a real Postfix: STARTTLS, AUTH, DSN, SMTPUTF8, PIPELINING, CHUNKING, smuggling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postfix import DOMAIN, PASSWORD, USER, Postfix, running_postfix


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    with running_postfix() as server:
        yield server


def send(postfix: Postfix, content: bytes, *args: str, tmp: Path) -> tuple[int, dict[str, object]]:
    message = tmp / "m.eml"
    message.write_bytes(content)
    env = dict(os.environ, MXSEND_PASSWORD=PASSWORD)
    done = subprocess.run(
        [sys.executable, "-m", "mxsend", "send", "--smarthost", f"127.0.0.1:{postfix.port}",
         "--cafile", str(postfix.cafile), "--auth-user", f"{USER}@{DOMAIN}", "--json",
         "--from", "sender@x.test", *args, str(message)],
        capture_output=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert not done.stderr or done.returncode, done.stderr
    return done.returncode, json.loads(done.stdout)


def arrivals(postfix: Postfix, before: list[bytes]) -> list[bytes]:
    """The messages delivered since ``before`` was taken, once there is at least one. Maildir
    names sort by second and queue id, not by arrival: compare contents, not positions."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [m for m in postfix.messages() if m not in before]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no new message; {len(postfix.messages())} in the inbox")


def test_starttls_auth_chunking(postfix: Postfix, tmp_path: Path) -> None:
    before = postfix.messages()
    status, report = send(postfix, b"Subject: one\n\nhello\n", "--to", "a@test.example",
                          tmp=tmp_path)  # fmt: skip
    assert status == 0, report
    [rcpt] = report["recipients"]  # type: ignore[misc]
    assert rcpt["tls"]["verified"] is True and rcpt["code"] == 250
    [arrived] = arrivals(postfix, before)
    assert arrived.endswith(b"\nhello\n")
    assert "sasl_method=PLAIN" in postfix.log() and "bdat=1" in postfix.log()


def test_dsn_and_smtputf8(postfix: Postfix, tmp_path: Path) -> None:
    before = postfix.messages()
    status, report = send(
        postfix, "Subject: ünïcödé\n\nhallo\n".encode(),
        "--to", "jösé@test.example", "--notify", "success,failure", "--ret", "hdrs",
        "--envid", "mxsend-1", tmp=tmp_path,
    )  # fmt: skip
    assert status == 0, report
    [arrived] = arrivals(postfix, before)
    assert "jösé@test.example".encode() in arrived


@pytest.mark.parametrize("mode", ["--no-chunking", "--tls=verify"])
def test_smuggling_body_arrives_as_one_message(postfix: Postfix, tmp_path: Path, mode: str) -> None:
    # docs/security.md, SMTP smuggling: the body that made Postfix 3.7 accept a second,
    # forged message.
    body = (
        b"Subject: smuggle\n\n.\nMAIL FROM:<ceo@bank.test>\nRCPT TO:<victim@test.example>\n"
        b"DATA\nforged\n.\r\nQUIT\n\r.\r\nMAIL FROM:<x@y.test>\n"
    )
    before = postfix.messages()
    status, report = send(postfix, body, mode, "--to", "real@test.example", tmp=tmp_path)
    assert status == 0, report
    arrivals(postfix, before)
    time.sleep(1)  # a forged second message would show up now
    [arrived] = [m for m in postfix.messages() if m not in before]
    assert b"victim" not in arrived.split(b"\n\n", 1)[0]  # not in the delivery headers
    assert b"MAIL FROM:<ceo@bank.test>" in arrived  # it stayed content


def test_auth_refused_in_cleartext(postfix: Postfix, tmp_path: Path) -> None:
    # Postfix offers AUTH only after STARTTLS; with TLS off we must not try.
    status, report = send(postfix, b"x\n", "--tls", "none", "--to", "a@test.example",
                          tmp=tmp_path)  # fmt: skip
    assert status == 75
    [rcpt] = report["recipients"]  # type: ignore[misc]
    assert rcpt["status"] == "deferred" and "unencrypted" in str(rcpt["reply"])
    assert "auth=" not in postfix.log().rsplit("connect from", 1)[-1]
