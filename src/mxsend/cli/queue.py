"""``mxsend queue``: look at the queue, change entries, and run it once.

``list``, ``show ID``, ``stats``, ``hold ID``, ``release ID``, ``delete ID`` and ``flush`` are
file operations (no reactor); ``run`` delivers every entry once, due or not, as ``sendmail -q``
does, with ``send``'s routing, TLS and deadline options and the retry options. Every command is
safe beside a running daemon: an entry is changed or delivered only under its lock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from mxsend._exits import Exit
from mxsend._queuefiles import COMMIT_INTERVAL
from mxsend.cli._common import (
    EXIT_HELP,
    Subcommands,
    UserError,
    apply_config,
    config_option,
    key_help,
    run_in_reactor,
    timeouts_help,
    tune_gc,
)
from mxsend.cli.send import (
    delivery_arguments,
    delivery_options,
    delivery_routes,
    local_name,
    open_queue,
    queue_dir_option,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime

    from mxsend.queue import Entry, QueueStore, RetryPolicy
    from mxsend.twisted import PassCounts

__all__ = ["execute", "setup"]

_RETRY_HELP = """\
retries: a deferred recipient is tried again after --retry-first (5m), then twice as long
each time up to --retry-max (1h), with 10% jitter; after --lifetime (5d) in the queue it is
given up and the sender gets a DSN (bounces themselves: --bounce-lifetime, 1d). A delay
warning DSN is sent once after --delay-warning (default off). Durations: 30s, 5m, 1h, 5d."""


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "queue",
        help="list, change or run the queue",
        description="Look at the durable queue, change its entries, or run it once.",
    )
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    listing = actions.add_parser("list", help="every entry: id, age, size, sender, recipients")
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    show = actions.add_parser("show", help="one entry with each recipient's attempts")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="one JSON object on stdout")
    stats = actions.add_parser("stats", help="counts by state and by destination")
    stats.add_argument("--json", action="store_true", help="one JSON object on stdout")
    for name, what in (
        ("hold", "keep an entry from being delivered"),
        ("release", "let a held entry be delivered again"),
        ("delete", "remove an entry without a bounce"),
        ("bounce", "give up on an entry now and tell its sender (a DSN)"),
    ):
        actions.add_parser(name, help=what).add_argument("id")
    actions.add_parser("flush", help="make every entry due now")
    run = actions.add_parser(
        "run",
        help="deliver every entry once, due or not",
        epilog=f"{_RETRY_HELP}\n\n{timeouts_help()}\n\n{EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    delivery_arguments(run)
    retry_arguments(run)
    run.add_argument("--recipient", metavar="TEXT",
                     help="only entries with an undecided recipient whose address holds TEXT "
                     "(any case; sendmail -qR)")  # fmt: skip
    run.add_argument(
        "--sender",
        metavar="TEXT",
        help="only entries whose sender holds TEXT (any case; sendmail -qS)",
    )
    for sub in actions.choices.values():
        queue_dir_option(sub)
        config_option(sub)
    return parser


def selection(args: argparse.Namespace) -> Callable[[Entry], bool] | None:
    """``queue run``'s --recipient and --sender, as a test of an entry (None: every one)."""
    recipient = (getattr(args, "recipient", None) or "").lower()
    sender = (getattr(args, "sender", None) or "").lower()
    if not recipient and not sender:
        return None

    def select(entry: Entry) -> bool:
        if sender and sender not in (entry.sender or "").lower():
            return False
        return not recipient or any(
            recipient in r.address.lower() for r in entry.recipients if not r.state.decided
        )

    return select


