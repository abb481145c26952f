"""Delivery reports: per-recipient outcomes as data, a summary for people, the exit status."""

from __future__ import annotations

from collections.abc import Iterable

from mxsend._exits import Exit
from mxsend.protocol import RecipientResult, Status

__all__ = ["exit_status", "format_result"]


def exit_status(results: Iterable[RecipientResult]) -> Exit:
    """0 when all were delivered, 75 when any is deferred, 69 when the rest failed for good."""
    statuses = {r.status for r in results}
    if Status.DEFERRED in statuses:
        return Exit.TEMPFAIL
    if Status.FAILED in statuses:
        return Exit.UNAVAILABLE
    return Exit.OK


def format_result(result: RecipientResult) -> str:
    reply = result.reply
    text = " ".join(line for line in reply.lines if line)
    note = " (outcome unknown: may have been delivered)" if result.outcome_unknown else ""
    return f"{result.status.value:>9}  {result.recipient}  {reply.code} {text}{note}"
