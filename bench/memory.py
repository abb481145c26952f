"""Peak memory of one delivery call as the batch grows: 2,000 against 20,000 messages, each with
its own 2 KB content, into Postfix's smtp-sink on loopback. ``Deliverer.stream`` reads them
from a generator and passes each report on; ``Deliverer.deliver`` is given the whole list and
returns every report. Each run is its own process; the figure is its peak RSS.

    python bench/memory.py [--small 2000] [--large 20000]

Target: with stream(), the large batch stays within 40 MB of the small one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# bench/queue.py would shadow the standard library's queue, which Twisted imports.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

SINK = "/usr/sbin/smtp-sink"
LIMIT_MB = 40


def child(mode: str, port: int, count: int) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from mxsend.model import MessageReport
    from mxsend.protocol import Envelope, MailOptions, Message, Status
    from mxsend.routing import TLSPolicy
    from mxsend.testing import FakeResolver
    from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Limits, Smarthost, TLSOptions

    line = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"

    def messages() -> Iterator[Message]:
        for n in range(count):
            content = b"Message-ID: <%d.memory@client.test>\r\n\r\n" % n + line * 29
            envelope = Envelope.build("a@client.test", ["b@sink.test"], MailOptions(len(content)))
            yield Message(envelope, content)

    options = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        tls=TLSOptions(TLSPolicy.NONE),
        limits=Limits(connections=10),
    )
    deliverer = Deliverer(reactor, DNSRouter(FakeResolver(), reactor), options)
    result: dict[str, Any] = {"delivered": 0}

    def count_report(_: int, report: MessageReport) -> None:
        result["delivered"] += sum(r.status is Status.DELIVERED for r in report.recipients)

    async def run() -> None:
        start = time.perf_counter()
        if mode == "stream":
            await deliverer.stream(messages(), count_report)
        else:
            for i, report in enumerate(await deliverer.deliver(list(messages()))):
                count_report(i, report)
        result["seconds"] = time.perf_counter() - start
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))
    reactor.run()
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--child", choices=["stream", "deliver"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.port, args.count)))
        return
    if not os.path.exists(SINK):
        sys.exit(f"{SINK} missing: install Debian's postfix package (./dev bench does)")
    port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", f"inet:127.0.0.1:{port}", "1000"])
    peaks: dict[tuple[str, int], float] = {}
    try:
        time.sleep(0.5)
        for mode in ("stream", "deliver"):
            for count in (args.small, args.large):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--port", str(port),
                     "--count", str(count)],
                    check=True, capture_output=True, text=True, timeout=900,
                )  # fmt: skip
                got = json.loads(done.stdout)
                if got["delivered"] != count:
                    sys.exit(f"{mode} delivered {got['delivered']} of {count}")
                peaks[(mode, count)] = got["rss_mb"]
                print(
                    f"{mode:<8} {count:>6} messages: peak RSS {got['rss_mb']:6.1f} MB, "
                    f"{count / got['seconds']:6.0f} msgs/s"
                )
    finally:
        os.kill(sink.pid, signal.SIGTERM)
        sink.wait(timeout=30)
    for mode in ("stream", "deliver"):
        growth = peaks[(mode, args.large)] - peaks[(mode, args.small)]
        verdict = "holds" if growth <= LIMIT_MB else "misses"
        target = f"target <= {LIMIT_MB} MB: {verdict}" if mode == "stream" else "no target"
        print(f"{mode:<8} growth from {args.small} to {args.large}: {growth:+.1f} MB ({target})")


if __name__ == "__main__":
    main()