def retry_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, what in (
        ("--retry-first", "wait before the first retry (default 5m)"),
        ("--retry-max", "longest wait between tries (default 1h)"),
        ("--lifetime", "give up and bounce after this long in the queue (default 5d)"),
        ("--bounce-lifetime", "give up on a bounce after this long (default 1d)"),
        ("--delay-warning", "warn the sender once after this long (default off)"),
    ):
        dest = flag[2:].replace("-", "_")
        parser.add_argument(flag, metavar="DURATION", help=key_help(dest, what))
    parser.add_argument(
        "--commit-interval", type=float, metavar="SECONDS",
        help=key_help("commit_interval", "make delivery records survive a crash of the "
                      "machine at most this long after they are written (a crash of mxsend "
                      "loses none); 0: before any more replies are read (default "
                      f"{COMMIT_INTERVAL:g})"),
    )  # fmt: skip
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help=key_help("log_format", "the delivery log on stderr: one line per recipient "
                      "attempt (default text)"),
    )  # fmt: skip


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    from mxsend.queue import RetryPolicy

    try:
        return RetryPolicy.from_options(
            args.retry_first, args.retry_max, args.lifetime, args.bounce_lifetime,
            args.delay_warning,
        )  # fmt: skip
    except ValueError as exc:
        raise UserError(Exit.USAGE, str(exc)) from None


def commit_interval(args: argparse.Namespace) -> float:
    """--commit-interval (or the config's), checked."""
    seconds = float(args.commit_interval)
    if not 0 <= seconds <= 60:
        raise UserError(Exit.USAGE, "--commit-interval must be from 0 to 60 seconds")
    return seconds


def execute(args: argparse.Namespace) -> int:
    store = open_queue(args.queue_dir)
    if args.action == "run":
        tune_gc()
        policy = retry_policy(args)
        interval = commit_interval(args)
        options = delivery_options(args)
        return run_in_reactor(
            lambda reactor: run(reactor, store, args, options, policy, commit_interval=interval),
            verbose=args.verbose,
        )
    return _COMMANDS[args.action](store, args)


# -- file operations ---------------------------------------------------------------------------


def _entry_json(entry: Entry, now: float) -> dict[str, Any]:
    from mxsend.queue._entry import entry_to_json

    return {**entry_to_json(entry), "age": round(now - entry.arrival, 3)}


def _age(seconds: float) -> str:
    from mxsend.queue import format_duration

    return format_duration(max(0, int(seconds)))


def _reply(entry_reply: Any) -> str:
    from mxsend.model import printable

    if entry_reply is None:
        return ""
    return printable(f"{entry_reply.code} " + " ".join(line for line in entry_reply.lines if line))


def list_entries(store: QueueStore, args: argparse.Namespace) -> int:
    now = time.time()
    entries = list(store.entries())
    if args.json:
        json.dump({"entries": [_entry_json(e, now) for e in entries]}, sys.stdout)
        sys.stdout.write("\n")
        return int(Exit.OK)
    if not entries:
        sys.stdout.write("queue is empty\n")
    for entry in entries:
        held = " (held)" if entry.held else ""
        size = entry.mail.size if entry.mail.size is not None else "-"
        sys.stdout.write(
            f"{entry.id}  {_age(now - entry.arrival):>8}  {size:>9}  <{entry.sender or ''}>{held}\n"
        )
        for r in entry.recipients:
            reply = _reply(r.reply)
            sys.stdout.write(
                f"    {r.state.value:<9} <{r.address}>{'  ' + reply if reply else ''}\n"
            )
    return int(Exit.OK)


def _get(store: QueueStore, entry_id: str) -> Entry:
    from mxsend.queue import NoSuchEntryError, QueueError

    try:
        return store.get(entry_id)
    except NoSuchEntryError as exc:
        raise UserError(Exit.NOINPUT, str(exc)) from None
    except QueueError as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None


def show_entry(store: QueueStore, args: argparse.Namespace) -> int:
    from mxsend.model import printable

    entry = _get(store, args.id)
    now = time.time()
    if args.json:
        json.dump(_entry_json(entry, now), sys.stdout)
        sys.stdout.write("\n")
        return int(Exit.OK)
    out = sys.stdout.write
    out(f"id:      {entry.id}{' (held)' if entry.held else ''}\n")
    out(f"arrival: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry.arrival))}")
    out(f" ({_age(now - entry.arrival)} ago)\n")
    out(f"sender:  <{entry.sender or ''}>\n")
    if entry.mail.size is not None:
        out(f"size:    {entry.mail.size}\n")
    for r in entry.recipients:
        due = ""
        if not r.state.decided and r.next_attempt > now:
            due = f", next try in {_age(r.next_attempt - now)}"
        out(f"<{r.address}>: {r.state.value}, {r.attempts} attempt(s){due}\n")
        for attempt in r.history:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(attempt.at))
            where = f" {attempt.remote}[{attempt.address}]" if attempt.remote else ""
            where = printable(where)
            out(f"    {when}{where} {attempt.state.value}: {_reply(attempt.reply)}\n")
    return int(Exit.OK)


