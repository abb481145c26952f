"""A user who cannot write the system queue submits through the daemon's socket: the daemon
takes the uid from the socket, applies the sender rules, and queues with that uid."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxsend.cli.sendmail import host_name

NOBODY = 65534


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """The submission server on a socket any user can reach, and its (root's) queue."""
    public = Path(tempfile.mkdtemp(prefix="mxsend-submit-"))
    public.chmod(0o755)
    path = str(public / "submit.sock")
    queue = tmp_path / "queue"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.submit_server", str(queue), path, host_name()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready and child.stdout.readline().strip() == "ready", "the server did not start"
        yield queue, path, child
    finally:
        child.kill()  # stopped by its PID
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
        shutil.rmtree(public, ignore_errors=True)


# The interpreter may live where only root can reach it (/root/.pyenv): the client starts as
# root, imports what it will need, and then becomes nobody for good before it submits.
_AS_NOBODY = """
import os, sys
import mxsend.cli._submit, mxsend.cli.send, mxsend.message, mxsend.protocol, mxsend.queue
import mxsend.cli._bs, mxsend.cli._common, mxsend.config, mxsend.dkim, select
import email.parser, email.policy, email.utils, email.headerregistry, tempfile
from mxsend.cli.sendmail import main
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
sys.exit(main(["sendmail", *sys.argv[1:]]))
"""


def as_nobody(
    path: str, home: Path, *args: str, stdin: bytes
) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MXSEND_SUBMIT_SOCKET": path,
        "XDG_STATE_HOME": str(home),  # this user's own queue, when no daemon answers
        "HOME": str(home),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def entries(queue: Path) -> list[tuple[dict[str, object], bytes]]:
    return [
        (json.loads(p.read_text()), p.with_suffix(".msg").read_bytes())
        for p in sorted((queue / "entries").glob("*.json"))
    ]


@pytest.fixture
def home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="mxsend-nobody-"))
    os.chown(home, NOBODY, NOBODY)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_a_user_submits_through_the_socket_and_the_entry_is_theirs(
    server: tuple[Path, str, subprocess.Popen[str]], home: Path
) -> None:
    queue, path, _ = server
    message = b"To: b@y.test\nSubject: from nobody\n\nbody\n"
    done = as_nobody(path, home, "-t", "-i", stdin=message)
    assert done.returncode == 0, done.stderr
    [(entry, content)] = entries(queue)
    assert entry["uid"] == NOBODY
    assert entry["sender"] == f"nobody@{host_name()}"
    assert content.endswith(b"To: b@y.test\nSubject: from nobody\n\nbody\n")
    assert b"Date: " in content and b"Message-ID: " in content
    assert not (home / "mxsend").exists()  # nothing in the user's own queue


def test_the_sender_rules_decide_who_may_send_as_whom(
    server: tuple[Path, str, subprocess.Popen[str]], home: Path
) -> None:
    queue, path, _ = server
    refused = as_nobody(path, home, "-f", "boss@x.test", "b@y.test", stdin=b"x\n")
    assert refused.returncode == 77, refused.stderr  # EX_NOPERM
    lines = refused.stderr.decode().splitlines()
    assert len(lines) == 1 and "may not send as <boss@x.test>" in lines[0]
    assert not entries(queue)
    allowed = as_nobody(path, home, "-f", "bot@allowed.test", "b@y.test", stdin=b"x\n")
    assert allowed.returncode == 0, allowed.stderr
    null = as_nobody(path, home, "-f", "<>", "b@y.test", stdin=b"x\n")
    assert null.returncode == 0, null.stderr
    assert sorted(str(e["sender"]) for e, _ in entries(queue)) == ["", "bot@allowed.test"]


def test_the_full_path_also_goes_through_the_socket(
    server: tuple[Path, str, subprocess.Popen[str]], home: Path
) -> None:
    queue, path, _ = server
    message = b'To: "Quoted, Name" <b@y.test>\nSubject: s\n\n' + b"z" * 1200 + b"\n"
    done = as_nobody(path, home, "-t", "-N", "never", stdin=message)
    assert done.returncode == 0, done.stderr
    [(entry, content)] = entries(queue)
    assert entry["uid"] == NOBODY
    listed = entry["recipients"]
    assert isinstance(listed, list)
    [rcpt] = listed
    assert rcpt["address"] == "b@y.test" and rcpt["notify"] == ["NEVER"]
    assert b"\r\n " in content  # the long line folded before it was handed over


