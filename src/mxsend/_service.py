"""``twistd -n mxsend send ...``: delivery as an application service, with the same options
and exit statuses as ``mxsend send``; ``twistd -n mxsend daemon ...``: the delivery daemon as
a service, with the options of ``mxsend daemon``."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from mxsend._exits import Exit
from mxsend.cli import UserError, daemon, internal_error, queue, send
from mxsend.cli._common import Parser
from mxsend.queue import BusyError

__all__ = ["DeliveryService", "Options", "makeService"]

_log = Logger()


class _SendOptions(usage.Options):
    """Everything after ``send`` goes to mxsend's own parser, so the options are the same."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if options is None else options)


class Options(usage.Options):
    synopsis = "send [mxsend send options] | daemon [mxsend daemon options]"
    subCommands = [  # noqa: RUF012
        ["send", None, _SendOptions, "Deliver a message, report, and stop"],
        ["daemon", None, _SendOptions, "Deliver the queue's mail as it falls due"],
    ]

    def postOptions(self) -> None:
        if self.subCommand not in ("send", "daemon"):
            raise usage.UsageError("give a command: send or daemon")


def _exit_with(status: int) -> None:
    # twistd has no way for an application to set the exit status: twisted.scripts.twistd's
    # runApp returns once the reactor stops (it re-raises only a received signal) and the
    # script then exits 0. So this runs at interpreter exit, after twistd's own shutdown and
    # the other atexit handlers registered before it, flushes, and ends with the status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class DeliveryService(Service):
    """Delivers the request once the reactor runs, prints the report, stops the reactor."""

    def __init__(self, request: send.Request, as_json: bool, *, verbose: bool = False) -> None:
        self._request = request
        self._json = as_json
        self._verbose = verbose
        self.exit_status: int | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        # The reactor twistd installed and runs: this is the application's edge.
        from twisted.internet import reactor  # noqa: PLC0415

        reactor.callWhenRunning(lambda: Deferred.fromCoroutine(self._run(reactor)))

    async def _run(self, reactor: Any) -> None:
        try:
            status = int(await send.run(reactor, self._request, self._json))
        except UserError as exc:
            sys.stderr.write(f"mxsend: {exc}\n")
            status = int(exc.status)
        except Exception as exc:
            if self._verbose:
                _log.failure("delivery failed")
            status = internal_error(exc)
        self.exit_status = status
        if status:
            atexit.register(_exit_with, status)
        reactor.stop()


class _ServingDaemon(Service):
    """The queue daemon under twistd: serves the queue alone, wakes on SIGUSR1."""

    def __init__(self, args: Any) -> None:
        self._args = args
        self._daemon: Any = None
        self._serving: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        from twisted.internet import reactor  # noqa: PLC0415 - the one twistd installed

        args = self._args
        store = send.open_queue(args.queue_dir)
        try:
            self._serving = store.serve()  # here, in the process that runs (after any fork)
        except BusyError as exc:
            sys.stderr.write(f"mxsend: {exc}\n")
            atexit.register(_exit_with, int(Exit.TEMPFAIL))
            reactor.callWhenRunning(reactor.stop)
            return
        options = send.delivery_options(args)
        built = daemon.build_daemon(reactor, store, args, options, queue.retry_policy(args))
        self._daemon = built
        wake = reactor.callFromThread  # type: ignore[attr-defined]
        signal.signal(signal.SIGUSR1, lambda *_: wake(built.wake))
        built.startService()

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._daemon is None:
            return None
        serving = self._serving
        return self._daemon.stopService().addBoth(lambda _: serving.close())


def _daemon_service(argv: list[str]) -> IService:
    parser = Parser(prog="twistd mxsend daemon")
    daemon.daemon_arguments(parser)
    args = parser.parse_args(argv)
    if args.processes != 1 or args.worker is not None:
        sys.stderr.write("mxsend: --processes is for `mxsend daemon`, not twistd\n")
        raise SystemExit(int(Exit.USAGE))
    try:
        daemon.check(args)
        store = send.open_queue(args.queue_dir)
        queue.retry_policy(args)
        send.delivery_options(args)
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        raise SystemExit(int(exc.status)) from None
    if store.daemon_pid() is not None:
        sys.stderr.write(f"mxsend: a daemon already serves {store.root}\n")
        raise SystemExit(int(Exit.TEMPFAIL))
    return _ServingDaemon(args)


def makeService(options: Options) -> IService:
    if options.subCommand == "daemon":
        return _daemon_service(options.subOptions.argv)
    args = send.build_parser().parse_args(options.subOptions.argv)
    try:
        request = send.build_request(args)
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        raise SystemExit(int(exc.status)) from None
    except Exception as exc:
        raise SystemExit(internal_error(exc, verbose=args.verbose)) from None
    return DeliveryService(request, args.json, verbose=args.verbose)