def stats(store: QueueStore, args: argparse.Namespace) -> int:
    counts = store.stats()
    if args.json:
        json.dump(
            {"messages": counts.messages, "held": counts.held, "recipients": counts.recipients,
             "destinations": counts.destinations},
            sys.stdout,
        )  # fmt: skip
        sys.stdout.write("\n")
        return int(Exit.OK)
    sys.stdout.write(f"messages: {counts.messages} ({counts.held} held)\n")
    for state, number in sorted(counts.recipients.items()):
        sys.stdout.write(f"  {state:<9} {number}\n")
    for domain, number in sorted(counts.destinations.items(), key=lambda kv: -kv[1]):
        sys.stdout.write(f"  to {domain}: {number} waiting\n")
    return int(Exit.OK)


def _change(what: Callable[[QueueStore, str], None], done: str) -> Callable[..., int]:
    def command(store: QueueStore, args: argparse.Namespace) -> int:
        from mxsend.queue import BusyError, NoSuchEntryError, QueueError

        try:
            what(store, args.id)
        except NoSuchEntryError as exc:
            raise UserError(Exit.NOINPUT, str(exc)) from None
        except BusyError as exc:
            raise UserError(Exit.TEMPFAIL, str(exc)) from None
        except QueueError as exc:
            raise UserError(Exit.CANTCREAT, str(exc)) from None
        sys.stdout.write(f"{args.id}: {done}\n")
        return int(Exit.OK)

    return command


def bounce(store: QueueStore, args: argparse.Namespace) -> int:
    """Return an entry to its sender now: its undecided recipients fail, the sender gets a
    DSN (none for a bounce), the entry goes."""
    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorTime

    from mxsend.twisted import QueueRunner

    entry = _get(store, args.id)
    claims = store.claim([entry.id])
    if not claims:
        raise UserError(Exit.TEMPFAIL, f"queue entry {entry.id} is being delivered now; try again")
    with delivery_logging("text"):
        clock = IReactorTime(reactor)
        reporting_mta = local_name(apply_config(args).hostname)
        runner = QueueRunner(store, None, clock=clock, reporting_mta=reporting_mta)
        queued = runner.return_to_sender(claims[0], "returned to the sender by the postmaster")
    sys.stdout.write(f"{entry.id}: bounced{'; DSN queued' if queued else ''}\n")
    return int(Exit.OK)


def flush(store: QueueStore, args: argparse.Namespace) -> int:
    count = store.flush(time.time())
    woken = getattr(store, "wake", lambda: False)()
    sys.stdout.write(
        f"{count} entr{'y' if count == 1 else 'ies'} due now"
        f"{'; the daemon was woken' if woken else ''}\n"
    )
    return int(Exit.OK)


_COMMANDS: dict[str, Callable[[QueueStore, argparse.Namespace], int]] = {
    "list": list_entries,
    "show": show_entry,
    "stats": stats,
    "hold": _change(lambda s, i: s.hold(i), "held"),
    "release": _change(lambda s, i: s.unhold(i), "released"),
    "delete": _change(lambda s, i: s.delete(i), "deleted"),
    "flush": flush,
    "bounce": bounce,
}


# -- a queue run -------------------------------------------------------------------------------


