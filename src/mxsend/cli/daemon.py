"""``mxsend daemon``: deliver the queue's due mail until SIGTERM, with ``queue run``'s
delivery and retry options."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from mxsend._exits import Exit
from mxsend.cli._common import EXIT_HELP, Subcommands, UserError, run_in_reactor, timeouts_help
from mxsend.cli.queue import _RETRY_HELP, delivery_log, retry_arguments, retry_policy
from mxsend.cli.send import delivery_arguments, delivery_options, open_queue, queue_dir_option

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP

    from mxsend.options import DeliveryOptions
    from mxsend.queue import DiskStore, RetryPolicy
    from mxsend.twisted import QueueDaemon

__all__ = ["build_daemon", "check", "daemon_arguments", "execute", "setup"]


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "daemon",
        help="deliver queued mail as it falls due, until SIGTERM",
        description="Deliver the queue's due mail, retrying on schedule, until SIGTERM; "
        "SIGUSR1 (sent by `send --queue` and `queue flush`) makes it look at once.",
        epilog=f"{_RETRY_HELP}\n\n{timeouts_help()}\n\n{EXIT_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    daemon_arguments(parser)
    return parser


def daemon_arguments(parser: argparse.ArgumentParser) -> None:
    delivery_arguments(parser)
    retry_arguments(parser)
    queue_dir_option(parser)
    parser.add_argument("--workers", type=int, default=4, metavar="N",
                        help="batches of entries delivered at once (default 4)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=5, metavar="N",
                        help="sessions per destination in each batch (default 5)")  # fmt: skip
    parser.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="look for due work at least this often (default 30)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="delivering processes serving the queue (default 1)")  # fmt: skip
    parser.add_argument("--worker", metavar="K/N", help=argparse.SUPPRESS)  # a child's share
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, seconds left to deliveries in flight (30)")  # fmt: skip


def check(args: argparse.Namespace) -> None:
    for name in ("workers", "connections"):
        if not 1 <= getattr(args, name) <= 1000:
            raise UserError(Exit.USAGE, f"--{name} must be from 1 to 1000")
    if not 1 <= args.processes <= 64:
        raise UserError(Exit.USAGE, "--processes must be from 1 to 64")
    for name in ("poll", "grace"):
        if not 0 < getattr(args, name) <= 86400:
            raise UserError(Exit.USAGE, f"--{name} must be more than 0 and at most 86400")


def build_daemon(
    reactor: IReactorTCP,
    store: DiskStore,
    args: argparse.Namespace,
    options: DeliveryOptions,
    policy: RetryPolicy,
) -> QueueDaemon:
    """The daemon for parsed ``daemon`` options (also the twistd plugin's service)."""
    import random
    from dataclasses import replace

    from twisted.internet.interfaces import IReactorTime

    from mxsend.queue._schedule import DestinationBackoff
    from mxsend.twisted import Deliverer, DNSRouter, QueueDaemon, QueueRunner

    clock = IReactorTime(reactor)
    options = replace(options, limits=replace(options.limits, connections=args.connections))
    backoff = DestinationBackoff(policy, rng=random.Random())

    def make_runner() -> QueueRunner:
        deliverer = Deliverer(reactor, DNSRouter.asking(args.dns, reactor), options)
        return QueueRunner(
            store, deliverer, clock=clock, policy=policy, reporting_mta=options.helo_name,
            backoff=backoff,
        )  # fmt: skip

    share = _share(getattr(args, "worker", None))
    return QueueDaemon(
        store, make_runner, clock=clock, workers=args.workers, poll=args.poll,
        grace=args.grace, share=share,
    )  # fmt: skip


def _share(worker: str | None) -> tuple[int, int]:
    if worker is None:
        return (0, 1)
    k, _, n = worker.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise UserError(Exit.USAGE, f"--worker takes K/N, got {worker!r}")
    return int(k), int(n)


class _Children:
    """The other delivering processes of a ``--processes N`` daemon: the same command with
    ``--worker K/N``, each taking first its share of the due entries (claims keep them from
    ever taking the same one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        argv = [sys.executable, "-m", "mxsend", *sys.argv[1:]]
        self._procs = [
            subprocess.Popen([*argv, "--worker", f"{k}/{args.processes}"])
            for k in range(1, args.processes)
        ]

    def signal(self, number: int) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(number)

    async def stop(self, reactor: Any, seconds: float) -> None:
        """SIGTERM each, wait up to ``seconds`` for them all, then SIGKILL what is left."""
        from twisted.internet.task import deferLater

        self.signal(signal.SIGTERM)
        waited = 0.0
        while any(p.poll() is None for p in self._procs) and waited < seconds:
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1
        self.signal(signal.SIGKILL)
        for proc in self._procs:
            proc.wait()


def execute(args: argparse.Namespace) -> int:
    check(args)
    from mxsend.queue import BusyError

    store = open_queue(args.queue_dir)
    policy = retry_policy(args)
    options = delivery_options(args)
    if args.worker is not None:
        _share(args.worker)  # a child of a daemon that serves the queue: no lock of its own
        return run_in_reactor(
            lambda reactor: run(reactor, store, args, options, policy), verbose=args.verbose
        )
    try:
        serving = store.serve()
    except BusyError as exc:
        raise UserError(Exit.TEMPFAIL, str(exc)) from None
    try:
        return run_in_reactor(
            lambda reactor: run(reactor, store, args, options, policy), verbose=args.verbose
        )
    finally:
        serving.close()


async def run(
    reactor: Any,
    store: DiskStore,
    args: argparse.Namespace,
    options: DeliveryOptions,
    policy: RetryPolicy,
) -> Exit:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogPublisher

    observer = delivery_log(args.log_format)
    globalLogPublisher.addObserver(observer)
    daemon = build_daemon(reactor, store, args, options, policy)
    stopped: Deferred[Exit] = Deferred()
    children = _Children(args) if args.worker is None and args.processes > 1 else None

    def shutdown() -> Deferred[None]:
        done = daemon.stopService()
        if children is not None:
            done.addBoth(lambda _: Deferred.fromCoroutine(children.stop(reactor, args.grace + 10)))
        return done.addBoth(lambda _: stopped.callback(Exit.OK))

    def woken(*_: object) -> None:
        reactor.callFromThread(daemon.wake)
        if children is not None:
            children.signal(signal.SIGUSR1)

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    signal.signal(signal.SIGUSR1, woken)
    daemon.startService()
    if args.worker is not None:
        parent = os.getppid()  # an orphaned child stops: its parent's successor starts others
        LoopingCall(lambda: os.getppid() != parent and reactor.stop()).start(1.0, now=False)
    else:
        sys.stderr.write(f"mxsend: daemon serving {store.root}\n")
        sys.stderr.flush()
    try:
        return await stopped
    finally:
        globalLogPublisher.removeObserver(observer)
