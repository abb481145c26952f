"""The durable queue against Postfix's: how fast mail is queued (mxsend's DiskStore through
the API and the command line, Postfix's sendmail), and how fast a backlog drains into the
same Postfix smtp-sink on loopback (the mxsend daemon, a private Postfix's qmgr and smtp).

    python bench/queue.py [--messages 5000] [--enqueue 1000] [--runs 3] [--quick]

Everything runs as child processes on 127.0.0.1 and is stopped by PID at the end: one
smtp-sink (its -c counters tell how many messages arrived), one private Postfix instance
(needs root: own config, queue and data directories under a temporary directory; relayhost
is the sink; destination concurrency and connection caching are Postfix's defaults) and,
for each drain run, ``python -m mxsend daemon``. Postfix's delivery is held by disabling
its queue manager (``master_service_disable = qmgr/unix``): submitted mail stays in the
incoming queue, and a drain starts when the master re-reads its configuration (SIGHUP, as
``postfix reload`` does) with qmgr enabled again (main.cf is first left to age 2 s: the
master postpones a reload while main.cf looks freshly written). The Postfix backlog goes in
through its smtpd on 127.0.0.1, untimed. A drain ends when the sink has all the messages
and the queue they came from is empty.

The enqueue rows and the drains are each repeated --runs times, the order alternating
between runs (the machine is shared and noisy); figures are medians. The targets are printed
beside the figures, not asserted. MB is 10^6 octets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import smtplib
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

from mxsend.protocol import Envelope, Message
from mxsend.queue import DiskStore, enqueue

ROOT = Path(__file__).resolve().parent.parent
SINK = "/usr/sbin/smtp-sink"
POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
POSTCONF = "/usr/sbin/postconf"
POSTSUPER = "/usr/sbin/postsuper"
SENDER, RECIPIENT = "bench@client.test", "sink@sink.test"
BATCH = 100  # messages per enqueue() call in the batched row
# The daemon's --processes (one per core here), --workers and --connections.
PROCESSES, WORKERS, CONNECTIONS = min(2, os.cpu_count() or 1), 4, 5
DRAIN_TARGET = 2.0  # mxsend's drain rate over Postfix's
ENQUEUE_TARGET = 10.0  # mxsend's batched enqueue rate over Postfix's sendmail submission
HOLD = "master_service_disable = qmgr/unix"


def body() -> bytes:
    """A 2 KB message with CRLF line ends (Postfix's sendmail turns them into LF)."""
    head = (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: queue benchmark\r\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <queue.bench@client.test>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
    text = head + line * (2048 // len(line) + 1)
    return text[:2046] + b"\r\n"


def wait_for(check: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def greets(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        ok = conn.recv(512).startswith(b"220")
        conn.sendall(b"QUIT\r\n")
        return ok


def stop_pid(pid: int, seconds: float = 15) -> None:
    """SIGTERM, then SIGKILL if ``pid`` outlives ``seconds`` (a process that is not our child
    is only signalled)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# -- the sink ----------------------------------------------------------------------------------


class Sink:
    """smtp-sink with -c: it rewrites ``sess=N quit=N mesg=N`` followed by a CR on stdout as
    sessions end and each "." is received; a thread keeps the last ``mesg`` count."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.process = subprocess.Popen(
            [SINK, "-c", "-u", "nobody", f"inet:127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_for(lambda: greets(self.port), f"smtp-sink on port {self.port}", 20)
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd, pending = self.process.stdout.fileno(), b""
        while chunk := os.read(fd, 65536):
            *updates, pending = (pending + chunk).split(b"\r")
            for update in reversed(updates):
                if found := re.search(rb"mesg=(\d+)", update):
                    self.received = int(found.group(1))
                    break

    def stop(self) -> None:
        stop_pid(self.process.pid)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- the private Postfix -----------------------------------------------------------------------

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {p}/spool
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = client.test
mydomain = client.test
myorigin = $myhostname
mydestination =
relay_domains =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
biff = no
in_flow_delay = 0s
maillog_file_prefixes = {p}
maillog_file = {p}/maillog
{hold}
"""

# Only the services this run needs, none chrooted; smtpd only takes the backlog.
MASTER_CF = """\
127.0.0.1:{smtpd} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
showq     unix  n       -       n       -       -       showq
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
SETTINGS = (
    "mail_version",
    "default_destination_concurrency_limit",
    "initial_destination_concurrency",
    "default_process_limit",
    "smtp_connection_cache_on_demand",
)


class Postfix:
    """A second Postfix instance under ``root`` that relays everything to the sink."""

    def __init__(self, root: Path, sink_port: int) -> None:
        self.root, self.etc, self.spool = root, root / "etc", root / "spool"
        self.smtpd_port = free_port()
        self.etc.mkdir(parents=True)
        for folder in ("spool", "data"):
            (root / folder).mkdir()
        shutil.chown(root / "data", "postfix")
        root.chmod(0o755)
        (self.etc / "master.cf").write_text(MASTER_CF.format(smtpd=self.smtpd_port))
        (self.etc / "main.cf").write_text(MAIN_CF.format(p=root, sink=sink_port, hold=HOLD))
        self.master_pid: int | None = None

    def start(self) -> None:
        """Start it with delivery held."""
        self._postfix("start")
        self.master_pid = self._pidfile()
        wait_for(lambda: greets(self.smtpd_port), "Postfix's smtpd", 30)

    def _pidfile(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.spool / "pid" / "master.pid").read_text().strip())
        return None

    def _postfix(self, *argv: str) -> None:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.etc), *argv], capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"postfix {' '.join(argv)} failed: {done.stdout}{done.stderr}")

    def settings(self) -> dict[str, str]:
        shown = subprocess.run(
            [POSTCONF, "-c", str(self.etc), *SETTINGS],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return dict(line.split(" = ", 1) for line in shown.stdout.splitlines())

    def _children(self, name: str) -> list[int]:
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = Path(entry.path, "stat").read_text()
                comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1]
                if comm == name and int(rest.split()[1]) == self.master_pid:
                    found.append(int(entry.name))
        return found

    def configure(self, setting: str) -> None:
        """Change main.cf, then wait until it is 2 s old: the master postpones a reload
        while main.cf looks freshly written, and that wait is not the drain's."""
        main_cf = self.etc / "main.cf"
        subprocess.run([POSTCONF, "-c", str(self.etc), "-e", setting], check=True)
        wait_for(lambda: time.time() - main_cf.stat().st_mtime > 2, "main.cf to age", 10)

    def reload(self) -> None:
        assert self.master_pid is not None
        os.kill(self.master_pid, signal.SIGHUP)  # what `postfix reload` does

    def hold(self) -> None:
        """Disable the queue manager: mail is accepted and stays in the incoming queue."""
        self.configure(HOLD)
        self.reload()
        wait_for(lambda: not self._children("qmgr"), "Postfix's qmgr to stop", 60)

    def files(self, *queues: str) -> list[Path]:
        return [
            Path(top, name)
            for queue in queues
            for top, _, names in os.walk(self.spool / queue)
            for name in names
        ]

    def queued(self) -> int:
        """Messages that cleanup has finished (it sets the owner execute bit then)."""
        return sum(1 for path in self.files("incoming") if path.stat().st_mode & 0o100)

    def empty(self) -> bool:
        return not self.files(*QUEUES)

    def settle(self, count: int, seconds: float) -> None:
        """Wait until pickup and cleanup have queued ``count`` messages."""
        wait_for(
            lambda: not self.files("maildrop") and self.queued() >= count,
            f"Postfix to queue {count} messages", seconds,
        )  # fmt: skip

    def delete_all(self) -> None:
        subprocess.run(
            [POSTSUPER, "-c", str(self.etc), "-d", "ALL"], check=True, capture_output=True
        )
        wait_for(self.empty, "Postfix's queue to empty", 30)

    def log_tail(self, lines: int = 15) -> str:
        path = self.root / "maillog"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        subprocess.run(
            [POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, check=False, timeout=60
        )
        pid = self.master_pid or self._pidfile()
        with contextlib.suppress(OSError):  # make sure, by PID (if it is still our master)
            if pid is not None and Path(f"/proc/{pid}/comm").read_text().strip() == "master":
                stop_pid(pid)


def inject(port: int, content: bytes, count: int, connections: int = 4) -> None:
    """Give Postfix's smtpd ``count`` copies of ``content`` (the backlog; not timed)."""
    shares = [count // connections + (i < count % connections) for i in range(connections)]

    failures: list[BaseException] = []

    def send(share: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=60) as s:
                for _ in range(share):
                    s.sendmail(SENDER, [RECIPIENT], content)
        except (OSError, smtplib.SMTPException) as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if failures or any(thread.is_alive() for thread in threads):
        raise SystemExit(f"could not give Postfix the backlog: {failures or 'timed out'}")


# -- enqueue rates -----------------------------------------------------------------------------


@dataclass
class Rate:
    label: str
    count: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / statistics.median(self.seconds)


def messages(count: int, content: bytes) -> list[Message]:
    envelope = Envelope.build(SENDER, [RECIPIENT])
    return [Message(envelope, content) for _ in range(count)]


def enqueue_single(folder: Path, count: int, content: bytes) -> float:
    store = DiskStore(folder)
    batch = messages(count, content)
    started = time.perf_counter()
    for message in batch:
        enqueue(store, message)
    seconds = time.perf_counter() - started
    if len(store.scan(None)) != count:
        raise SystemExit(f"enqueue(): {len(store.scan(None))} of {count} queued")
    return seconds


def enqueue_batched(folder: Path, count: int, content: bytes) -> float:
    store = DiskStore(folder)
    batch = messages(count, content)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        enqueue(store, batch[first : first + BATCH])
    seconds = time.perf_counter() - started
    if len(store.scan(None)) != count:
        raise SystemExit(f"batched enqueue(): {len(store.scan(None))} of {count} queued")
    return seconds


def enqueue_cli(folder: Path, count: int, message: Path) -> float:
    argv = [sys.executable, "-m", "mxsend", "send", "--queue", "--queue-dir", str(folder),
            "--from", SENDER, "--to", RECIPIENT, str(message)]  # fmt: skip
    started = time.perf_counter()
    for _ in range(count):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, timeout=60)
    seconds = time.perf_counter() - started
    if len(DiskStore(folder).scan(None)) != count:
        raise SystemExit(f"mxsend send --queue: not all {count} queued")
    return seconds


def enqueue_sendmail(postfix: Postfix, count: int, message: Path) -> tuple[float, float]:
    """Seconds for ``count`` sendmail commands in a row, and until cleanup queued them all."""
    argv = [SENDMAIL, "-C", str(postfix.etc), "-f", SENDER, RECIPIENT]
    started = time.perf_counter()
    for _ in range(count):
        with message.open("rb") as stdin:
            subprocess.run(argv, stdin=stdin, check=True, timeout=60)
    seconds = time.perf_counter() - started
    postfix.settle(count, 60 + count / 10)
    queued = time.perf_counter() - started
    postfix.delete_all()
    return seconds, queued


# -- drains ------------------------------------------------------------------------------------


@dataclass
class Drain:
    seconds: float
    first: float  # seconds until the sink had the first message
    delivered: int
    rss: float | None = None  # MB


class Watch:
    """Polls until the sink has ``count`` more messages and ``drained()`` holds."""

    def __init__(self, sink: Sink, count: int, limit: float) -> None:
        self.sink, self.count, self.base = sink, count, sink.received
        self.limit = limit
        self.started = time.perf_counter()
        self.first: float | None = None

    @property
    def delivered(self) -> int:
        return self.sink.received - self.base

    def wait(self, drained: Callable[[], bool], failed: Callable[[], str | None]) -> float:
        deadline = time.monotonic() + self.limit
        while not (self.delivered >= self.count and drained()):
            if self.first is None and self.delivered:
                self.first = time.perf_counter() - self.started
            why = failed() or ("timed out" if time.monotonic() > deadline else None)
            if why:
                raise SystemExit(f"{why}: {self.delivered} of {self.count} delivered")
            time.sleep(0.01)
        seconds = time.perf_counter() - self.started
        if self.first is None:
            self.first = seconds
        return seconds


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def drain_mxsend(
    folder: Path,
    sink: Sink,
    count: int,
    content: bytes,
    limit: float,
    *,
    warm: bool = False,
    commit_interval: str | None = None,
) -> Drain:
    """Cold: the daemon starts on the backlog. Warm: the backlog is due tomorrow, the daemon
    is running and idle, and the timing starts at ``queue flush`` (as ``postqueue -f``), like
    Postfix's, which starts at a running master being told to deliver. ``commit_interval``:
    the daemon's --commit-interval (None: its default)."""
    store = DiskStore(folder)
    batch = messages(count, content)
    for first in range(0, count, 500):
        enqueue(store, batch[first : first + 500])
    if warm:
        store.flush(time.time() + 86400)  # due tomorrow; arrived now, as the log's delays say
    argv = [sys.executable, "-m", "mxsend", "daemon", "--queue-dir", str(folder),
            "--smarthost", f"127.0.0.1:{sink.port}", "--tls", "none", "--helo", "client.test",
            "--processes", str(PROCESSES), "--workers", str(WORKERS),
            "--connections", str(CONNECTIONS), "--poll", "1", "--grace", "5"]  # fmt: skip
    if commit_interval is not None:
        argv += ["--commit-interval", commit_interval]
    log = folder.parent / f"{folder.name}.log"

    def failed() -> str | None:
        if daemon.poll() is None:
            return None
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return f"the mxsend daemon exited ({daemon.returncode}); its log ends:\n{tail}\n"

    with log.open("wb") as errors:
        watch = Watch(sink, count, limit)
        daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT)
        try:
            if warm:
                started = time.monotonic()
                while store.daemon_pid() is None:  # bounded: the daemon writes it at start
                    if (why := failed()) or time.monotonic() - started > 60:
                        raise SystemExit(why or "the mxsend daemon did not start in 60 s")
                    time.sleep(0.05)
                time.sleep(2)  # its children start and its first scans find nothing due
                watch = Watch(sink, count, limit)
                store.flush(time.time())
                store.wake()
            seconds = watch.wait(lambda: not store.scan(None), failed)
            rss = vm_hwm(daemon.pid)
        finally:
            stop_pid(daemon.pid, 30)
    log.unlink()
    shutil.rmtree(folder)
    assert watch.first is not None
    return Drain(seconds, watch.first, watch.delivered, rss)


def drain_postfix(postfix: Postfix, sink: Sink, count: int, content: bytes, limit: float) -> Drain:
    postfix.hold()
    inject(postfix.smtpd_port, content, count)
    postfix.settle(count, 120 + count / 20)
    postfix.configure("master_service_disable =")
    watch = Watch(sink, count, limit)
    postfix.reload()
    try:
        seconds = watch.wait(postfix.empty, lambda: None)
    except SystemExit as exc:
        raise SystemExit(f"Postfix: {exc}; its log ends:\n{postfix.log_tail()}") from None
    postfix.hold()
    assert watch.first is not None
    return Drain(seconds, watch.first, watch.delivered)


# -- runs --------------------------------------------------------------------------------------


def enqueue_run(
    args: argparse.Namespace,
    rates: list[Rate],
    cleanup_queued: Rate,
    postfix: Postfix,
    work: Path,
    *,
    reverse: bool,
) -> None:
    """One sample of each enqueue row, in this order or the reverse."""
    content = body()
    message = work / "message.eml"

    def sendmail() -> None:
        submitted, queued = enqueue_sendmail(postfix, args.sendmail, message)
        rates[3].seconds.append(submitted)
        cleanup_queued.seconds.append(queued)

    steps: list[Callable[[], None]] = [
        lambda: rates[0].seconds.append(enqueue_single(work / "q", args.enqueue, content)),
        lambda: rates[1].seconds.append(enqueue_batched(work / "q", args.enqueue, content)),
        lambda: rates[2].seconds.append(enqueue_cli(work / "q", args.cli, message)),
        sendmail,
    ]
    for step in steps[::-1] if reverse else steps:
        try:
            step()
        finally:
            shutil.rmtree(work / "q", ignore_errors=True)


def drain_run(
    args: argparse.Namespace,
    drains: dict[str, list[Drain]],
    sink: Sink,
    postfix: Postfix,
    work: Path,
    *,
    reverse: bool,
) -> None:
    """One drain of each sender, mxsend first or Postfix first."""
    content = body()
    limit = 60 + args.messages / 20  # seconds a drain may take (at least 20 msgs/s)
    order = ["mxsend", "warm", "strict", "postfix"]
    for name in order[::-1] if reverse else order:
        if name != "postfix":
            warm, interval = name != "mxsend", "0" if name == "strict" else None
            done = drain_mxsend(
                work / "drain", sink, args.messages, content, limit, warm=warm,
                commit_interval=interval,
            )  # fmt: skip
        else:
            done = drain_postfix(postfix, sink, args.messages, content, limit)
        if done.delivered != args.messages:
            print(f"{name}: the sink got {done.delivered} of {args.messages}", file=sys.stderr)
        drains[name].append(done)
        print(f"drain, {name}: {done.seconds:.2f} s", file=sys.stderr)


# -- the report --------------------------------------------------------------------------------


def target(label: str, ratio: float, goal: float) -> str:
    verdict = "met" if ratio >= goal else "NOT met"
    return f"target {label} >= {goal:g}x: {ratio:.2f}x ({verdict})"


def report(
    args: argparse.Namespace,
    rates: list[Rate],
    cleanup_queued: Rate,
    drains: dict[str, list[Drain]],
    settings: dict[str, str],
) -> None:
    sendmail = rates[-1].rate
    print(
        f"Enqueue: 2 KB messages, one recipient, queue directories on "
        f"{filesystem(tempfile.gettempdir())}; median of {args.runs} runs"
    )
    print("| {:<44} | {:>5} | {:>8} | {:>9} | {:>11} |".format(
        "submission", "msgs", "s", "msgs/s", "vs sendmail"))  # fmt: skip
    print("|" + "|".join("-" * (w + 2) for w in (44, 5, 8, 9, 11)) + "|")
    for row in [*rates, cleanup_queued]:
        print(
            f"| {row.label:<44} | {row.count:>5} | {statistics.median(row.seconds):>8.3f} "
            f"| {row.rate:>9.1f} | {row.rate / sendmail:>10.2f}x |"
        )
    print(
        "  Postfix held delivery with master_service_disable = qmgr/unix; its sendmail row is "
        "the commands' wall time (postdrop writes and fsyncs a maildrop file); the row below "
        "it runs until pickup and cleanup have written all of them to the incoming queue."
    )
    print()
    mx, warm, pf = drains["mxsend"], drains["warm"], drains["postfix"]
    strict_rate = statistics.median(args.messages / d.seconds for d in drains["strict"])
    mx_rate = statistics.median(args.messages / d.seconds for d in mx)
    warm_rate = statistics.median(args.messages / d.seconds for d in warm)
    pf_rate = statistics.median(args.messages / d.seconds for d in pf)
    print(
        f"Drain: a backlog of {args.messages} queued 2 KB messages into smtp-sink on 127.0.0.1; "
        f"median of {args.runs} runs (order alternating)"
    )
    print("| {:<56} | {:>7} | {:>7} | {:>7} | {:>11} | {:<20} |".format(
        "sender", "s", "msgs/s", "first s", "peak RSS MB", "each run, s"))  # fmt: skip
    print("|" + "|".join("-" * (w + 2) for w in (56, 7, 7, 7, 11, 20)) + "|")
    rows = [
        (f"mxsend daemon (--processes {PROCESSES} --workers {WORKERS} --connections "
         f"{CONNECTIONS})", mx),
        ("  the same, running and idle, from queue flush", warm),
        ("  the same, running, with --commit-interval 0", drains["strict"]),
        (f"Postfix {settings['mail_version']} qmgr + smtp (destination concurrency "
         f"{settings['default_destination_concurrency_limit']})", pf),
    ]  # fmt: skip
    for label, runs in rows:
        seconds = statistics.median(d.seconds for d in runs)
        rss = [d.rss for d in runs if d.rss is not None]
        print(
            f"| {label:<56} | {seconds:>7.2f} | {args.messages / seconds:>7.0f} "
            f"| {statistics.median(d.first for d in runs):>7.2f} "
            f"| {f'{max(rss):.1f}' if rss else '':>11} "
            f"| {' '.join(f'{d.seconds:.2f}' for d in runs):<20} |"
        )
    print(
        "  mxsend: from starting the daemon process until the sink has them all and "
        "DiskStore.scan(None) is empty; 'first s' is until the sink has the first one; peak "
        "RSS is the first daemon process's VmHWM (highest of the runs; with --processes each "
        "process is alike). The row below: the backlog was queued due tomorrow, the daemon "
        "started and left 2 s to settle; timed from DiskStore.flush() and wake(), which is "
        "what 'mxsend queue flush' does, like 'postqueue -f'. The daemon commits its "
        "delivery records (syncfs) at most 0.2 s after writing them (--commit-interval); "
        "with 0, at the end of every reactor turn, before more replies are read."
    )
    print(
        f"  Postfix: from SIGHUP to its master (qmgr enabled again) until the sink has them all "
        f"and its queue directories are empty; defaults otherwise "
        f"(initial_destination_concurrency {settings['initial_destination_concurrency']}, "
        f"default_process_limit {settings['default_process_limit']}, "
        f"smtp_connection_cache_on_demand {settings['smtp_connection_cache_on_demand']}), "
        f"but in_flow_delay 0s: with qmgr held, cleanup would pause 1 s per message. The "
        f"backlog goes in through its smtpd (4 connections, untimed); main.cf is left to age "
        f"2 s before the SIGHUP, as the master postpones a reload while main.cf is fresh."
    )
    print()
    print(
        f"drain: mxsend/Postfix = {mx_rate / pf_rate:.2f}x from a cold start, "
        f"{warm_rate / pf_rate:.2f}x running (both start with the queue full), "
        f"{strict_rate / pf_rate:.2f}x running with --commit-interval 0"
    )
    print(f"enqueue: mxsend batched/Postfix sendmail = {rates[1].rate / sendmail:.2f}x")
    print(target("drain, mxsend running over Postfix running", warm_rate / pf_rate, DRAIN_TARGET))
    print(target("batched enqueue over sendmail", rates[1].rate / sendmail, ENQUEUE_TARGET))
    print(f"mxsend daemon peak RSS: {max(d.rss or 0.0 for d in mx):.1f} MB")


def filesystem(path: str) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best
            ):
                best, kind = mount, fstype
    return f"{kind} ({best or '/'})"


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mxsend-bench-queue-"))
    try:
        folder.chmod(0o755)  # Postfix's daemons look up their directories after setuid
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    # This file is named like the standard library's queue module, and Python puts its folder
    # first on sys.path: take it off before anything imports ``queue`` (concurrent.futures,
    # logging.handlers, ...). The imports above do not.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="backlog to drain (5000)")
    parser.add_argument("--enqueue", type=int, default=1000, help="messages per API row (1000)")
    parser.add_argument("--cli", type=int, default=50, help="messages for the CLI row (50)")
    parser.add_argument("--sendmail", type=int, default=200, help="sendmail commands (200)")
    parser.add_argument("--runs", type=int, default=3, help="runs, alternating (3)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300, 100, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.enqueue, args.cli, args.sendmail, args.runs = 300, 100, 10, 50, 1
    for tool in (SINK, POSTFIX, SENDMAIL):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: install Debian's postfix package (./dev bench does)")
    if os.geteuid() != 0:
        sys.exit("the Postfix instance needs root to start its master")
    started = time.monotonic()
    content = body()
    rates = [
        Rate("mxsend enqueue(), one at a time", args.enqueue),
        Rate(f"mxsend enqueue(), batches of {BATCH}", args.enqueue),
        Rate("mxsend send --queue (a process each)", args.cli),
        Rate("Postfix sendmail -C (a process each)", args.sendmail),
    ]
    cleanup_queued = Rate("  Postfix, until cleanup queued them all", args.sendmail)
    drains: dict[str, list[Drain]] = {"mxsend": [], "warm": [], "strict": [], "postfix": []}
    with workspace() as work:
        message = work / "message.eml"
        message.write_bytes(content)
        sink = postfix = None
        try:
            sink = Sink()
            postfix = Postfix(work / "postfix", sink.port)
            postfix.start()
            settings = postfix.settings()
            for run in range(args.runs):
                enqueue_run(args, rates, cleanup_queued, postfix, work, reverse=run % 2 == 1)
                print(f"enqueue run {run + 1} of {args.runs} done", file=sys.stderr)
            for run in range(args.runs):
                drain_run(args, drains, sink, postfix, work, reverse=run % 2 == 1)
        finally:
            if postfix is not None:
                postfix.stop()
            if sink is not None:
                sink.stop()
    report(args, rates, cleanup_queued, drains, settings)
    print(f"\n({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
