"""``--timeout STAGE=SECONDS`` on ``mxsend send``, ``mxsend plan`` and the twistd plugin."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxsend.cli import build_parser
from mxsend.cli.send import build_request
from mxsend.twisted import STAGES, Timeouts
from tests.conftest import run_mxsend as mxsend

TWISTD = str(Path(sys.executable).parent / "twistd")
# No lookup may happen before a usage error: this DNS server does not exist.
NOWHERE = ["--dns", "127.0.0.1:9"]


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@x.test\nTo: b@y.test\nSubject: t\n\nhello\n")
    return path


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def one_line(stderr: bytes) -> bytes:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(b"mxsend: "), stderr
    assert b"Traceback" not in stderr
    return lines[0]


BAD = [
    ("bogus=3", b"STAGE one of all, connect, greeting"),
    ("rcpt=x", b"not a number of seconds in 'rcpt=x'"),
    ("rcpt=0", b"seconds must be more than 0"),
    ("all=-1", b"seconds must be more than 0"),
    ("data=nan", b"seconds must be more than 0"),
    ("final=1e9", b"at most 86400"),
    ("rcpt", b"expected STAGE=SECONDS"),
    ("rcpt=", b"not a number of seconds"),
]


@pytest.mark.parametrize(("spec", "text"), BAD)
def test_bad_timeout_on_send_is_usage_error(spec: str, text: bytes, message: Path) -> None:
    done = mxsend(
        "send", *NOWHERE, "--from", "a@x.test", "--to", "b@y.test", "--timeout", spec,
        str(message),
    )  # fmt: skip
    assert done.returncode == 64, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(b"mxsend: argument --timeout: ") and text in line
    assert done.stdout == b""


@pytest.mark.parametrize(("spec", "text"), BAD[:3])
def test_bad_timeout_on_plan_is_usage_error(spec: str, text: bytes) -> None:
    done = mxsend("plan", *NOWHERE, "--to", "b@y.test", "--timeout", spec)
    assert done.returncode == 64, done.stderr
    assert text in one_line(done.stderr)
    assert done.stdout == b""


def test_timeouts_apply_in_order(message: Path) -> None:
    def parsed(*specs: str) -> Timeouts:
        argv = ["send", "--from", "a@x.test", "--to", "b@y.test", str(message)]
        for spec in specs:
            argv += ["--timeout", spec]
        return build_request(build_parser().parse_args(argv)).options.timeouts  # type: ignore[no-any-return]

    assert parsed() == Timeouts()
    both = parsed("all=3", "rcpt=10")
    assert both.rcpt == 10 and both.greeting == 3 and both.final == 3
    assert parsed("rcpt=10", "all=3").rcpt == 3
    assert parsed("RCPT=2.5").rcpt == 2.5


def test_send_help_lists_every_stage_with_its_default() -> None:
    done = mxsend("send", "--help")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "--timeout STAGE=SECONDS" in out and "RFC 5321" in out
    rows = {words[0]: words[1] for words in map(str.split, out.splitlines()) if len(words) > 1}
    for stage, (seconds, _) in STAGES.items():
        assert rows.get(stage) == f"{seconds:g}s", (stage, out)
    assert "70 internal error" in out.replace("\n", " ")


def test_plan_shows_the_effective_timeouts() -> None:
    # A smarthost given as an address needs no DNS: plan can answer with no network at all.
    argv = ["plan", *NOWHERE, "--to", "b@y.test", "--smarthost", "127.0.0.1:2525",
            "--timeout", "all=3", "--timeout", "rcpt=10"]  # fmt: skip
    as_json = mxsend(*argv, "--json")
    assert as_json.returncode == 0, as_json.stderr
    timeouts = json.loads(as_json.stdout)["timeouts"]
    assert timeouts == {stage: (10.0 if stage == "rcpt" else 3.0) for stage in STAGES}
    human = mxsend(*argv)
    assert human.returncode == 0, human.stderr
    [line] = [x for x in human.stdout.decode().splitlines() if x.startswith("timeouts:")]
    assert line.startswith("timeouts: connect 3s, greeting 3s,") and "rcpt 10s" in line
    default = mxsend("plan", *NOWHERE, "--to", "b@y.test", "--smarthost", "127.0.0.1", "--json")
    assert json.loads(default.stdout)["timeouts"] == Timeouts().as_dict()


def test_silent_server_defers_after_the_greeting_deadline(message: Path) -> None:
    with silent_server() as port:
        started = time.monotonic()
        done = mxsend(
            "send", "--smarthost", f"127.0.0.1:{port}", "--tls", "none", "--timeout", "all=3",
            "--from", "a@x.test", "--to", "b@y.test", "--json", str(message),
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stdout + done.stderr
    assert 2.5 <= elapsed < 10, elapsed
    [report] = json.loads(done.stdout)["recipients"]
    assert report["status"] == "deferred" and report["local"] is True


def test_twistd_plugin_takes_timeout(message: Path, tmp_path: Path) -> None:
    with silent_server() as port:
        started = time.monotonic()
        done = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "mxsend", "send", "--smarthost", f"127.0.0.1:{port}",
             "--tls", "none", "--timeout", "all=3", "--from", "a@x.test", "--to", "b@y.test",
             str(message)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stdout + done.stderr
    assert 2.5 <= elapsed < 10, elapsed
    assert "deferred  b@y.test" in done.stdout


def test_twistd_plugin_bad_timeout_is_usage_error(message: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "mxsend", "send", *NOWHERE, "--from", "a@x.test",
         "--to", "b@y.test", "--timeout", "rcpt=0", str(message)],
        capture_output=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 64, done.stdout + done.stderr
    assert b"seconds must be more than 0" in one_line(done.stderr)
