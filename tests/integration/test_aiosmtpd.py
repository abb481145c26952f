"""Against aiosmtpd: STARTTLS with the test CA, AUTH after TLS, SMTPUTF8, per-recipient
faults, and exactly the parameters sent."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from mxsend._testca import TestCA
from tests.conftest import free_port

FAULTS = {
    "gone@aio.test": "550 5.1.1 no such user",
    "full@aio.test": "452 4.2.2 mailbox full",
}


@dataclass
class Recorder:
    envelopes: list[Any] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in FAULTS:
            return FAULTS[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 accepted"


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = auth_data.login == b"user" and auth_data.password == b"secret"
    return AuthResult(success=ok, handled=False)


@dataclass
class Aio:
    port: int
    cafile: Path
    recorder: Recorder


@pytest.fixture(scope="module")
def aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aio]:
    ca = TestCA()
    issued = ca.issue("127.0.0.1")
    folder = tmp_path_factory.mktemp("aio")
    (folder / "cert.pem").write_bytes(issued.cert_pem)
    (folder / "key.pem").write_bytes(issued.key_pem)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    recorder = Recorder()
    port = free_port()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=port, tls_context=context,
        require_starttls=True, authenticator=authenticator, auth_require_tls=True,
        enable_SMTPUTF8=True,
    )  # fmt: skip
    controller.start()
    try:
        yield Aio(port, folder / "ca.pem", recorder)
    finally:
        controller.stop()


def send(aio: Aio, *args: str, content: bytes = b"Subject: t\n\nhi\n") -> tuple[int, Any]:
    with tempfile.NamedTemporaryFile(suffix=".eml") as message:
        message.write(content)
        message.flush()
        done = subprocess.run(
            [sys.executable, "-m", "mxsend", "send", "--smarthost", f"127.0.0.1:{aio.port}",
             "--cafile", str(aio.cafile), "--from", "sender@x.test", "--json", *args,
             message.name],
            capture_output=True, timeout=120, check=False,
            env=dict(os.environ, MXSEND_PASSWORD="secret"),
        )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def test_starttls_auth_and_per_recipient_faults(aio: Aio) -> None:
    status, report = send(
        aio, "--auth-user", "user", "--to", "ok@aio.test", "--to", "gone@aio.test",
        "--to", "full@aio.test",
    )  # fmt: skip
    assert status == 75
    by = {r["recipient"]: r for r in report["recipients"]}
    assert by["ok@aio.test"]["status"] == "delivered"
    assert by["ok@aio.test"]["tls"]["verified"] is True
    assert (by["gone@aio.test"]["status"], by["gone@aio.test"]["code"]) == ("failed", 550)
    assert (by["full@aio.test"]["status"], by["full@aio.test"]["code"]) == ("deferred", 452)
    envelope = aio.recorder.envelopes[-1]
    assert envelope.rcpt_tos == ["ok@aio.test"]
    assert envelope.content.endswith(b"\r\nhi\r\n")


def test_wrong_password_is_reported(aio: Aio) -> None:
    with tempfile.NamedTemporaryFile("w") as password:
        password.write("wrong\n")
        password.flush()
        status, report = send(
            aio, "--auth-user", "user", "--auth-password-file", password.name,
            "--to", "ok@aio.test",
        )  # fmt: skip
    [rcpt] = report["recipients"]
    # Deferred, not bounced (Postfix's smtp_sasl_auth_soft_bounce): a rotated password
    # must not bounce the whole queue; the server's 535 stays in the reply.
    assert status == 75 and rcpt["code"] == 454 and "535" in rcpt["reply"]


def test_smtputf8_and_parameters(aio: Aio) -> None:
    status, report = send(
        aio, "--auth-user", "user", "--to", "jösé@aio.test", "--notify", "failure",
        content="Subject: ünï\n\ncafé\n".encode(),
    )  # fmt: skip
    assert status == 0, report
    envelope = aio.recorder.envelopes[-1]
    assert envelope.rcpt_tos == ["jösé@aio.test"]
    assert "SMTPUTF8" in envelope.mail_options
    assert "BODY=8BITMIME" in envelope.mail_options
    assert any(o.startswith("SIZE=") for o in envelope.mail_options)
    # aiosmtpd does not offer DSN: NOTIFY is dropped, not sent.
    assert envelope.rcpt_options == []


def test_policy_none_against_a_server_requiring_starttls(aio: Aio) -> None:
    status, report = send(aio, "--tls", "none", "--to", "ok@aio.test")
    [rcpt] = report["recipients"]
    # The server insists on STARTTLS (530, permanent) and the policy forbids TLS.
    assert status == 69 and rcpt["status"] == "failed" and rcpt["code"] == 530
