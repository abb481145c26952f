"""One large message (50 MiB by default) over loopback: mxsend's streamed content against
Twisted's own streaming (twisted.mail.smtp, given an open file) and smtplib (given bytes).

    python bench/large.py [--mib 50] [--runs 3]

Two servers, both on 127.0.0.1 and both started (and stopped, by PID) here:

- Postfix's smtp-sink: DATA only. It does not advertise CHUNKING (Postfix 3.7) nor STARTTLS.
- a real Postfix (tests/postfix.py: STARTTLS with the test CA, CHUNKING), reconfigured to
  take messages of any size and hand them to the discard transport: BDAT, and every row over
  STARTTLS, are measured there, with Twisted's anchor measured against the same server.

Every client runs in a fresh process, so the peak RSS of each row is that process's alone
(os.wait4's rusage); the mxsend rows also run with a 2 KB message and the growth is shown.
Seconds are the median of --runs runs (row order alternates between runs) and, for the API
rows, cover the content scan (needed for SIZE and BODY) and the whole session; for the command
line, the whole process. MB is 10^6 octets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SINK = "/usr/sbin/smtp-sink"
SENDER, RECIPIENT = "bench@client.test", "sink@sink.test"
RSS_GROWTH_LIMIT = 8.0  # MB
RATIO_TARGET = 0.9

_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no what up out more said about into than them can only other time new some could "
    "these two may first then do any like my now over such our man me even most made after "
    "also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see "
    "message delivery server client stream buffer chunk octets transfer deadline envelope"
)
WORDS = _TEXT.split(" ")


# -- the message -------------------------------------------------------------------------------


def write_message(path: Path, octets: int, seed: int = 5321) -> int:
    """A plain-text message of about ``octets``: headers, then lines of about 76 characters
    with LF endings (what twisted.mail.smtp expects), a leading-dot line now and then."""
    rng = random.Random(seed)
    pool: list[bytes] = []
    for n in range(4096):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < 70:
            words.append(rng.choice(WORDS))
        line = " ".join(words)[:76]
        if n % 97 == 0:
            line = "." + line  # stuffed on the way out over DATA
        elif n % 331 == 0:
            line = "."
        pool.append(line.encode() + b"\n")
    head = (
        f"From: Bench <{SENDER}>\nTo: <{RECIPIENT}>\nSubject: large message\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\nMessage-ID: <large.{octets}@client.test>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    ).encode()
    average = sum(map(len, pool)) / len(pool)
    with path.open("wb") as out:
        out.write(head)
        written = len(head)
        while written < octets:
            block = b"".join(
                rng.choices(pool, k=max(1, min(8192, int((octets - written) / average))))
            )
            out.write(block)
            written += len(block)
    return path.stat().st_size


# -- clients (each runs in its own process: `large.py --child ROLE ...`) ----------------------


def child_twisted(port: int, path: str, mode: str, cafile: str | None) -> dict[str, Any]:
    """``sendmail()`` into smtp-sink; against Postfix (which offers STARTTLS) the factory
    ``sendmail()`` builds, without a TLS context (plain) or with one trusting the test CA."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.ssl import Certificate, optionsForClientTLS
    from twisted.mail.smtp import ESMTPSenderFactory, sendmail

    result: dict[str, Any] = {}
    file = open(path, "rb")  # noqa: SIM115 - the sender reads it, and it is closed below
    wall, cpu = time.perf_counter(), time.process_time()
    done: Deferred[Any]
    if mode == "sendmail":
        done = sendmail(  # type: ignore[no-untyped-call]
            "127.0.0.1", SENDER, [RECIPIENT], file, "client.test", port=port
        )
    else:
        context = None
        if mode == "tls":
            assert cafile is not None
            trust = Certificate.loadPEM(Path(cafile).read_bytes())
            context = optionsForClientTLS("127.0.0.1", trustRoot=trust)
        done = Deferred()
        factory = ESMTPSenderFactory(  # type: ignore[no-untyped-call]
            None, None, SENDER, [RECIPIENT], file, done, heloFallback=True,
            requireAuthentication=False, requireTransportSecurity=mode == "tls",
            contextFactory=context,
        )  # fmt: skip
        factory.domain = b"client.test"
        reactor.connectTCP("127.0.0.1", port, factory)

    def finished(outcome: Any) -> None:
        result["wall"] = time.perf_counter() - wall
        result["cpu"] = time.process_time() - cpu
        ok = isinstance(outcome, tuple) and outcome[0] == 1
        result["ok"] = ok
        if not ok:
            result["error"] = str(outcome)[:300]
        reactor.stop()

    done.addBoth(finished)
    reactor.run()
    file.close()
    return result


