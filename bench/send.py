"""Throughput of mxsend beside aiosmtplib, smtplib and smtp-source into smtp-sink on loopback.

All in one run, each client in its own process, one Postfix smtp-sink for all.

    python bench/send.py [--runs 5] [--messages N] [--scenario NAME]

Every Python client builds its messages inside the timed phase, one at a time, each with its
own ~2 KB content (a Message-ID of its own) as a user would; mxsend also builds each envelope
with Envelope.build. Scenarios: 1 recipient per message over 10 connections (beside aiosmtplib
and `smtp-source -d -s 10`), 10 and 100 recipients per message over 10 connections, and one
connection beside smtplib reusing one SMTP object. The 1-recipient scenario also runs
"twisted-floor", a bare Twisted protocol that pipelines and writes as mxsend does and reads
only the reply codes it counts deliveries by: not a client to compare with, but what Twisted,
the sockets and building messages cost on this machine, so that mxsend's own share above it
can be read off. Each Python client's timed phase begins
after gc.collect(), as timeit and pyperf settle start-up garbage: otherwise the full collection
that imports leave pending lands in whichever client's first 2,000 messages (about 25 ms in
mxsend's, a tenth of its run). Clients alternate within each run (the
order rotates from run to run); the figures are medians per client per scenario. Prints
msgs/s, client CPU milliseconds per message and the ratio to each scenario's anchor, then the
targets beside the measured ratios (a miss is reported, not an exit status).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mxsend.protocol import Message

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SENDER = "bench@client.test"
SIZE = 2048  #: bytes per message, about (smtp-source's -l)
LINE = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
PYTHON_CLIENTS = ("mxsend", "aiosmtplib", "smtplib", "twisted-floor")


@dataclass(frozen=True)
class Scenario:
    name: str  #: for --scenario
    recipients: int  #: per message
    connections: int
    messages: int  #: per run, unless --messages
    clients: tuple[str, ...]
    anchor: str  #: the client the ratios are to


SCENARIOS = (
    Scenario(
        "1rcpt", 1, 10, 2000, ("mxsend", "aiosmtplib", "smtp-source", "twisted-floor"), "aiosmtplib"
    ),
    Scenario("10rcpt", 10, 10, 1000, ("mxsend", "aiosmtplib", "smtp-source"), "aiosmtplib"),
    Scenario("100rcpt", 100, 10, 200, ("mxsend", "aiosmtplib", "smtp-source"), "aiosmtplib"),
    Scenario("1conn", 1, 1, 1000, ("mxsend", "smtplib", "smtp-source"), "smtplib"),
)


@dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    versus: str | None  #: msgs/s of mxsend over this client's; None: mxsend's CPU per message
    bound: float  #: a ratio at least this, or a CPU time at most this (ms per message)


TARGETS = (
    Target("mxsend CPU per message, 1 rcpt, 10 conns", "1rcpt", None, 0.06),
    Target("msgs/s vs aiosmtplib, 1 rcpt, 10 conns", "1rcpt", "aiosmtplib", 4.0),
    Target("msgs/s vs smtp-source -d -s 10, 1 rcpt", "1rcpt", "smtp-source", 0.75),
    Target("msgs/s vs aiosmtplib, 10 rcpts per message", "10rcpt", "aiosmtplib", 5.0),
    Target("msgs/s vs aiosmtplib, 100 rcpts per message", "100rcpt", "aiosmtplib", 5.0),
    Target("msgs/s vs smtplib, one connection", "1conn", "smtplib", 1.6),
)


def recipients(count: int) -> list[str]:
    if count == 1:
        return ["sink@sink.test"]
    return [f"rcpt{i}@sink.test" for i in range(count)]


def content(number: int, to: str, text: bytes) -> bytes:
    """Message ``number``'s bytes: its own headers (a Message-ID of its own) and ``text``."""
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: benchmark {number}\r\n"
        f"Message-ID: <{number}.bench@client.test>\r\n\r\n"
    ).encode() + text


