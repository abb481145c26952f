"""The "Building an SMTP Client from Scratch" tutorial's final program, written with mxsend.

Looks up the recipient domain's mail exchanger with a Deferred, connects, speaks ESMTP, hands
over one message, prints each recipient's result and stops the reactor.

    twistd -ny examples/tutorial.tac

Configured by environment variables:
    MXSEND_FROM      envelope sender            (default tutorial-sender@example.com)
    MXSEND_TO        recipient(s), comma-separated (required)
    MXSEND_DNS       DNS server HOST:PORT        (default: /etc/resolv.conf)
    MXSEND_MX_PORT   port of the MX hosts        (default 25)
    MXSEND_CAFILE    extra CA to trust (PEM)     (default: none)
    MXSEND_HELO      name for EHLO               (default localhost)
"""

import os

from twisted.application import service
from twisted.internet import defer, reactor

from mxsend.protocol import Envelope, Message
from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, TLSOptions, make_resolver

MESSAGE = b"""\
From: %(sender)s
To: %(to)s
Subject: How about a nice game of chess?

Mail is delivered directly to the recipient's mail exchanger, found with a Deferred.
"""


def configuration():
    dns = os.environ.get("MXSEND_DNS")
    server = None
    if dns:
        host, _, port = dns.rpartition(":")
        server = (host, int(port))
    return {
        "sender": os.environ.get("MXSEND_FROM", "tutorial-sender@example.com"),
        "to": [a.strip() for a in os.environ["MXSEND_TO"].split(",") if a.strip()],
        "dns": server,
        "mx_port": int(os.environ.get("MXSEND_MX_PORT", "25")),
        "cafile": os.environ.get("MXSEND_CAFILE") or None,
        "helo": os.environ.get("MXSEND_HELO", "localhost"),
    }


@defer.inlineCallbacks
def send_and_report(config):
    router = DNSRouter(make_resolver(config["dns"], reactor), reactor)
    options = DeliveryOptions(
        config["helo"], mx_port=config["mx_port"], tls=TLSOptions(cafile=config["cafile"])
    )
    content = MESSAGE % {b"sender": config["sender"].encode(), b"to": ", ".join(config["to"]).encode()}
    message = Message(Envelope.build(config["sender"], config["to"]), content)
    try:
        [report] = yield Deliverer(reactor, router, options).deliver([message])
        for result in report.recipients:
            print(f"{result.recipient}: {result.status.value} {result.reply}")
    finally:
        reactor.stop()


class TutorialService(service.Service):
    def startService(self):
        service.Service.startService(self)
        reactor.callWhenRunning(send_and_report, configuration())


application = service.Application("SMTP Client Tutorial")
TutorialService().setServiceParent(application)
