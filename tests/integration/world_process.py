"""Runs the demo's local world in this process until killed; prints its ports as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor

from mxsend._demo import build_world


def main() -> None:
    world = build_world(reactor)
    world.start()
    ca = world.ca.cert_pem.decode()
    info: dict[str, Any] = {"dns_port": world.dns_port, "mx_port": world.mx_port, "ca": ca}
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
