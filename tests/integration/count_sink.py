"""An SMTP sink on 127.0.0.1 that writes one line per message it accepts: the time, then
the value of the message's X-Seq header. For the queue's crash test.

    python -m tests.integration.count_sink PORT LOGFILE [DELAY]

DELAY seconds pass between taking a message and answering 250, so that a test can kill a
client while transactions are in flight.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any

from aiosmtpd.controller import Controller

_SEQ = re.compile(rb"^X-Seq: *(\d+)", re.M)


class _Counter:
    def __init__(self, path: str, delay: float) -> None:
        self._log = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self._delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = _SEQ.search(envelope.content)
        seq = found.group(1).decode() if found else "?"
        self._log.write(f"{time.time():.6f} {seq}\n")
        await asyncio.sleep(self._delay)
        return "250 2.0.0 counted"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    controller = Controller(_Counter(path, delay), hostname="127.0.0.1", port=port)
    controller.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        asyncio.run(asyncio.sleep(3600))  # stopped by SIGTERM from the test, by PID
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
