"""The delivery log on stderr: one write per turn of the reactor, and Twisted's critical
events (unhandled errors) still shown once its logging has begun."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel

from mxsend.cli.queue import delivery_log, delivery_logging


def _event(recipient: str) -> dict[str, Any]:
    return {
        "log_namespace": "mxsend.delivery", "log_level": LogLevel.info, "log_format": "{line}",
        "line": f"abc: to=<{recipient}>, status=sent", "id": "abc", "recipient": recipient,
        "delay": 0.25, "status": "sent", "code": 250,
    }  # fmt: skip


def test_the_lines_of_one_turn_go_out_together_at_its_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    log = delivery_log("text", clock)
    log(_event("a@example.net"))
    log(_event("b@example.net"))
    log({"log_namespace": "mxsend.other", "log_format": "not ours"})
    assert capsys.readouterr().err == ""  # held until the turn ends
    clock.advance(0)
    assert capsys.readouterr().err == (
        "mxsend: abc: to=<a@example.net>, status=sent\n"
        "mxsend: abc: to=<b@example.net>, status=sent\n"
    )
    assert not clock.getDelayedCalls()


def test_json_lines_and_a_flush_before_the_turn_ends(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    log = delivery_log("json", clock)
    log(_event("a@example.net"))
    log.flush()
    record = json.loads(capsys.readouterr().err)
    assert record["recipient"] == "a@example.net" and record["delay"] == 0.25
    assert not clock.getDelayedCalls()  # the pending write was the one flushed
    clock.advance(0)
    assert capsys.readouterr().err == ""


def test_a_full_batch_is_written_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    log = delivery_log("text", clock)
    for n in range(1000):
        log(_event(f"r{n}@example.net"))
    assert capsys.readouterr().err.count("\n") == 1000  # bounded: never more held


def test_without_a_clock_each_line_is_written_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    log = delivery_log("text")
    log(_event("a@example.net"))
    assert capsys.readouterr().err == "mxsend: abc: to=<a@example.net>, status=sent\n"


def test_logging_keeps_critical_events_and_python_warnings_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = warnings.showwarning
    with delivery_logging("text", Clock()):
        Logger(namespace="mxsend.daemon").critical("the delivery loop stopped: {why}", why="x")
        Logger(namespace="mxsend.daemon").info("not shown")
        Logger(namespace="mxsend.delivery").info("{line}", line="abc: to=<a@example.net>")
    assert warnings.showwarning is shown
    err = capsys.readouterr().err
    assert "the delivery loop stopped: x" in err
    assert "not shown" not in err
    assert "mxsend: abc: to=<a@example.net>\n" in err  # flushed when the block ends
