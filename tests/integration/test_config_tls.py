"""The config file's and the command line's TLS policies against servers on loopback, through
the very options and routes ``mxsend send`` builds: a relay with AUTH is verified whatever
the global policy says (SECURITY.md 3 and 4: smarthost submission with AUTH defaults to
verify), ``--tls`` given on the command line is a floor no route goes under, and a relay
refusing AUTH defers the mail instead of bouncing it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from mxsend._testca import TestCA
from mxsend.cli import send
from mxsend.protocol import Status
from mxsend.twisted import Deliverer, DNSRouter, RecipientReport
from tests.conftest import temp_dir
from tests.integration.hostile import HostileProtocol, HostileServer, ordinary, serving

#: The servers' certificates: for 127.0.0.1, from a CA mxsend is never told to trust.
UNTRUSTED = TestCA("untrusted test CA")


def starttls_and_auth(line: bytes, proto: HostileProtocol) -> None:
    """STARTTLS (with an untrusted certificate), then AUTH PLAIN taking any password."""
    verb = line.upper()
    if proto.in_data:
        ordinary(line, proto)
    elif verb.startswith(b"EHLO"):
        starttls = b"" if proto.tls else b"250-STARTTLS\r\n"
        proto.write(b"250-evil.test\r\n" + starttls + b"250 AUTH PLAIN LOGIN\r\n")
    elif verb == b"STARTTLS":
        proto.write(b"220 go\r\n")
        proto.start_tls()
    elif verb.startswith(b"AUTH"):
        proto.write(b"235 2.7.0 thanks for the password\r\n")
    else:
        ordinary(line, proto)


def refuses_auth(line: bytes, proto: HostileProtocol) -> None:
    """No STARTTLS; AUTH offered and refused for good (a rotated password)."""
    if line.upper().startswith(b"EHLO"):
        proto.write(b"250-evil.test\r\n250 AUTH PLAIN LOGIN\r\n")
    elif line.upper().startswith(b"AUTH"):
        proto.write(b"535 5.7.8 Error: authentication failed\r\n")
    else:
        ordinary(line, proto)


class ConfiguredTLS(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.folder = temp_dir(self)
        self.password = self.folder / "relay.password"
        self.password.write_text("hunter2-secret\n")
        self.password.chmod(0o600)
        self.message = self.folder / "m.eml"
        self.message.write_bytes(b"From: a@client.test\nSubject: t\n\nhi\n")
        saved = os.environ.get("MXSEND_PASSWORD")
        os.environ["MXSEND_PASSWORD"] = "hunter2-secret"
        self.addCleanup(_restore, "MXSEND_PASSWORD", saved)

    def server(self, respond: Any = starttls_and_auth) -> HostileServer:
        return serving(self, HostileServer(respond, certificate=UNTRUSTED.issue("127.0.0.1")))

    def config(self, text: str) -> Path:
        path = self.folder / "mxsend.toml"
        path.write_text('hostname = "client.test"\n' + text)
        path.chmod(0o600)
        return path

    def relay_route(self, port: int, extra: str = "") -> str:
        return (
            f'[routes."relay.test"]\nvia = "[127.0.0.1]:{port}"\n{extra}'
            f'auth = {{ username = "me", password_file = "{self.password}" }}\n'
        )

    async def send(self, config: Path, *argv: str, to: str = "bob@relay.test") -> RecipientReport:
        """What ``mxsend send --config CONFIG ARGV`` would deliver, delivered here."""
        args = send.build_parser().parse_args(
            ["--config", str(config), "--from", "a@client.test", "--to", to, *argv,
             str(self.message)]
        )  # fmt: skip
        request = send.build_request(args)
        router = DNSRouter.asking(("127.0.0.1", 9), reactor)  # relays by address: no DNS
        deliverer = Deliverer(reactor, router, request.options, routes=request.routes)
        [report] = await deliverer.deliver(request.messages)
        [recipient] = report.recipients
        return recipient

    def assert_no_auth(self, server: HostileServer, report: RecipientReport) -> None:
        assert report.status is Status.DEFERRED, report
        assert "verif" in report.reply.text or "certificate" in report.reply.text, report
        assert not any(line.upper().startswith(b"AUTH") for line in server.received)
        assert not any(b"MAIL" in line.upper() for line in server.received)
        assert server.messages == 0

    # -- finding 1: the global policy never lowers a relay's AUTH below verify ----------------

    async def _global_may(self) -> None:
        server = self.server()
        # As examples/mxsend.toml shipped: tls = "may" for "routes that set none".
        path = self.config('tls = "may"\n' + self.relay_route(server.port))
        self.assert_no_auth(server, await self.send(path))
        # --tls on the command line is a floor: it never lowers the relay's verify either.
        for weaker in ("none", "may", "encrypt"):
            self.assert_no_auth(server, await self.send(path, "--tls", weaker))

    def test_a_global_may_does_not_unverify_a_relay_with_auth(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._global_may())

    async def _smarthost(self) -> None:
        server = self.server()
        path = self.config('tls = "may"\n')
        smarthost = ["--smarthost", f"127.0.0.1:{server.port}", "--auth-user", "me"]
        self.assert_no_auth(server, await self.send(path, *smarthost))
        # The route's own tls says so explicitly: then AUTH over unverified TLS is its call.
        path = self.config(self.relay_route(server.port, 'tls = "encrypt"\n'))
        report = await self.send(path)
        assert report.status is Status.DELIVERED, report
        assert b"AUTH PLAIN" in b"\n".join(server.received) and server.messages == 1

    def test_the_smarthost_with_auth_keeps_verify_whatever_the_file_says(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._smarthost())

    # -- finding 2: --tls given on the command line is a floor --------------------------------

    async def _floor(self) -> None:
        server = serving(self, HostileServer(ordinary))  # no STARTTLS at all
        path = self.config(
            'tls = "verify"\n'  # the file's default: not for a route that sets its own
            f'[routes."plain.test"]\nvia = "[127.0.0.1]:{server.port}"\ntls = "none"\n'
        )
        report = await self.send(path, to="carol@plain.test")
        assert report.status is Status.DELIVERED, report
        assert server.messages == 1
        report = await self.send(path, "--tls", "verify", to="carol@plain.test")
        assert report.status is Status.DEFERRED, report
        assert (report.reply.code, str(report.reply.enhanced)) == (451, "4.7.10"), report
        assert server.messages == 1  # nothing more went in cleartext
        report = await self.send(path, "--tls", "may", to="carol@plain.test")
        assert report.status is Status.DELIVERED, report  # may: tried, none offered

    def test_tls_on_the_command_line_is_a_floor(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._floor())

    # -- finding 10: a refused AUTH defers ----------------------------------------------------

    async def _refused(self) -> None:
        server = serving(self, HostileServer(refuses_auth))
        path = self.config(
            "allow_cleartext_auth = true\n" + self.relay_route(server.port, 'tls = "none"\n')
        )
        report = await self.send(path)
        assert report.status is Status.DEFERRED, report
        assert report.reply.code == 454 and str(report.reply.enhanced) == "4.7.8", report
        assert "535 5.7.8 Error: authentication failed" in report.reply.text, report
        assert server.messages == 0

    def test_a_refused_auth_defers(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._refused())


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
