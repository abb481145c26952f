"""The daemon against real peers: a large queue (time to first delivery, memory), a server
answering 4xx that then recovers, and a queue run beside a daemon (never one entry twice)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mxsend.protocol import Envelope, Message
from mxsend.queue import DiskStore, enqueue
from tests.conftest import free_port, smtp_sink
from tests.integration.count_sink import counting_sink, counts

LINE = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
BODY = b"Subject: queued\r\n\r\n" + LINE * 28  # about 2 KB


def daemon(spool: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "mxsend", "daemon", "--queue-dir", str(spool), "--smarthost",
             f"127.0.0.1:{port}", "--tls", "none", "--log-format", "json", *extra],
            stderr=stderr,
        )  # fmt: skip


def sent(log: Path) -> list[dict[str, object]]:
    lines = log.read_bytes().splitlines() if log.exists() else []
    return [r for r in map(json.loads, (x for x in lines if x.startswith(b"{"))) if "status" in r]


def wait(condition: object, what: str, seconds: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, what
        time.sleep(0.02)
    return time.monotonic() - started


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def stop(child: subprocess.Popen[bytes]) -> int:
    child.send_signal(signal.SIGTERM)
    return child.wait(timeout=60)


def test_a_hundred_thousand_queued_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only due work is held in memory: the daemon lists the queue (names and times), claims
    # a batch and starts; it never reads every entry.
    spool, log = tmp_path / "q", tmp_path / "daemon.log"
    store = DiskStore(spool)
    started = time.monotonic()
    for start in range(0, 100_000, 1000):
        batch = [
            Message(Envelope.build("bulk@example.com", [f"r{i % 50}@d{i % 100}.example"]), BODY)
            for i in range(start, start + 1000)
        ]
        enqueue(store, batch)
    queued = time.monotonic() - started
    with smtp_sink() as port:
        child = daemon(spool, port, log)
        try:
            first = wait(lambda: any(r["status"] == "sent" for r in sent(log)), "no delivery", 30)
            time.sleep(10)
            rss = peak_rss_mb(child.pid)
            delivered = sum(r["status"] == "sent" for r in sent(log))
        finally:
            assert stop(child) == 0
    with capsys.disabled():  # the figures belong in the CI log
        print(
            f"\n100,000 queued in {queued:.1f} s; first delivery {first:.2f} s after the daemon "
            f"started; peak RSS {rss:.0f} MB after {first + 10:.0f} s, {delivered} delivered"
        )
    assert first < 5, first
    assert rss < 150, rss


def test_a_server_answering_4xx_then_recovering(tmp_path: Path) -> None:
    spool, log = tmp_path / "q", tmp_path / "daemon.log"
    store = DiskStore(spool)
    ids = enqueue(store, [Message(Envelope.build("a@example.com", [f"r{i}@example.net"]), BODY)
                          for i in range(20)])  # fmt: skip
    port = free_port()
    child = None
    try:
        with smtp_sink("-r", "rcpt", port=port):  # 450 to every RCPT
            child = daemon(spool, port, log, "--poll", "60")
            wait(lambda: len(sent(log)) >= 20, "no attempts", 30)
        assert {r["status"] for r in sent(log)} == {"deferred"}
        assert {r["code"] for r in sent(log)} == {450}
        for entry in store.entries():
            [r] = entry.recipients
            assert r.state.value == "deferred" and r.reply is not None and r.reply.code == 450
        with smtp_sink(port=port):  # the server is well again
            flushed = subprocess.run(
                [sys.executable, "-m", "mxsend", "queue", "flush", "--queue-dir", str(spool)],
                capture_output=True, timeout=60, check=True,
            )  # fmt: skip
            assert b"the daemon was woken" in flushed.stdout
            wait(lambda: sum(r["status"] == "sent" for r in sent(log)) == 20, "no recovery", 30)
    finally:
        if child is not None:
            assert stop(child) == 0
    assert store.scan(None) == [] and len(ids) == 20


def test_a_queue_run_beside_a_daemon_never_delivers_an_entry_twice(tmp_path: Path) -> None:
    spool, log = tmp_path / "q", tmp_path / "daemon.log"
    received = tmp_path / "received.log"
    store = DiskStore(spool)
    enqueue(store, numbered(200))
    with counting_sink(received, 0.01) as port:
        child = daemon(spool, port, log, "--workers", "2")
        run_argv = [sys.executable, "-m", "mxsend", "queue", "run", "--queue-dir", str(spool),
                    "--smarthost", f"127.0.0.1:{port}", "--tls", "none"]  # fmt: skip
        runs = [
            subprocess.Popen(run_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)
        ]
        try:
            for run in runs:
                assert run.wait(timeout=120) == 0
            wait(lambda: store.scan(None) == [], "entries left", 60)
        finally:
            assert stop(child) == 0
    arrived = counts(received)
    assert len(arrived) == 200 and set(arrived.values()) == {1}, arrived


def numbered(count: int) -> list[Message]:
    return [
        Message(
            Envelope.build("a@example.com", ["r@example.net"]), f"X-Seq: {i}\r\n".encode() + BODY
        )
        for i in range(count)
    ]


def test_several_processes_share_a_queue_and_stop_together(tmp_path: Path) -> None:
    spool, log = tmp_path / "q", tmp_path / "daemon.log"
    received = tmp_path / "received.log"
    store = DiskStore(spool)
    enqueue(store, numbered(300))
    with counting_sink(received, 0.005) as port:
        child = daemon(spool, port, log, "--processes", "3", "--workers", "2")
        try:
            wait(lambda: store.scan(None) == [], "entries left", 60)
            workers = _processes_serving(spool)
            assert len(workers) == 3, workers  # the first and its two others
        finally:
            assert stop(child) == 0
        wait(lambda: not _processes_serving(spool), "a worker outlived its daemon", 30)
    arrived = counts(received)
    assert len(arrived) == 300 and set(arrived.values()) == {1}, arrived


def _processes_serving(spool: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daemon" in argv and str(spool).encode() in argv:
            found.append(int(proc.name))
    return found