def child_smtplib(port: int, path: str) -> dict[str, Any]:
    import smtplib

    data = Path(path).read_bytes()
    wall, cpu = time.perf_counter(), time.process_time()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=300) as smtp:
        refused = smtp.sendmail(SENDER, [RECIPIENT], data)
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "ok": not refused,
    }


def child_mxsend(
    port: int, path: str, *, chunking: bool, tls: bool, cafile: str | None
) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from mxsend.protocol import Body, Content, Envelope, MailOptions, Message, Status
    from mxsend.routing import TLSPolicy
    from mxsend.testing import FakeResolver
    from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Smarthost, TLSOptions

    options = DeliveryOptions(
        "client.test",
        smarthost=Smarthost("127.0.0.1", port),
        tls=TLSOptions(TLSPolicy.VERIFY if tls else TLSPolicy.NONE, cafile),
        chunking=chunking,
    )
    deliverer = Deliverer(reactor, DNSRouter(FakeResolver(), reactor), options)
    result: dict[str, Any] = {}

    async def run() -> None:
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            content = Content.from_path(path)
            info = content.scan()
            result["scan"] = time.perf_counter() - wall
            body = Body.EIGHT_BIT_MIME if info.eight_bit else None
            envelope = Envelope.build(SENDER, [RECIPIENT], MailOptions(size=info.size, body=body))
            message = Message(envelope, content)  # type: ignore[arg-type, unused-ignore]
            [report] = await deliverer.deliver([message])
            result["wall"] = time.perf_counter() - wall
            result["cpu"] = time.process_time() - cpu
            [rcpt] = report.recipients
            result["ok"] = rcpt.status is Status.DELIVERED
            if not result["ok"]:
                result["error"] = f"{rcpt.status.value}: {rcpt.reply}"[:300]
        except Exception as exc:
            result.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))
    reactor.run()
    return result


def run_child_role(args: argparse.Namespace) -> dict[str, Any]:
    role: str = args.child
    if role.startswith("twisted-"):
        return child_twisted(args.port, args.file, role.removeprefix("twisted-"), args.cafile)
    if role == "smtplib":
        return child_smtplib(args.port, args.file)
    chunking = role in ("mxsend-bdat", "mxsend-bdat-tls")
    tls = role.endswith("-tls")
    return child_mxsend(args.port, args.file, chunking=chunking, tls=tls, cafile=args.cafile)


# -- running a client process and measuring it ------------------------------------------------


@dataclass
class Sample:
    wall: float  # seconds the transfer took (as the row defines it)
    process: float  # seconds the whole process took
    rss: float  # peak RSS, MB
    cpu: float  # client CPU seconds (the transfer; for the command line, the whole process)
    scan: float | None = None
    error: str | None = None


