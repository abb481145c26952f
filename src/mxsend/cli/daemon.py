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
from mxsend.cli._common import (
    EXIT_HELP,
    Subcommands,
    UserError,
    config_option,
    key_help,
    run_in_reactor,
    timeouts_help,
    tune_gc,
)
from mxsend.cli.queue import (
    _RETRY_HELP,
    commit_interval,
    delivery_logging,
    retry_arguments,
    retry_policy,
)
from mxsend.cli.send import (
    delivery_arguments,
    delivery_options,
    delivery_routes,
    open_queue,
    queue_dir_option,
)
from mxsend.cli.sendmail import SUBMIT_SOCKET

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
    config_option(parser)
    parser.add_argument("--workers", type=int, metavar="N",
                        help=key_help("workers", "batches of entries delivered at once "
                                      "(default 4)"))  # fmt: skip
    parser.add_argument("--connections", type=int, metavar="N",
                        help=key_help("connections", "sessions per destination in each batch "
                                      "(default 5; a route's concurrency wins)"))  # fmt: skip
    parser.add_argument("--poll", type=float, metavar="SECONDS",
                        help=key_help("poll", "look for due work at least this often "
                                      "(default 30)"))  # fmt: skip
    parser.add_argument("--processes", type=int, metavar="N",
                        help=key_help("processes", "delivering processes serving the queue "
                                      "(default 1)"))  # fmt: skip
    parser.add_argument("--worker", metavar="K/N", help=argparse.SUPPRESS)  # a child's share
    parser.add_argument("--grace", type=float, metavar="SECONDS",
                        help=key_help("grace", "on SIGTERM, seconds left to deliveries in "
                                      "flight (30)"))  # fmt: skip
    parser.add_argument("--submit-socket", metavar="PATH",
                        help=key_help("submit_socket", "take messages from users who cannot "
                                      "write the queue on this Unix socket (default "
                                      f"{SUBMIT_SOCKET} for root's system queue; \"\" for "
                                      "none)"))  # fmt: skip


def check(args: argparse.Namespace) -> None:
    for name in ("workers", "connections"):
        if not 1 <= getattr(args, name) <= 1000:
            raise UserError(Exit.USAGE, f"--{name} must be from 1 to 1000")
    if not 1 <= args.processes <= 64:
        raise UserError(Exit.USAGE, "--processes must be from 1 to 64")
    for name in ("poll", "grace"):
        if not 0 < getattr(args, name) <= 86400:
            raise UserError(Exit.USAGE, f"--{name} must be more than 0 and at most 86400")
    commit_interval(args)


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
    from mxsend.twisted._routes import RouteState

    clock = IReactorTime(reactor)
    options = replace(options, limits=replace(options.limits, connections=args.connections))
    backoff = DestinationBackoff(policy, rng=random.Random())
    routes = delivery_routes(args)
    state = RouteState(reactor)  # one for every batch: route limits and secrets hold across
    interval = commit_interval(args)

    def make_runner() -> QueueRunner:
        router = DNSRouter.asking(args.dns, reactor)
        deliverer = Deliverer(reactor, router, options, routes=routes, state=state)
        return QueueRunner(
            store, deliverer, clock=clock, policy=policy, reporting_mta=options.helo_name,
            backoff=backoff, commit_interval=interval,
        )  # fmt: skip

    share = daemon_share(args)
    return QueueDaemon(
        store, make_runner, clock=clock, workers=args.workers, poll=args.poll,
        grace=args.grace, share=share,
    )  # fmt: skip


def submission_socket(args: argparse.Namespace, store: DiskStore) -> str | None:
    """Where the daemon takes submissions: --submit-socket (or the config's), else the
    default one when root serves the system queue; None for none."""
    from mxsend.queue import default_queue_dir

    path: str | None = args.submit_socket
    if path is None and os.geteuid() == 0 and store.root == default_queue_dir({}):
        path = SUBMIT_SOCKET
    if path and not os.path.isabs(path):
        raise UserError(Exit.USAGE, f"--submit-socket {path!r} must be an absolute path")
    return path or None


def _listen_for_submissions(
    reactor: Any, store: DiskStore, args: argparse.Namespace, daemon: QueueDaemon
) -> Any:
    """The submission socket (see mxsend.queue._intake), listening; None when there is none.
    What users hand it is queued with their uid and delivered at once."""
    from twisted.logger import Logger

    from mxsend.cli.sendmail import host_name
    from mxsend.protocol._server import DEFAULT_MAX_MESSAGE_SIZE
    from mxsend.queue._intake import SenderPolicy
    from mxsend.twisted._submit import SubmissionFactory, listen_for_submissions, store_intake

    path = submission_socket(args, store)
    if path is None:
        return None
    settings = getattr(args, "settings", None)
    host = (settings and (settings.domain or settings.hostname)) or host_name()
    log = Logger(namespace="mxsend.submit")
    factory = SubmissionFactory(
        store_intake(store, SenderPolicy(host, settings)),
        clock=reactor,
        max_size=DEFAULT_MAX_MESSAGE_SIZE,
        queued=lambda _queue_id: daemon.wake(),
        log=lambda line: log.info("{line}", line=line),
        spool_dir=str(store.root / "tmp"),
    )
    try:
        port = listen_for_submissions(reactor, path, factory)
    except Exception as exc:  # a daemon without its socket still delivers the queue
        sys.stderr.write(f"mxsend: cannot listen for submissions at {path}: {exc}\n")
        return None
    sys.stderr.write(f"mxsend: taking submissions at {path}\n")
    return port


def daemon_share(args: argparse.Namespace) -> tuple[int, int]:
    """(k, n): this process takes first the due entries whose id hashes to k of n. The
    first process of ``--processes N`` takes 0 of N; its children, ``--worker K/N``, the
    others."""
    worker = getattr(args, "worker", None)
    if worker is None:
        return (0, max(1, getattr(args, "processes", 1)))
    return _share(worker)


def _share(worker: str) -> tuple[int, int]:
    k, _, n = worker.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise UserError(Exit.USAGE, f"--worker takes K/N, got {worker!r}")
    return int(k), int(n)


class _Children:
    """The other delivering processes of a ``--processes N`` daemon: the same command with
    ``--worker K/N``, each taking first its share of the due entries (claims keep them from
    ever taking the same one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        argv = [sys.executable, "-I", "-m", "mxsend", *sys.argv[1:]]  # -I: not the cwd's mxsend
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

    tune_gc()
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
    with delivery_logging(args.log_format, reactor):
        return await _serve(reactor, store, args, options, policy)


async def _serve(
    reactor: Any,
    store: DiskStore,
    args: argparse.Namespace,
    options: DeliveryOptions,
    policy: RetryPolicy,
) -> Exit:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import LoopingCall

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
    if args.worker is None:
        listening = _listen_for_submissions(reactor, store, args, daemon)
        if listening is not None:
            reactor.addSystemEventTrigger("before", "shutdown", listening.stopListening)
    if args.worker is not None:
        parent = os.getppid()  # an orphaned child stops: its parent's successor starts others
        LoopingCall(lambda: os.getppid() != parent and reactor.stop()).start(1.0, now=False)
    else:
        sys.stderr.write(f"mxsend: daemon serving {store.root}\n")
        sys.stderr.flush()
    return await stopped
