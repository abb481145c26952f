"""Throughput into Postfix's smtp-sink on loopback: mxsend against aiosmtplib and Postfix's
smtp-source, side by side in one run (each client in its own process, same sink).

    python bench/send.py [--messages 2000] [--connections 10] [--runs 3]

Prints messages per second, client CPU milliseconds per message and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SENDER, RECIPIENT = "bench@client.test", "sink@sink.test"


def body() -> bytes:
    head = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: benchmark\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
    text = head + line * (2048 // len(line) + 1)
    return text[:2046] + b"\r\n"


def child_mxsend(port: int, messages: int, connections: int) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from mxsend.protocol import Envelope, MailOptions, Message, Status
    from mxsend.routing import TLSPolicy
    from mxsend.testing import FakeResolver
    from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Limits, Smarthost, TLSOptions

    content = body()
    envelope = Envelope.build(SENDER, [RECIPIENT], MailOptions(size=len(content)))
    batch = [Message(envelope, content) for _ in range(messages)]
    options = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        tls=TLSOptions(TLSPolicy.NONE),
        limits=Limits(connections=connections),
    )
    deliverer = Deliverer(reactor, DNSRouter(FakeResolver(), reactor), options)
    result: dict[str, Any] = {}

    async def run() -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        reports = await deliverer.deliver(batch)
        result["wall"] = time.perf_counter() - wall
        result["cpu"] = time.process_time() - cpu
        result["delivered"] = sum(
            1 for m in reports for r in m.recipients if r.status is Status.DELIVERED
        )
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))
    reactor.run()
    return result


def child_aiosmtplib(port: int, messages: int, connections: int) -> dict[str, Any]:
    import aiosmtplib

    content = body()

    async def worker(count: int) -> int:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        done = 0
        for _ in range(count):
            errors, _ = await smtp.sendmail(SENDER, [RECIPIENT], content)
            done += not errors
        await smtp.quit()
        return done

    async def run() -> dict[str, Any]:
        shares = [
            messages // connections + (i < messages % connections) for i in range(connections)
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        delivered = sum(await asyncio.gather(*(worker(n) for n in shares)))
        return {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "delivered": delivered,
        }

    return asyncio.run(run())


def run_smtp_source(port: int, messages: int, connections: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(
        [SOURCE, "-d", "-s", str(connections), "-m", str(messages), "-l", "2048",
         "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
        check=True, stdout=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "delivered": messages}


def run_child(name: str, port: int, messages: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, "--port", str(port),
         "--messages", str(messages), "--connections", str(connections)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=["mxsend", "aiosmtplib"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.child:
        run = child_mxsend if args.child == "mxsend" else child_aiosmtplib
        print(json.dumps(run(args.port, args.messages, args.connections)))
        return
    for tool in (SINK, SOURCE):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: install Debian's postfix package (./dev bench does)")
    port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", f"inet:127.0.0.1:{port}", "1000"])
    try:
        time.sleep(0.5)
        clients: dict[str, Callable[[], dict[str, Any]]] = {
            "mxsend": lambda: run_child("mxsend", port, args.messages, args.connections),
            "aiosmtplib": lambda: run_child("aiosmtplib", port, args.messages, args.connections),
            "smtp-source": lambda: run_smtp_source(port, args.messages, args.connections),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
        for _ in range(args.runs):
            for name, client in clients.items():  # interleaved, so drift hits all alike
                outcome = client()
                if outcome["delivered"] != args.messages:
                    sys.exit(f"{name} delivered {outcome['delivered']} of {args.messages}")
                results[name].append(outcome)
    finally:
        os.kill(sink.pid, signal.SIGTERM)
        sink.wait(timeout=30)
    rate = {
        n: statistics.median(args.messages / r["wall"] for r in rs) for n, rs in results.items()
    }
    cpu = {
        n: statistics.median(r["cpu"] / args.messages * 1000 for r in rs)
        for n, rs in results.items()
    }
    print(
        f"{args.messages} messages of 2 KB over {args.connections} connections into smtp-sink "
        f"on loopback; median of {args.runs} runs"
    )
    header = ("client", "msgs/s", "CPU ms/msg", "vs aiosmtplib", "vs smtp-source")
    print("{:<12} {:>9} {:>11} {:>14} {:>15}".format(*header))
    for name in clients:
        print(
            f"{name:<12} {rate[name]:>9.0f} {cpu[name]:>11.3f} "
            f"{rate[name] / rate['aiosmtplib']:>13.2f}x {rate[name] / rate['smtp-source']:>14.2f}x"
        )


if __name__ == "__main__":
    main()