def test_with_no_daemon_the_user_s_own_queue_keeps_the_message(
    server: tuple[Path, str, subprocess.Popen[str]], home: Path
) -> None:
    queue, path, child = server
    child.kill()
    child.wait(timeout=30)
    done = as_nobody(path, home, "-odq", "b@y.test", stdin=b"x\n")
    assert done.returncode == 0, done.stderr
    assert not entries(queue)
    assert len(entries(home / "mxsend" / "queue")) == 1


def test_a_request_that_lies_about_its_size_is_refused(
    server: tuple[Path, str, subprocess.Popen[str]],
) -> None:
    queue, path, _ = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"MXSEND-SUBMIT/1\nsender \nrcpt b@y.test\nsize 3\n\nabcdef")
        reply = sock.recv(1024)
    assert reply.startswith(b"554 ")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(1024).startswith(b"554 ")
    assert not entries(queue)


def test_one_user_cannot_hold_every_request_open(
    server: tuple[Path, str, subprocess.Popen[str]],
) -> None:
    queue, path, _ = server
    from mxsend.twisted._submit import MAX_PER_USER

    held = []
    try:
        for _ in range(MAX_PER_USER):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(b"MXSEND-SUBMIT/1\n")  # and then nothing more, for now
            held.append(sock)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.settimeout(30)
            extra.connect(path)
            assert extra.recv(1024).startswith(b"451 ")
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the next one is taken.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"MXSEND-SUBMIT/1\nsender \nrcpt b@y.test\nsize \xc2\xb2\n\nx")
        assert sock.recv(1024).startswith(b"554 ")
    assert not entries(queue)


def test_the_daemon_takes_a_user_s_message_on_its_socket_and_delivers_it(
    tmp_path: Path, home: Path
) -> None:
    import time

    from aiosmtpd.controller import Controller

    received: list[tuple[str, list[str], bytes]] = []

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
            )
            return "250 2.0.0 taken"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = Controller(Sink(), hostname="127.0.0.1", port=port, ready_timeout=10)
    sink.start()
    public = Path(tempfile.mkdtemp(prefix="mxsend-submit-"))
    public.chmod(0o755)
    path = str(public / "submit.sock")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "mxsend", "daemon", "--queue-dir", str(tmp_path / "queue"),
         "--submit-socket", path, "--smarthost", f"127.0.0.1:{port}", "--tls", "none",
         "--poll", "60"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert daemon.stderr is not None
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        done = as_nobody(path, home, "-t", stdin=b"To: b@y.test\nSubject: via socket\n\nhi\n")
        assert done.returncode == 0, done.stderr
        while not received and time.monotonic() < deadline:  # woken, not the 60 s poll
            time.sleep(0.05)
        [(sender, rcpts, data)] = received
        assert (sender, rcpts) == (f"nobody@{host_name()}", ["b@y.test"])
        assert b"Subject: via socket" in data
    finally:
        daemon.terminate()  # stopped by its PID
        daemon.wait(timeout=60)
        if daemon.stderr is not None:
            daemon.stderr.close()
        sink.stop()
        shutil.rmtree(public, ignore_errors=True)


def test_bs_from_a_user_goes_through_the_socket(
    server: tuple[Path, str, subprocess.Popen[str]], home: Path
) -> None:
    queue, path, _ = server
    session = (
        b"EHLO me\r\nMAIL FROM:<boss@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
        b"Subject: s\r\n\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
        b"Subject: t\r\n\r\ny\r\n.\r\nQUIT\r\n"
    )
    done = as_nobody(path, home, "-bs", stdin=session)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.decode()
    assert "5.7.1" in replies and "may not send as <boss@x.test>" in replies  # the rules hold
    assert replies.count("Ok: queued as") == 1
    [(entry, _)] = entries(queue)
    assert entry["uid"] == NOBODY and entry["sender"] == ""
