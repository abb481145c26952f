"""A DNS authority serving TXT records on 127.0.0.1 (UDP and TCP), run until killed; for the
DKIM tests, whose verifier looks keys up in DNS.

Reads ``{"zone": "test", "txt": {"s1._domainkey.example.test": ["v=DKIM1; ...", ...]}}`` as
JSON on standard input (each name's strings form one TXT record), prints ``{"port": N}`` and
serves until SIGTERM, or for LIFETIME seconds at most, so it never outlives its test.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.names import dns, server

from mxsend._world import _Zone, free_port

#: Seconds after which the server stops by itself, whatever the test did.
LIFETIME = 120


def main() -> None:
    spec = json.load(sys.stdin)
    txt: Any = dns.Record_TXT  # twisted.names is untyped
    records = {
        name: [txt(*(s.encode("ascii") for s in strings), ttl=60)]
        for name, strings in spec["txt"].items()
    }
    names: Any = server.DNSServerFactory
    factory = names(authorities=[_Zone(spec["zone"], records)])
    datagram: Any = dns.DNSDatagramProtocol
    port = free_port()
    reactor.listenUDP(port, datagram(factory), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.callLater(LIFETIME, reactor.stop)
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
