"""``mxsend demo``: one message, five outcomes, in an embedded local world on loopback.

- alpha.test: its first MX (127.0.0.2) is down, so mail goes to the second (127.0.0.3);
- beta.test: delivered over STARTTLS, verified against the world's throwaway CA;
- gamma.test: one recipient refused with 550, one deferred with 451;
- void.test: publishes a null MX (RFC 7505), so it fails at once, with no connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTCP

from mxsend._exits import Exit
from mxsend._world import LocalWorld, MailHost
from mxsend.protocol import Envelope, MailOptions, Message, scan_body
from mxsend.twisted import (
    Deliverer,
    DeliveryOptions,
    DNSRouter,
    Limits,
    MessageReport,
    TLSOptions,
)

__all__ = ["RECIPIENTS", "build_world", "run_demo"]

RECIPIENTS = [
    "ann@alpha.test",
    "bob@beta.test",
    "nobody@gamma.test",
    "busy@gamma.test",
    "anyone@void.test",
]
CONTENT = b"""From: demo@mxsend.test
To: five recipients in four domains
Subject: mxsend demo

.This line starts with a dot; the encoder stuffs it.
"""


def build_world(reactor: Any) -> LocalWorld:
    return LocalWorld(
        reactor,
        "test",
        mx={
            "alpha.test": [(10, "mx1.alpha.test"), (20, "mx2.alpha.test")],
            "beta.test": [(10, "mx.beta.test")],
            "gamma.test": [(10, "mx.gamma.test")],
            "void.test": [(0, ".")],
        },
        a={
            "mx1.alpha.test": "127.0.0.2",
            "mx2.alpha.test": "127.0.0.3",
            "mx.beta.test": "127.0.0.4",
            "mx.gamma.test": "127.0.0.5",
        },
        hosts=[
            MailHost("mx2.alpha.test", "127.0.0.3"),
            MailHost("mx.beta.test", "127.0.0.4", starttls=True),
            MailHost(
                "mx.gamma.test",
                "127.0.0.5",
                replies={
                    "nobody@gamma.test": "550 5.1.1 no such user here",
                    "busy@gamma.test": "451 4.2.1 mailbox busy, try again later",
                },
            ),
        ],
    )


async def run_demo(
    reactor: IReactorTCP, show: Callable[[list[MessageReport], LocalWorld], Exit]
) -> Exit:
    world = build_world(reactor)
    world.start()
    try:
        router = DNSRouter.asking(world.dns, reactor)
        options = DeliveryOptions(
            "client.mxsend.test",
            mx_port=world.mx_port,
            tls=TLSOptions(cafile=world.cafile),
            limits=Limits(parallel=4),
        )
        envelope = Envelope.build(
            "demo@mxsend.test", RECIPIENTS, MailOptions(size=scan_body(CONTENT).size)
        )
        reports = await Deliverer(reactor, router, options).deliver([Message(envelope, CONTENT)])
        return show(reports, world)
    finally:
        await world.stop()
