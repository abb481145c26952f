"""Against Postfix's smtp-sink: pipelining peer and fault injector (INTEROP.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import smtp_sink

MESSAGE = b"From: a@x.test\nSubject: sink\n\n.dot line\nbody\n"


def send(port: int, *recipients: str, message: Path) -> tuple[int, list[dict[str, object]]]:
    argv = [sys.executable, "-m", "mxsend", "send", "--smarthost", f"127.0.0.1:{port}",
            "--tls", "none", "--from", "a@x.test", "--json", str(message)]  # fmt: skip
    for recipient in recipients:
        argv += ["--to", recipient]
    done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert not done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)["recipients"]


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "m.eml"
    path.write_bytes(MESSAGE)
    return path


def test_delivers_and_content_is_exact(message: Path) -> None:
    # smtp-sink writes as nobody, who cannot enter pytest's private temporary folders.
    dump = Path(tempfile.mkdtemp(prefix="mxsend-sink-"))
    try:
        with smtp_sink(dump=dump) as port:
            status, [one, two] = send(port, "b@y.test", "c@y.test", message=message)
        saved = [p.read_bytes() for p in dump.iterdir()]
    finally:
        shutil.rmtree(dump)
    assert status == 0 and one["status"] == two["status"] == "delivered"
    # The dump: trace headers, then the content un-stuffed, in LF form, plus a blank line.
    assert len(saved) == 1 and saved[0].endswith(b"\nSubject: sink\n\n.dot line\nbody\n\n")


@pytest.mark.parametrize(
    ("flags", "exit_status", "status", "code", "unknown"),
    [
        (["-r", "rcpt"], 75, "deferred", 450, False),
        (["-f", "rcpt"], 69, "failed", 500, False),
        (["-r", "mail"], 75, "deferred", 450, False),
        (["-f", "data"], 69, "failed", 500, False),
        (["-r", "."], 75, "deferred", 450, False),
        (["-Q", "rcpt"], 75, "deferred", 421, False),
        (["-Q", "data"], 75, "deferred", 421, False),
        (["-q", "mail"], 75, "deferred", 451, False),
        (["-q", "."], 75, "deferred", 451, True),
        (["-f", "ehlo,helo"], 69, "failed", 500, False),
    ],
)
def test_faults(
    flags: list[str], exit_status: int, status: str, code: int, unknown: bool, message: Path
) -> None:
    with smtp_sink(*flags) as port:
        got, [report] = send(port, "b@y.test", message=message)
    assert (got, report["status"], report["code"]) == (exit_status, status, code), report
    assert report["outcome_unknown"] is unknown


def test_out_of_order_replies_defer_instead_of_trusting_them(message: Path) -> None:
    # With -W, smtp-sink answers the pipelined DATA before the delayed RCPT: the replies are
    # out of step with the commands. Nothing they say may decide an outcome.
    with smtp_sink("-W", "rcpt:1") as port:
        status, [report] = send(port, "b@y.test", message=message)
    assert (status, report["status"], report["code"]) == (75, "deferred", 451), report
    assert "protocol error" in str(report["reply"])