def filler() -> bytes:
    """The body text, sized so that a message is about SIZE bytes; made once per process."""
    head = len(content(0, "sink@sink.test", b""))
    text = LINE * (SIZE // len(LINE) + 1)
    return text[: SIZE - head - 2] + b"\r\n"


def messages(count: int, to: list[str]) -> Iterator[Message]:
    """mxsend's messages, each built as it is asked for: fresh content and Envelope.build."""
    from mxsend.protocol import Envelope, MailOptions, Message

    text = filler()
    for number in range(count):
        data = content(number, to[0], text)
        envelope = Envelope.build(SENDER, to, MailOptions(size=len(data)))
        yield Message(envelope, data)


def settle() -> None:
    """Before a timed phase: collect what start-up left behind (imports defer a full
    collection), as timeit and pyperf do, so that no client's first messages pay for it."""
    gc.collect()


def child_mxsend(port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from mxsend.protocol import Status
    from mxsend.routing import TLSPolicy
    from mxsend.testing import FakeResolver
    from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Limits, Smarthost, TLSOptions

    to = recipients(rcpts)
    options = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        tls=TLSOptions(TLSPolicy.NONE),
        limits=Limits(connections=connections),
    )
    deliverer = Deliverer(reactor, DNSRouter(FakeResolver(), reactor), options)
    result: dict[str, Any] = {}

    async def run() -> None:
        try:
            settle()
            wall, cpu = time.perf_counter(), time.process_time()
            # The one delivery call: the messages are built here, inside the timed phase.
            reports = await deliverer.deliver(list(messages(count, to)))
            result["wall"] = time.perf_counter() - wall
            result["cpu"] = time.process_time() - cpu
            result["delivered"] = sum(
                1 for m in reports for r in m.recipients if r.status is Status.DELIVERED
            )
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))
    reactor.run()
    if "delivered" not in result:
        sys.exit("mxsend: the delivery failed (see above)")
    return result


def child_aiosmtplib(port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    import asyncio

    import aiosmtplib

    to = recipients(rcpts)
    text = filler()

    async def worker(numbers: Iterator[int]) -> int:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, local_hostname="client.test", start_tls=False
        )
        await smtp.connect()
        done = 0
        for number in numbers:  # shared by the workers: each takes the next message when free
            refused, _ = await smtp.sendmail(SENDER, to, content(number, to[0], text))
            done += len(to) - len(refused)
        await smtp.quit()
        return done

    async def run() -> dict[str, Any]:
        settle()
        wall, cpu = time.perf_counter(), time.process_time()
        numbers = iter(range(count))
        delivered = sum(await asyncio.gather(*(worker(numbers) for _ in range(connections))))
        return {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "delivered": delivered,
        }

    return asyncio.run(run())


def child_smtplib(port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    import smtplib

    if connections != 1:
        sys.exit("smtplib: one connection only")
    to = recipients(rcpts)
    text = filler()
    settle()
    wall, cpu = time.perf_counter(), time.process_time()
    delivered = 0
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as smtp:
        for number in range(count):  # one SMTP object, reused for every message
            refused = smtp.sendmail(SENDER, to, content(number, to[0], text))
            delivered += len(to) - len(refused)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "delivered": delivered,
    }


