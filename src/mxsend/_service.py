"""``twistd -n mxsend send ...``: delivery as an application service, with the same options
and exit statuses as ``mxsend send``."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from mxsend.cli import UserError, internal_error, send

__all__ = ["DeliveryService", "Options", "makeService"]

_log = Logger()


class _SendOptions(usage.Options):
    """Everything after ``send`` goes to mxsend's own parser, so the options are the same."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if options is None else options)


class Options(usage.Options):
    synopsis = "send [mxsend send options]"
    subCommands = [["send", None, _SendOptions, "Deliver a message, report, and stop"]]  # noqa: RUF012

    def postOptions(self) -> None:
        if self.subCommand != "send":
            raise usage.UsageError("give a command: send")


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


def makeService(options: Options) -> IService:
    args = send.build_parser().parse_args(options.subOptions.argv)
    try:
        request = send.build_request(args)
    except UserError as exc:
        sys.stderr.write(f"mxsend: {exc}\n")
        raise SystemExit(int(exc.status)) from None
    except Exception as exc:
        raise SystemExit(internal_error(exc, verbose=args.verbose)) from None
    return DeliveryService(request, args.json, verbose=args.verbose)