def delivery_log(log_format: str, clock: IReactorTime | None = None) -> Any:
    """A twisted.logger observer writing the delivery log to stderr, text or JSON lines.
    With ``clock``, the lines of one turn of the reactor go out in one write at its end
    (one per recipient otherwise); ``flush()`` writes what waits."""
    from twisted.logger import ILogObserver, formatEvent
    from zope.interface import implementer

    fields = ("id", "recipient", "relay", "delay", "attempts", "dsn", "status", "code", "reply")

    @implementer(ILogObserver)
    class DeliveryLog:
        def __init__(self) -> None:
            self._lines: list[str] = []
            self._call: IDelayedCall | None = None

        def __call__(self, event: dict[str, Any]) -> None:
            if event.get("log_namespace") != "mxsend.delivery":
                return
            text = event["line"] if "line" in event else formatEvent(event)
            if log_format == "json":
                record = {k: event[k] for k in fields if k in event}
                record["message"] = text
                if "delay" in record:
                    record["delay"] = round(float(record["delay"]), 3)
                self._write(json.dumps(record) + "\n")
            else:
                self._write(f"mxsend: {text}\n")

        def _write(self, line: str) -> None:
            if clock is None:
                sys.stderr.write(line)
                return
            self._lines.append(line)
            if len(self._lines) >= _LOG_BATCH:
                self.flush()
            elif self._call is None:
                self._call = clock.callLater(0, self.flush)

        def flush(self) -> None:
            call, self._call = self._call, None
            if call is not None and call.active():
                call.cancel()
            if self._lines:
                text = "".join(self._lines)
                self._lines.clear()
                sys.stderr.write(text)
                sys.stderr.flush()

    return DeliveryLog()


#: Delivery log lines held for one write at most.
_LOG_BATCH = 1000


@contextlib.contextmanager
def delivery_logging(log_format: str, clock: IReactorTime | None = None) -> Iterator[None]:
    """The delivery log on stderr while the block runs (see :func:`delivery_log`)."""
    from twisted.logger import globalLogPublisher

    observer = delivery_log(log_format, clock)
    _begin_logging()
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
        observer.flush()


def _begin_logging() -> None:
    """Begin Twisted's logging (once a process) with only an observer that prints critical
    events (unhandled errors), as Twisted does before it begins. Until then every event
    also went through a buffer and a level filter: for the delivery log, one per recipient."""
    if _BEGUN:
        return
    import warnings

    from twisted.logger import ILogObserver, LogLevel, eventAsText, globalLogBeginner

    def critical(event: dict[str, Any]) -> None:
        if event.get("log_level") is LogLevel.critical:
            text = eventAsText(event, includeTimestamp=False, includeSystem=False)
            sys.stderr.write(f"{text}\n")

    shown = warnings.showwarning  # Python's warnings stay as they are: on stderr
    globalLogBeginner.beginLoggingTo(
        [cast(ILogObserver, critical)], discardBuffer=True, redirectStandardIO=False
    )
    warnings.showwarning = shown
    _BEGUN.append(True)


_BEGUN: list[bool] = []


class _Progress:
    """A one-line progress bar on a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, counts: PassCounts) -> None:
        if not self.enabled or not counts.total:
            return
        width = 30
        filled = width * counts.entries // counts.total
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {counts.entries}/{counts.total} "
            f"delivered {counts.delivered} deferred {counts.deferred} failed {counts.failed}"
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def run(
    reactor: IReactorTCP,
    store: QueueStore,
    args: argparse.Namespace,
    options: Any,
    policy: RetryPolicy,
    *,
    commit_interval: float,
) -> Exit:
    """One pass over every entry; print what it did."""
    from twisted.internet.interfaces import IReactorTime

    from mxsend.twisted import Deliverer, DNSRouter, QueueRunner

    progress = _Progress()
    clock = IReactorTime(reactor)
    with delivery_logging(args.log_format, clock):
        try:
            router = DNSRouter.asking(args.dns, reactor)
            deliverer = Deliverer(reactor, router, options, routes=delivery_routes(args))
            runner = QueueRunner(
                store, deliverer, clock=clock, policy=policy, reporting_mta=options.helo_name,
                commit_interval=commit_interval,
            )  # fmt: skip
            counts = await runner.run_pass(
                due_only=False, progress=progress, select=selection(args)
            )
        finally:
            progress.done()
    summary = {
        "entries": counts.entries,
        "delivered": counts.delivered,
        "deferred": counts.deferred,
        "failed": counts.failed,
        "bounces": counts.bounces,
    }
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(", ".join(f"{k} {v}" for k, v in summary.items()) + "\n")
    return Exit.OK
