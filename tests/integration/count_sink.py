"""An SMTP sink on 127.0.0.1 that writes one line per message it accepts: the time, then
the value of the message's X-Seq header. For the queue's crash test.

    python -m tests.integration.count_sink PORT LOGFILE [DELAY]

DELAY seconds pass between taking a message and answering 250, so that a test can kill a
client while transactions are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
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


@contextlib.contextmanager
def counting_sink(log: Path, delay: float = 0.0) -> Iterator[int]:
    """This sink in a child process on 127.0.0.1, writing to ``log``; yields its port and
    stops it by PID."""
    from tests.conftest import free_port

    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.count_sink", str(port), str(log), str(delay)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent.parent,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield port
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


def counts(log: Path) -> dict[str, int]:
    """How many times each X-Seq arrived."""
    found: dict[str, int] = {}
    for line in log.read_text().splitlines():
        seq = line.split()[1]
        found[seq] = found.get(seq, 0) + 1
    return found


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
