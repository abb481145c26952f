"""``mxsend plan``: where mail would go and the deadlines that would apply; nothing is sent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from mxsend._exits import Exit
from mxsend.cli._common import (
    Subcommands,
    UserError,
    host_port,
    parse_timeouts,
    routing_options,
    run_in_reactor,
    timeout_option,
    timeouts_help,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP

__all__ = ["execute", "run", "setup"]


def setup(commands: Subcommands) -> argparse.ArgumentParser:
    """Add ``plan`` to the subcommands of the ``mxsend`` parser."""
    parser = commands.add_parser(
        "plan",
        help="show where mail would go, without sending",
        description="Show where mail would go and the deadlines that would apply; send nothing.",
        epilog=timeouts_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--to", action="append", default=[], required=True, metavar="ADDR")
    routing_options(parser)
    timeout_option(parser)
    return parser


async def run(reactor: IReactorTCP, args: argparse.Namespace) -> Exit:
    """Look up the routes for ``args`` (parsed ``plan`` options), print them; the exit status."""
    from mxsend.protocol import Address, AddressError
    from mxsend.routing import RouteError, TLSPolicy
    from mxsend.twisted import (
        Deliverer,
        DeliveryOptions,
        DNSRouter,
        Smarthost,
        TLSOptions,
    )

    timeouts = parse_timeouts(args.timeout).as_dict()
    try:
        domains = sorted({Address.parse(a).domain.lower() for a in args.to})
    except AddressError as exc:
        raise UserError(Exit.DATAERR, str(exc)) from None
    smarthost = None
    if args.smarthost:
        try:
            smarthost = Smarthost(*host_port(args.smarthost, 587))
        except argparse.ArgumentTypeError as exc:
            raise UserError(Exit.USAGE, f"--smarthost: {exc}") from None
    options = DeliveryOptions(
        "localhost",
        mx_port=args.mx_port,
        tls=TLSOptions(TLSPolicy(args.tls) if args.tls else None),
        smarthost=smarthost,
    )
    # The very routes delivery would take: the same code decides them.
    deliverer = Deliverer(reactor, DNSRouter.asking(args.dns, reactor), options)
    plans: list[dict[str, Any]] = []
    worst = Exit.OK
    for domain in [""] if smarthost else domains:
        entry: dict[str, Any] = {"domain": domain or None}
        try:
            route = await deliverer.route(domain)
        except RouteError as failure:
            entry["tls"] = options.tls_policy.value
            entry["error"] = {"code": failure.reply.code, "enhanced": str(failure.reply.enhanced),
                              "reply": failure.reply.text}  # fmt: skip
            worst = max(worst, Exit.TEMPFAIL if failure.reply.is_transient else Exit.UNAVAILABLE)
        else:
            entry["tls"] = route.tls.value
            entry["tls_source"] = route.source.value
            entry["implicit_tls"] = route.implicit_tls
            entry["hosts"] = [
                {"name": h.name, "preference": h.preference, "port": route.port,
                 "addresses": list(h.addresses)}
                | ({} if smarthost else {"implicit": h.implicit})  # no MX: the domain's own A
                for h in route.hosts
            ]  # fmt: skip
        plans.append(entry)
    if args.json:
        json.dump({"destinations": plans, "timeouts": timeouts}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in plans:
            sys.stdout.write(f"{entry['domain'] or 'smarthost'} (tls {entry['tls']}):\n")
            if "error" in entry:
                error = entry["error"]
                sys.stdout.write(f"  no route: {error['code']} {error['reply']}\n")
            for host in entry.get("hosts", []):
                addresses = ", ".join(host["addresses"])
                sys.stdout.write(
                    f"  {host['preference']:>3} {host['name']}:{host['port']} [{addresses}]\n"
                )
        deadlines = ", ".join(f"{stage} {seconds:g}s" for stage, seconds in timeouts.items())
        sys.stdout.write(f"timeouts: {deadlines}\n")
    return worst


def execute(args: argparse.Namespace) -> int:
    """``mxsend plan``, in the reactor."""
    return run_in_reactor(lambda reactor: run(reactor, args))
