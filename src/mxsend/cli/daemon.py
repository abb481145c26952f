"""``mxsend daemon``: deliver the queue's due mail until SIGTERM, with ``queue run``'s
delivery and retry options."""

from __future__ import annotations

import argparse
import signal
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
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, seconds left to deliveries in flight (30)")  # fmt: skip


def check(args: argparse.Namespace) -> None:
    for name in ("workers", "connections"):
        if not 1 <= getattr(args, name) <= 1000:
            raise UserError(Exit.USAGE, f"--{name} must be from 1 to 1000")
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

    return QueueDaemon(
        store, make_runner, clock=clock, workers=args.workers, poll=args.poll, grace=args.grace
    )


def execute(args: argparse.Namespace) -> int:
    check(args)
    from mxsend.queue import BusyError

    store = open_queue(args.queue_dir)
    policy = retry_policy(args)
    options = delivery_options(args)
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
    from twisted.logger import globalLogPublisher

    observer = delivery_log(args.log_format)
    globalLogPublisher.addObserver(observer)
    daemon = build_daemon(reactor, store, args, options, policy)
    stopped: Deferred[Exit] = Deferred()

    def shutdown() -> Deferred[None]:
        return daemon.stopService().addBoth(lambda _: stopped.callback(Exit.OK))

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(daemon.wake))
    daemon.startService()
    sys.stderr.write(f"mxsend: daemon serving {store.root}\n")
    sys.stderr.flush()
    try:
        return await stopped
    finally:
        globalLogPublisher.removeObserver(observer)
