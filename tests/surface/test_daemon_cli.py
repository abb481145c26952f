"""`mxsend daemon` end to end against the local world: it delivers what is queued as it
arrives (woken by `send --queue`), leaves the deferred for later, serves a queue alone, and
stops on SIGTERM with exit status 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import World
from tests.conftest import run_mxsend as mxsend

MESSAGE = b"From: sender@beta.test\nSubject: daemon\n\nhello\n"


def routed(world: World) -> list[str]:
    return ["--dns", f"127.0.0.1:{world.dns_port}", "--mx-port", str(world.mx_port)]


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "q"


@pytest.fixture
def daemon(world: World, spool: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed below
    child = subprocess.Popen(
        [sys.executable, "-m", "mxsend", "daemon", "--queue-dir", str(spool), *routed(world),
         "--poll", "60", "--log-format", "json"],
        stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"serving" not in (tmp_path / "daemon.log").read_bytes():
            assert child.poll() is None, (tmp_path / "daemon.log").read_bytes()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        log.close()


def submit(spool: Path, message: Path, *recipients: str) -> str:
    to = [arg for r in recipients for arg in ("--to", r)]
    done = mxsend("send", "--queue", "--queue-dir", str(spool), "--from", "sender@beta.test",
                  *to, "--json", str(message))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["queued"][0])


def log_lines(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "daemon.log").read_bytes().splitlines()
    return [json.loads(line) for line in lines if line.startswith(b"{")]


def wait_for(predicate: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_daemon_delivers_as_mail_arrives_and_stops_on_sigterm(
    daemon: subprocess.Popen[bytes], spool: Path, tmp_path: Path
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    started = time.monotonic()
    first = submit(spool, message, "ann@alpha.test")
    # Woken by the submission, not by its 60 s poll.
    wait_for(lambda: any(x.get("id") == first for x in log_lines(tmp_path)), "no delivery")
    assert time.monotonic() - started < 20
    [line] = [x for x in log_lines(tmp_path) if x.get("id") == first]
    assert line["status"] == "sent" and line["recipient"] == "ann@alpha.test"
    busy = submit(spool, message, "busy@gamma.test", "bob@beta.test")
    wait_for(lambda: len([x for x in log_lines(tmp_path) if x.get("id") == busy]) == 2, "busy")
    statuses = {x["recipient"]: x["status"] for x in log_lines(tmp_path) if x.get("id") == busy}
    assert statuses == {"busy@gamma.test": "deferred", "bob@beta.test": "sent"}
    listed = json.loads(mxsend("queue", "list", "--json", "--queue-dir", str(spool)).stdout)
    [entry] = listed["entries"]
    assert entry["id"] == busy
    assert [r["state"] for r in entry["recipients"]] == ["deferred", "delivered"]

    # One daemon per queue.
    second = mxsend("daemon", "--queue-dir", str(spool))
    assert second.returncode == 75 and b"already serves" in second.stderr

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert not any(p.name.endswith(".tmp") for p in (spool / "tmp").iterdir())
    assert os.path.exists(spool / "daemon.pid")