def measured(argv: list[str], *, in_process: bool, timeout: float = 300) -> Sample:
    """Run ``argv``; its peak RSS comes from wait4 on that one process."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, cwd=ROOT)
        watchdog = threading.Timer(timeout, lambda: _kill(child.pid))
        watchdog.start()
        try:
            assert child.stdout is not None
            output = child.stdout.read()
            child.stdout.close()
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        process = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    rss = usage.ru_maxrss * 1024 / 1e6  # KiB on Linux
    total_cpu = usage.ru_utime + usage.ru_stime
    try:
        data = json.loads(output)
    except ValueError:
        tail = stderr.splitlines()[-1] if stderr else output[-200:].decode(errors="replace")
        return Sample(process, process, rss, total_cpu, error=f"exit {child.returncode}: {tail}")
    error: str | None
    if in_process:
        error = None if data.get("ok") else str(data.get("error", "not delivered"))
        wall, cpu = float(data.get("wall", process)), float(data.get("cpu", total_cpu))
        return Sample(wall, process, rss, cpu, data.get("scan"), error)
    # mxsend send --json: the report's recipients.
    statuses = [r.get("status") for r in data.get("recipients", [])]
    error = None if statuses == ["delivered"] else f"exit {child.returncode}: {data}"[:300]
    return Sample(process, process, rss, total_cpu, error=error)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Server:
    name: str
    port: int
    cafile: str | None = None
    spool: Path | None = None  # Postfix's queue: wait for it to empty between rows

    def settle(self) -> None:
        """Let a queueing server finish with the last message (Postfix's cleanup, qmgr and
        discard would otherwise take CPU from the next row on a 2-core machine)."""
        if self.spool is not None:
            queues = [self.spool / q for q in ("maildrop", "incoming", "active", "deferred")]
            _wait_for(lambda: not any(files for q in queues for _, _, files in os.walk(q)),
                      "Postfix's queue to empty", 120)  # fmt: skip


@dataclass
class Row:
    label: str
    server: Server
    role: str  # a --child role, or "cli"
    anchor: str  # label of the Twisted row on the same server and channel
    tls: bool = False
    chunking: bool = False
    small: bool = False  # also measure with the 2 KB message
    samples: list[Sample] = field(default_factory=list)
    small_samples: list[Sample] = field(default_factory=list)

    def argv(self, path: Path) -> list[str]:
        if self.role == "cli":
            argv = [sys.executable, "-m", "mxsend", "send", str(path), "--json",
                    "--smarthost", f"127.0.0.1:{self.server.port}", "--helo", "client.test",
                    "--from", SENDER, "--to", RECIPIENT]  # fmt: skip
            if self.tls:
                assert self.server.cafile is not None
                argv += ["--tls", "verify", "--cafile", self.server.cafile]
            else:
                argv += ["--tls", "none"]
            return argv if self.chunking else [*argv, "--no-chunking"]
        argv = [sys.executable, __file__, "--child", self.role, "--port", str(self.server.port),
                "--file", str(path)]  # fmt: skip
        if self.server.cafile is not None:
            argv += ["--cafile", self.server.cafile]
        return argv

    def run(self, large: Path, small: Path) -> None:
        self.samples.append(measured(self.argv(large), in_process=self.role != "cli"))
        self.server.settle()
        if self.small:
            self.small_samples.append(measured(self.argv(small), in_process=self.role != "cli"))
            self.server.settle()


def rows_for(sink: Server, postfix: Server | None, sink_chunking: bool) -> list[Row]:
    anchor = "twisted sendmail(), file"
    rows = [
        Row(anchor, sink, "twisted-sendmail", anchor),
        Row("smtplib, bytes", sink, "smtplib", anchor),
        Row("mxsend API, DATA", sink, "mxsend-data", anchor, small=True),
        Row("mxsend send (CLI), DATA", sink, "cli", anchor, small=True),
    ]
    if sink_chunking:  # not so in Postfix 3.7's smtp-sink
        rows.insert(3, Row("mxsend API, BDAT", sink, "mxsend-bdat", anchor, chunking=True))
    if postfix is None:
        return rows
    plain, tls = "twisted factory, file", "twisted factory, file, TLS"
    return [
        *rows,
        Row(plain, postfix, "twisted-plain", plain),
        Row("mxsend API, DATA", postfix, "mxsend-data", plain, small=True),
        Row("mxsend API, BDAT", postfix, "mxsend-bdat", plain, chunking=True, small=True),
        Row(tls, postfix, "twisted-tls", tls, tls=True),
        Row("mxsend API, DATA, TLS", postfix, "mxsend-data-tls", tls, tls=True, small=True),
        Row("mxsend API, BDAT, TLS", postfix, "mxsend-bdat-tls", tls, True, True, small=True),
        Row("mxsend send (CLI), BDAT, TLS", postfix, "cli", tls, True, True, small=True),
    ]


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ehlo(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        reader = conn.makefile("rb")
        reader.readline()
        conn.sendall(b"EHLO client.test\r\n")
        lines = []
        while True:
            line = reader.readline().decode(errors="replace")
            lines.append(line.strip())
            if len(line) < 4 or line[3] != "-":
                break
        conn.sendall(b"QUIT\r\n")
        return "\n".join(lines)


@contextlib.contextmanager
def smtp_sink() -> Iterator[Server]:
    port = free_port()
    sink = subprocess.Popen(
        [SINK, "-u", "nobody", f"inet:127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: bool(ehlo(port)), f"smtp-sink on port {port}")
        yield Server("smtp-sink", port)
    finally:
        os.kill(sink.pid, signal.SIGTERM)
        sink.wait(timeout=30)


@contextlib.contextmanager
def discarding_postfix() -> Iterator[Server | None]:
    """tests/postfix.py's instance, taking any size and discarding what it accepts."""
    if os.geteuid() != 0 or not shutil.which("postfix"):
        print("no Postfix rows: they need root and Debian's postfix package", file=sys.stderr)
        yield None
        return
    sys.path.insert(0, str(ROOT))
    from tests.postfix import running_postfix

    with running_postfix() as postfix:
        etc = str(postfix.root / "etc")
        settings = ["message_size_limit=0", "virtual_mailbox_limit=0", "default_transport=discard"]
        subprocess.run(["postconf", "-c", etc, "-e", *settings], check=True)
        subprocess.run(["postfix", "-c", etc, "reload"], check=True, capture_output=True)

        def reloaded() -> bool:
            return "SIZE\n" in ehlo(postfix.port) + "\n"  # no number: no size limit

        _wait_for(reloaded, "Postfix to reload")
        yield Server("postfix", postfix.port, str(postfix.cafile), postfix.root / "spool")


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


