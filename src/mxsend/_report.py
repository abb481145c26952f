"""Delivery reports for people and machines, and the exit status they imply."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TextIO

from mxsend._exits import Exit
from mxsend.model import REPORT_FORMAT, MessageReport, RecipientReport, report_to_json
from mxsend.protocol import Status

__all__ = ["exit_status", "format_human", "format_json"]


def exit_status(reports: Iterable[RecipientReport]) -> Exit:
    """0 when every recipient was delivered, 75 when any is deferred, 69 when the others
    failed for good (sysexits)."""
    statuses = {r.status for r in reports}
    if Status.DEFERRED in statuses:
        return Exit.TEMPFAIL
    if Status.FAILED in statuses:
        return Exit.UNAVAILABLE
    return Exit.OK


def _line(report: RecipientReport) -> str:
    reply = report.reply
    text = " ".join(line for line in reply.lines if line)
    where = f" via {report.mx} [{report.address}]" if report.mx else ""
    tls = ""
    if report.tls is not None:
        state = "verified" if report.tls.verified else "unverified"
        tls = f" {report.tls.version} {state}"
    note = " (outcome unknown: may have been delivered)" if report.outcome_unknown else ""
    return f"{report.status.value:>9}  {report.recipient}{where}{tls}: {reply.code} {text}{note}"


def format_human(reports: Sequence[MessageReport], out: TextIO) -> None:
    for message in reports:
        for report in message.recipients:
            out.write(_line(report) + "\n")
    every = [r for m in reports for r in m.recipients]
    counts = {s: sum(1 for r in every if r.status is s) for s in Status}
    out.write(
        f"{counts[Status.DELIVERED]} delivered, {counts[Status.DEFERRED]} deferred, "
        f"{counts[Status.FAILED]} failed\n"
    )


def format_json(reports: Sequence[MessageReport], out: TextIO) -> None:
    every = [r for m in reports for r in m.recipients]
    document = {
        "format": REPORT_FORMAT,
        "recipients": [report_to_json(r) for r in every],
        "delivered": sum(1 for r in every if r.status is Status.DELIVERED),
        "deferred": sum(1 for r in every if r.status is Status.DEFERRED),
        "failed": sum(1 for r in every if r.status is Status.FAILED),
        "exit_status": int(exit_status(every)),
    }
    json.dump(document, out, indent=2)
    out.write("\n")
