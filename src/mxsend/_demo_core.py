"""The in-memory demo: the protocol core against scripted servers, no network."""

from __future__ import annotations

from collections.abc import Callable

from mxsend._exits import Exit
from mxsend._report import exit_status, format_result
from mxsend.protocol import (
    ClientConfig,
    ClientConnection,
    Envelope,
    MailOptions,
    Message,
    RecipientResult,
    SessionDriver,
    scan_body,
)
from mxsend.testing import FakeServer, converse

CONTENT = (
    b"From: demo@mxsend.test\nTo: several\nSubject: mxsend demo\n\n.A line starting with a dot.\n"
)


def run(out: Callable[[str], None]) -> Exit:
    servers = {
        "mx.alpha.test": FakeServer(hostname="mx.alpha.test"),
        "mx.beta.test": FakeServer(
            hostname="mx.beta.test",
            replies={
                "nobody@beta.test": "550 5.1.1 no such user",
                "busy@beta.test": "451 4.2.1 mailbox busy, try later",
            },
        ),
    }
    groups = {
        "mx.alpha.test": ["ann@alpha.test"],
        "mx.beta.test": ["bob@beta.test", "nobody@beta.test", "busy@beta.test"],
    }
    info = scan_body(CONTENT)
    results: list[RecipientResult] = []
    for host, recipients in groups.items():
        out(f"-- {host}")
        conn = ClientConnection(
            ClientConfig("client.mxsend.test"), trace=lambda d, line: out(f"   {d}: {line}")
        )
        envelope = Envelope.build("demo@mxsend.test", recipients, MailOptions(size=info.size))
        driver = SessionDriver(conn, [Message(envelope, CONTENT)])
        converse(conn, servers[host], driver.handle)
        results.extend(r for t in driver.results for r in t.recipients)
    out("")
    for result in results:
        out(format_result(result))
    return exit_status(results)