# -- the report --------------------------------------------------------------------------------


def _seconds(row: Row) -> float:
    """The transfer: for the API, after the scan (done once at submission, as a queue does);
    for the command line, the process less the same command with a 2 KB message (start-up,
    imports, one session); for the anchors, the whole send."""
    if row.role == "cli" and row.small_samples:
        startup = statistics.median(s.wall for s in row.small_samples)
        return max(1e-3, statistics.median(s.wall for s in row.samples) - startup)
    return statistics.median(s.wall - (s.scan or 0.0) for s in row.samples)


def _with_scan(row: Row) -> float:
    return statistics.median(s.wall for s in row.samples)


def _rss(samples: list[Sample]) -> float:
    return statistics.median(s.rss for s in samples)


@dataclass
class Findings:
    ratios: list[tuple[Row, float]] = field(default_factory=list)  # mxsend API rows
    growths: list[tuple[Row, float]] = field(default_factory=list)
    scanned: list[tuple[Row, float]] = field(default_factory=list)  # API rows, scan included
    notes: list[str] = field(default_factory=list)


def table(rows: list[Row], octets: int) -> Findings:
    found = Findings()
    anchors = {(r.server.name, r.label): r for r in rows if r.role.startswith("twisted-")}
    header = ("server", "client", "s", "MB/s", "vs Twisted", "CPU s", "peak RSS MB",
              "2 KB RSS MB", "growth MB")  # fmt: skip
    print(
        "| {:<9} | {:<29} | {:>6} | {:>6} | {:>10} | {:>6} | {:>11} | {:>11} | {:>9} |".format(
            *header
        )
    )
    print("|" + "|".join("-" * (w + 2) for w in (9, 29, 6, 6, 10, 6, 11, 11, 9)) + "|")
    for row in rows:
        failed = [s.error for s in row.samples + row.small_samples if s.error]
        if failed:
            print(f"| {row.server.name:<9} | {row.label:<29} | FAILED: {failed[0]}")
            if row.role.startswith("mxsend"):
                found.ratios.append((row, 0.0))
            if row.small:
                found.growths.append((row, float("inf")))
            continue
        wall = _seconds(row)
        anchor = anchors[(row.server.name, row.anchor)]
        anchor_ok = not any(s.error for s in anchor.samples)
        ratio = _seconds(anchor) / wall if anchor_ok else float("nan")
        small = f"{_rss(row.small_samples):.1f}" if row.small_samples else ""
        growth = _rss(row.samples) - _rss(row.small_samples) if row.small_samples else None
        print(
            f"| {row.server.name:<9} | {row.label:<29} | {wall:>6.2f} | {octets / 1e6 / wall:>6.1f}"
            f" | {ratio:>9.2f}x | {statistics.median(s.cpu for s in row.samples):>6.2f}"
            f" | {_rss(row.samples):>11.1f} | {small:>11} | "
            f"{'' if growth is None else f'{growth:+.1f}':>9} |"
        )
        if row.role.startswith("mxsend") or row.role == "cli":
            found.ratios.append((row, ratio))
        if growth is not None:
            found.growths.append((row, growth))
        scans = [s.scan for s in row.samples if s.scan is not None]
        if scans and anchor_ok:
            with_scan = _seconds(anchor) / _with_scan(row)
            found.scanned.append((row, with_scan))
            found.notes.append(
                f"{row.server.name} {row.label}: plus the scan at submission, "
                f"{statistics.median(scans):.2f} s: {with_scan:.2f}x Twisted with it"
            )
        if row.role == "cli":
            startup = statistics.median(s.wall for s in row.small_samples)
            found.notes.append(
                f"{row.server.name} {row.label}: {_with_scan(row):.2f} s for the whole process "
                f"(scan included), less {startup:.2f} s for the same command with 2 KB"
            )
    return found