def child_floor(port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    """The floor under any client on Twisted's reactor: one bare Protocol per connection that
    pipelines and writes as mxsend does (MAIL, RCPT and DATA in one write; each body, its final
    dot and the next envelope in the next; TCP_NODELAY and a direct send(2) by mxsend's own
    write_now) and reads only the reply codes it needs to count deliveries: no line-ending,
    dot-line or long-line scan beyond one replace, no reply validation or size bounds, no
    timeouts, no per-recipient results. Not a usable client: what Twisted, the sockets and
    building each message cost here, measured in the same run, so that mxsend's own share
    above it can be read off."""
    from collections import deque

    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol, connectionDone
    from twisted.python.failure import Failure

    from mxsend.twisted._protocol import write_now

    to = recipients(rcpts)
    text = filler()
    rcpt_lines = b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in to) + b"DATA\r\n"
    numbers = iter(range(count))
    state: dict[str, Any] = {"delivered": 0, "open": connections, "error": None}

    class Bare(Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.expect: deque[str] = deque(["greeting"])
            self.body = b""
            self.accepted = 0

        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

        def next_message(self, out: list[bytes]) -> None:
            number = next(numbers, None)
            if number is None:
                out.append(b"QUIT\r\n")
                self.expect.append("quit")
                return
            data = content(number, to[0], text)
            self.body = data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
            self.accepted = 0
            out.append(b"MAIL FROM:<%s>\r\n" % SENDER.encode() + rcpt_lines)  # no SIZE offered
            self.expect.extend(["mail", *["rcpt"] * len(to), "data"])

        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            lines = (self.buffer + data).split(b"\r\n")
            self.buffer = lines.pop()
            out: list[bytes] = []
            for line in lines:
                if self.expect[0] == "ehlo" and b"CHUNKING" in line:
                    state["error"] = "the sink offers CHUNKING: mxsend would use BDAT"
                if line[3:4] == b"-":
                    continue
                what, positive = self.expect.popleft(), line[:1] == b"2"
                if what == "greeting":
                    out.append(b"EHLO client.test\r\n")
                    self.expect.append("ehlo")
                elif what == "ehlo":
                    self.next_message(out)
                elif what == "rcpt":
                    self.accepted += positive
                elif what == "data" and line[:3] == b"354":
                    out.append(self.body)
                    self.expect.append(f"dot{self.accepted}")
                    self.next_message(out)
                elif what == "data":
                    state["error"] = f"DATA refused: {line!r}"
                    self.transport.abortConnection()  # type: ignore[attr-defined]
                    return
                elif what.startswith("dot"):
                    state["delivered"] += int(what[3:]) if positive else 0
                elif what == "quit":
                    self.transport.loseConnection()
            if out:
                write_now(self.transport, b"".join(out))

        def connectionLost(self, reason: Failure = connectionDone) -> None:
            closed()

    result: dict[str, Any] = {}

    def closed(failure: Failure | None = None) -> None:
        if failure is not None:
            state["error"] = f"no connection: {failure.getErrorMessage()}"
        state["open"] -= 1
        if not state["open"]:
            reactor.stop()

    def start() -> None:
        settle()
        result["wall"], result["cpu"] = time.perf_counter(), time.process_time()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        for _ in range(connections):
            connectProtocol(endpoint, Bare()).addErrback(closed)  # type: ignore[no-untyped-call]

    reactor.callWhenRunning(start)
    reactor.callLater(300, reactor.stop)  # bounded, whatever the sink does
    reactor.run()
    if state["error"]:
        sys.exit(f"twisted-floor: {state['error']}")
    return {
        "wall": time.perf_counter() - result["wall"],
        "cpu": time.process_time() - result["cpu"],
        "delivered": state["delivered"],
    }


CHILDREN = {
    "mxsend": child_mxsend,
    "aiosmtplib": child_aiosmtplib,
    "smtplib": child_smtplib,
    "twisted-floor": child_floor,
}


def run_smtp_source(port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    # smtp-source exits non-zero on any refused command (a recipient too), so a clean exit
    # means every recipient of every message was accepted.
    done = subprocess.run(
        [SOURCE, "-d", "-s", str(connections), "-m", str(count), "-r", str(rcpts),
         "-l", str(SIZE), "-M", "client.test", "-f", SENDER, "-t", recipients(1)[0],
         f"127.0.0.1:{port}"],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"smtp-source failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "delivered": count * rcpts}


def run_child(name: str, port: int, count: int, rcpts: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, "--port", str(port),
         "--messages", str(count), "--recipients", str(rcpts),
         "--connections", str(connections)],
        check=False, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"{name} child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout))


def run_client(name: str, port: int, scenario: Scenario, count: int) -> dict[str, Any]:
    args = (port, count, scenario.recipients, scenario.connections)
    if name == "smtp-source":
        return run_smtp_source(*args)
    return run_child(name, *args)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, sink: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sink.poll() is not None:
            sys.exit(f"smtp-sink exited ({sink.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    sys.exit("smtp-sink did not listen within 10 s")


def measure(
    scenarios: list[Scenario], runs: int, override: int | None
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every client of every scenario once per run, alternating; the sink serves them all."""
    port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", f"inet:127.0.0.1:{port}", "1000"])
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        wait_listening(port, sink)
        for run in range(runs):
            for scenario in scenarios:
                count = override or scenario.messages
                shift = run % len(scenario.clients)  # rotate, so no client is always first
                for name in scenario.clients[shift:] + scenario.clients[:shift]:
                    outcome = run_client(name, port, scenario, count)
                    expected = count * scenario.recipients
                    if outcome["delivered"] != expected:
                        sys.exit(
                            f"{scenario.name}: {name} delivered {outcome['delivered']} of "
                            f"{expected} recipients"
                        )
                    outcome["messages"] = count
                    results.setdefault((scenario.name, name), []).append(outcome)
    finally:
        os.kill(sink.pid, signal.SIGTERM)
        sink.wait(timeout=30)
    return results


def report(
    scenarios: list[Scenario], runs: int, results: dict[tuple[str, str], list[dict[str, Any]]]
) -> None:
    rate: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}
    spread: dict[tuple[str, str], float] = {}
    for key, outcomes in results.items():
        rates = [o["messages"] / o["wall"] for o in outcomes]
        rate[key] = statistics.median(rates)
        cpu[key] = statistics.median(o["cpu"] / o["messages"] * 1000 for o in outcomes)
        spread[key] = (max(rates) - min(rates)) / rate[key] * 100
    print(
        f"~{SIZE} B messages into smtp-sink on loopback, median of {runs} alternating "
        f"run{'s' * (runs != 1)}.\nPython clients build each message inside the timed phase "
        "(fresh content; mxsend: Envelope.build + Message), after gc.collect() for each.\n"
        "CPU: the client process's, timed phase only; spread: (max - min) / median of msgs/s."
    )
    header = ("scenario", "client", "msgs", "msgs/s", "rcpts/s", "CPU ms/msg", "spread", "ratio")
    print("\n{:<24} {:<13} {:>5} {:>8} {:>9} {:>10} {:>7}  {}".format(*header))
    for scenario in scenarios:
        label = (
            f"{scenario.recipients} rcpt{'s' * (scenario.recipients != 1)}, "
            f"{scenario.connections} conn{'s' * (scenario.connections != 1)}"
        )
        anchor = rate[scenario.name, scenario.anchor]
        for name in scenario.clients:
            key = scenario.name, name
            count = results[key][0]["messages"]
            print(
                f"{label:<24} {name:<13} {count:>5} {rate[key]:>8.0f} "
                f"{rate[key] * scenario.recipients:>9.0f} {cpu[key]:>10.3f} "
                f"{spread[key]:>6.0f}%  {rate[key] / anchor:.2f}x {scenario.anchor}"
            )
            label = ""
    print("\ntargets")
    ran = {scenario.name for scenario in scenarios}
    for target in TARGETS:
        if target.scenario not in ran:
            continue
        mxsend = (target.scenario, "mxsend")
        if target.versus is None:
            goal, value = f"<= {target.bound:.2f} ms", cpu[mxsend]
            measured, holds = f"{value:.3f} ms", value <= target.bound
        else:
            goal, value = (
                f">= {target.bound:.2f}x",
                rate[mxsend] / rate[target.scenario, target.versus],
            )
            measured, holds = f"{value:.2f}x", value >= target.bound
        print(f"  {target.text:<46} {goal:>10}  {measured:>9}  {'holds' if holds else 'MISSED'}")
    floor = cpu.get(("1rcpt", "twisted-floor"))
    if floor is not None:
        ours = cpu["1rcpt", "mxsend"]
        bound = next(t.bound for t in TARGETS if t.scenario == "1rcpt" and t.versus is None)
        print(
            f"\nfloor (1 rcpt): a bare Twisted protocol (no checks) spends {floor:.3f} ms "
            f"per message here;\n  mxsend {ours:.3f} ms ({ours / floor:.2f}x it). "
            f"The {bound:.2f} ms target leaves {bound - floor:.3f} ms above it for all mxsend does."
        )


def main() -> None:
    # This directory holds bench/queue.py, which would shadow the standard library's queue
    # (Twisted imports it): children import nothing from here.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, help="messages per run in every scenario (default: each its own)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS], action="append")
    parser.add_argument("--child", choices=PYTHON_CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--recipients", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = CHILDREN[args.child]
        print(json.dumps(child(args.port, args.messages, args.recipients, args.connections)))
        return
    for tool in (SINK, SOURCE):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: install Debian's postfix package (./dev bench does)")
    if args.runs < 1 or (args.messages is not None and args.messages < 1):
        parser.error("--runs and --messages must be positive")
    chosen = args.scenario or [s.name for s in SCENARIOS]
    scenarios = [s for s in SCENARIOS if s.name in chosen]
    report(scenarios, args.runs, measure(scenarios, args.runs, args.messages))


if __name__ == "__main__":
    main()
