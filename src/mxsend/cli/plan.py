"""``mxsend plan``: where mail would go and the deadlines that would apply, with the config
file's routes; nothing is sent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from mxsend._exits import Exit
from mxsend.cli._common import (
    Subcommands,
    UserError,
    apply_config,
    config_option,
    host_port,
    parse_timeouts,
    routing_options,
    run_in_reactor,
    timeout_option,
    timeouts_help,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP

    from mxsend.twisted import Deliverer, DeliveryOptions

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
    config_option(parser)
    return parser


async def run(reactor: IReactorTCP, args: argparse.Namespace) -> Exit:
    """Look up the routes for ``args`` (parsed ``plan`` options), print them; the exit status."""
    from mxsend.cli._drop import qualified
    from mxsend.cli.send import delivery_routes
    from mxsend.protocol import Address, AddressError
    from mxsend.routing import TLSPolicy
    from mxsend.twisted import Deliverer, DeliveryOptions, DNSRouter, Smarthost, TLSOptions

    config = apply_config(args)
    timeouts = parse_timeouts(args.timeout, config).as_dict()
    try:
        addresses = [Address.parse(qualified(a, config.domain)) for a in args.to]
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
    router = DNSRouter.asking(args.dns, reactor)
    deliverer = Deliverer(reactor, router, options, routes=delivery_routes(args))
    plans: list[dict[str, Any]] = []
    worst = Exit.OK
    for domain in sorted({deliverer.destination(a) for a in addresses}):
        entry, status = await _plan(deliverer, options, domain)
        plans.append(entry)
        worst = max(worst, status)
    if args.json:
        json.dump({"destinations": plans, "timeouts": timeouts}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(plans, timeouts)
    return worst


async def _plan(
    deliverer: Deliverer, options: DeliveryOptions, domain: str
) -> tuple[dict[str, Any], Exit]:
    """One destination's entry: its configured route, hosts and TLS, or why it has none."""
    from mxsend.routing import RouteError

    entry: dict[str, Any] = {"domain": domain or None}
    configured = deliverer.configured(domain)
    relayed = not domain or (configured is not None and configured.relay is not None)
    if configured is not None:
        entry["via"] = "mx" if configured.relay is None else str(configured.relay)
        if configured.concurrency is not None:
            entry["concurrency"] = configured.concurrency
        if configured.rate is not None:
            entry["rate"] = {"messages": configured.rate.count, "seconds": configured.rate.seconds}
    try:
        route = await deliverer.route(domain)
    except RouteError as failure:
        tls = options.tls_policy
        if configured is not None:  # as Deliverer.route would have chosen it
            tls = deliverer.configured_tls(configured)
        entry["tls"] = tls.value
        entry["error"] = {"code": failure.reply.code, "enhanced": str(failure.reply.enhanced),
                          "reply": failure.reply.text}  # fmt: skip
        return entry, Exit.TEMPFAIL if failure.reply.is_transient else Exit.UNAVAILABLE
    entry["tls"] = route.tls.value
    entry["tls_source"] = route.source.value
    entry["implicit_tls"] = route.implicit_tls
    entry["hosts"] = [
        {"name": h.name, "preference": h.preference, "port": route.port,
         "addresses": list(h.addresses)}
        | ({} if relayed else {"implicit": h.implicit})  # no MX: the domain's own A
        for h in route.hosts
    ]  # fmt: skip
    return entry, Exit.OK


def _print(plans: list[dict[str, Any]], timeouts: dict[str, float]) -> None:
    for entry in plans:
        via = f" via {entry['via']}" if "via" in entry else ""
        sys.stdout.write(f"{entry['domain'] or 'smarthost'}{via} (tls {entry['tls']}):\n")
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


def execute(args: argparse.Namespace) -> int:
    """``mxsend plan``, in the reactor."""
    return run_in_reactor(lambda reactor: run(reactor, args))