def verdicts(found: Findings, octets: int) -> bool:
    ok = True
    if found.ratios:
        row, ratio = min(found.ratios, key=lambda item: item[1])
        passed = ratio >= RATIO_TARGET
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'} throughput: every mxsend row at least "
            f"{RATIO_TARGET}x Twisted's streamed MB/s on the same server (lowest: {ratio:.2f}x, "
            f"{row.server.name} {row.label})"
        )
    if found.scanned:
        row, ratio = min(found.scanned, key=lambda item: item[1])
        print(
            f"info: with the scan counted in the transfer, the lowest API row is {ratio:.2f}x "
            f"({row.server.name} {row.label})"
        )
    if found.growths:
        row, growth = max(found.growths, key=lambda item: item[1])
        passed = growth <= RSS_GROWTH_LIMIT
        ok &= passed
        print(
            f"{'PASS' if passed else 'FAIL'} memory: peak RSS grows at most {RSS_GROWTH_LIMIT:g} "
            f"MB from a 2 KB to a {octets / 2**20:.0f} MiB message, API and command line "
            f"(most: {growth:+.1f} MB, {row.server.name} {row.label})"
        )
    return ok


def report(rows: list[Row], octets: int, runs: int) -> bool:
    print(
        f"One message of {octets / 1e6:.1f} MB ({octets / 2**20:.0f} MiB; ~76-character LF "
        f"lines) over 127.0.0.1; median of {runs} runs; MB = 10^6 octets"
    )
    print()
    found = table(rows, octets)
    print()
    for note in found.notes:
        print(f"  {note}")
    print()
    return verdicts(found, octets)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mib", type=float, default=50, help="message size in MiB (50)")
    parser.add_argument("--runs", type=int, default=5, help="runs per row, alternating (5)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child_role(args)))
        return
    if not os.path.exists(SINK):
        sys.exit(f"{SINK} missing: install Debian's postfix package (./dev bench does)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mxsend-large-") as folder:
        large, small = Path(folder) / "large.eml", Path(folder) / "small.eml"
        octets = write_message(large, int(args.mib * 2**20))
        write_message(small, 2048)
        with smtp_sink() as sink, discarding_postfix() as postfix:
            chunking = "CHUNKING" in ehlo(sink.port)
            print(
                f"smtp-sink {'offers' if chunking else 'does not offer'} CHUNKING; BDAT rows "
                f"go to {'smtp-sink and ' if chunking else ''}Postfix",
                file=sys.stderr,
            )
            rows = rows_for(sink, postfix, chunking)
            for run in range(args.runs):
                for row in rows if run % 2 == 0 else rows[::-1]:  # alternate, against drift
                    row.run(large, small)
    passed = report(rows, octets, args.runs)
    print(f"\n({time.monotonic() - started:.0f} s in all)")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
