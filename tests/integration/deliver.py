"""Deliver one message through the Twisted shell to a server on 127.0.0.1 (trial helpers)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

from mxsend.protocol import Envelope, Message, Plain
from mxsend.routing import TLSPolicy
from mxsend.testing import FakeResolver
from mxsend.twisted import (
    Deliverer,
    DeliveryOptions,
    DNSRouter,
    RecipientReport,
    Smarthost,
    Timeouts,
    TLSOptions,
)


async def deliver_to(
    port: int,
    *,
    tls: TLSPolicy = TLSPolicy.NONE,
    cafile: str | None = None,
    auth: bool = False,
    timeouts: Timeouts | None = None,
    recipients: tuple[str, ...] = ("bob@example.net",),
    implicit_tls: bool = False,
    **options: Any,
) -> list[RecipientReport]:
    mechanism = Plain("user", "secret") if auth else None
    opts = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port, mechanism, tls_on_connect=implicit_tls),
        tls=TLSOptions(tls, cafile),
        timeouts=timeouts or Timeouts(),
        **options,
    )
    router = DNSRouter(FakeResolver(), reactor)
    message = Message(Envelope.build("alice@example.com", recipients), b"Subject: t\n\nhi\n")
    [report] = await Deliverer(reactor, router, opts).deliver([message])
    return list(report.recipients)
