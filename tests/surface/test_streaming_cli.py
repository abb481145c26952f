"""``mxsend send`` prepares a message without reading it whole: a file is streamed from its
path, standard input is spooled to an anonymous temporary file, and ``-t`` reads only the
header block (Bcc is removed by sending a rewritten header block, then the file from the end
of the original one)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mxsend import message as message_module
from mxsend._exits import Exit
from mxsend.cli import UserError, build_parser, main
from mxsend.cli import send as send_command
from mxsend.cli.send import build_request
from mxsend.message import MAX_HEADER_OCTETS, strip_bcc
from mxsend.protocol import Content
from mxsend.testing import DEFAULT_EXTENSIONS, FakeServer
from tests.conftest import run_mxsend as mxsend

NOWHERE = ["--dns", "127.0.0.1:9"]
HEAD = (
    b"From: Ann <ann@x.test>\r\n"
    b"To: bob@y.test\r\n"
    b"Bcc: hidden@z.test,\r\n"
    b"\tother@z.test\r\n"
    b"Cc: carol@y.test\r\n"
    b"BCC: shout@z.test\r\n"
    b"Subject: streaming\r\n"
    b"\r\n"
)
STRIPPED = HEAD.replace(b"Bcc: hidden@z.test,\r\n\tother@z.test\r\n", b"").replace(
    b"BCC: shout@z.test\r\n", b""
)
# More than a few chunks, with what must pass through untouched: a Bcc and a To in the body,
# dot-stuffing, 8-bit octets, blank lines.
BODY = b"".join(
    b"Bcc: body@z.test\r\nTo: body@y.test\r\n.leading dot\r\n\r\n\xc3\xa9t\xc3\xa9 %06d\r\n" % i
    for i in range(8000)
)
HIDDEN = {"hidden@z.test", "other@z.test", "shout@z.test"}


def build(*argv: str) -> Any:
    return build_request(build_parser().parse_args(["send", *argv]))


def content_of(request: Any) -> Content:
    [message] = request.messages
    assert isinstance(message.content, Content)
    return message.content


def read_all(content: Content) -> bytes:
    return b"".join(content.chunks())


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "m.eml"
    path.write_bytes(HEAD + BODY)
    return path


@contextlib.contextmanager
def fake_smtp(
    *, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
) -> Iterator[tuple[int, FakeServer]]:
    """A :class:`FakeServer` on a socket on 127.0.0.1, for one session, in a thread."""
    server = FakeServer(extensions=tuple(e for e in extensions if not e.startswith("AUTH")))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(60)

    def serve() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as connection:
            connection.sendall(server.greeting())
            while not server.closed and (data := connection.recv(65536)):
                connection.sendall(server.receive(data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), server
    finally:
        listener.close()
        thread.join(timeout=30)


# -- preparation, in process ---------------------------------------------------------------


def test_file_is_streamed_from_its_path(message: Path) -> None:
    content = content_of(build("--from", "a@x.test", "--to", "b@y.test", str(message)))
    assert content.in_memory is None
    assert read_all(content) == HEAD + BODY  # without -t nothing is rewritten, Bcc included
    assert content.info is not None and content.info.raw_size == len(HEAD + BODY)


def test_t_takes_recipients_from_headers_and_strips_bcc_only_there(message: Path) -> None:
    request = build("-t", str(message))
    content = content_of(request)
    assert content.in_memory is None
    assert read_all(content) == STRIPPED + BODY
    envelope = request.messages[0].envelope
    assert str(envelope.sender) == "ann@x.test"  # no --from: the From header
    recipients = {str(r.address) for r in envelope.recipients}
    assert recipients == {"bob@y.test", "carol@y.test", *HIDDEN}
    assert envelope.options.size == len(STRIPPED + BODY)  # already CRLF: canonical is raw
    assert envelope.options.body is not None  # 8-bit octets in the body: BODY=8BITMIME


def test_without_bcc_the_file_is_sent_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "plain.eml"
    path.write_bytes(b"From: a@x.test\nTo: b@y.test\n\nBcc: not a header\n")
    content = content_of(build("-t", str(path)))
    assert read_all(content) == path.read_bytes()


class _CountingFile(io.FileIO):
    read_octets = 0

    def readinto(self, buffer: Any) -> int | None:
        count = super().readinto(buffer)
        _CountingFile.read_octets += count or 0
        return count


def test_t_reads_only_the_header_block_of_a_large_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 50 MB: the header block is read for recipients, the rest only by the streaming scan.
    path = tmp_path / "large.eml"
    line = b"x" * 98 + b"\r\n"
    with path.open("wb") as out:
        out.write(HEAD)
        for _ in range(500):
            out.write(line * 1000)
    size = path.stat().st_size

    def counting_open(name: str, mode: str = "r", *args: Any, **kwargs: Any) -> BinaryIO:
        assert mode == "rb"
        return io.BufferedReader(_CountingFile(name))

    monkeypatch.setattr(message_module, "open", counting_open, raising=False)
    _CountingFile.read_octets = 0
    tracemalloc.start()
    try:
        request = build("-t", str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # What the CLI read itself: the header block and at most one buffer-full after it.
    assert len(HEAD) <= _CountingFile.read_octets <= len(HEAD) + io.DEFAULT_BUFFER_SIZE
    content = content_of(request)
    assert content.in_memory is None
    assert content.info is not None and content.info.raw_size == size - len(HEAD) + len(STRIPPED)
    assert peak < 4 * 1024 * 1024, peak


def test_header_block_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "headless.eml"
    path.write_bytes(b"X-Long: " + b"a" * 100 + (b"\n\ta" * (MAX_HEADER_OCTETS // 3)) + b"\n\n")
    with pytest.raises(UserError) as caught:
        build("-t", str(path))
    assert caught.value.status == Exit.DATAERR
    assert str(caught.value) == "message header block is longer than 1 MiB (no empty line ends it)"
    # Without -t and with --from the header block is not read at all: no limit applies.
    assert content_of(build("--from", "a@x.test", "--to", "b@y.test", str(path))).info


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.reads: list[int] = []
        outer = self

        class Buffer(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                outer.reads.append(-1 if size is None else size)
                return super().read(size)

        self.buffer = Buffer(data)


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BinaryIO]]:
    """Every spool file the CLI makes; closed at the end of the test."""
    made: list[BinaryIO] = []
    real = tempfile.TemporaryFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    yield made
    for file in made:
        file.close()


@pytest.mark.parametrize("name", [[], ["-"]])
def test_stdin_is_spooled_not_held(
    name: list[str], spools: list[BinaryIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = _Stdin(HEAD + BODY)
    monkeypatch.setattr(sys, "stdin", stdin)
    content = content_of(build("-t", *name))
    assert content.in_memory is None
    [spool] = spools
    assert stat.S_IMODE(os.fstat(spool.fileno()).st_mode) == 0o600
    assert set(stdin.reads) == {65536}  # copied a chunk at a time, never read whole
    assert read_all(content) == STRIPPED + BODY
    assert read_all(content) == STRIPPED + BODY  # again, as for a second MX host
    spool.seek(0)
    assert spool.read() == HEAD + BODY  # the spool is the input as given


def test_a_pipe_given_by_name_is_spooled(tmp_path: Path, spools: list[BinaryIO]) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("wb") as out:
            out.write(HEAD + BODY)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        content = content_of(build("-t", str(fifo)))
    finally:
        writer.join(timeout=30)
    assert len(spools) == 1
    assert read_all(content) == STRIPPED + BODY


def test_strip_bcc_keeps_everything_after_the_header_block() -> None:
    assert strip_bcc(HEAD + BODY) == STRIPPED + BODY
    assert strip_bcc(b"\nBcc: x@y\n") == b"\nBcc: x@y\n"  # no headers: all body
    # No body, no final newline; once a line goes, the header lines end in CRLF.
    assert strip_bcc(b"To: a@x\nBcc: b@x") == b"To: a@x\r\n"


# -- errors, from the command line ---------------------------------------------------------


def one_line(stderr: bytes) -> bytes:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"mxsend: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("missing.eml", b"No such file or directory"),
        (".", b"Is a directory"),
    ],
)
def test_unreadable_message_exits_66(target: str, text: bytes, tmp_path: Path) -> None:
    path = str(tmp_path / target)
    for flags in (["--from", "a@x.test", "--to", "b@y.test"], ["-t"]):
        done = mxsend("send", *NOWHERE, *flags, path)
        assert done.returncode == 66, done.stderr
        assert one_line(done.stderr) == b"mxsend: cannot read " + path.encode() + b": " + text
        assert done.stdout == b""


def test_long_line_and_long_header_block_exit_65(tmp_path: Path) -> None:
    long_line = tmp_path / "long.eml"
    long_line.write_bytes(b"Subject: x\n\n" + b"y" * 999 + b"\n")
    done = mxsend("send", *NOWHERE, "--from", "a@x.test", "--to", "b@y.test", str(long_line))
    assert done.returncode == 65, done.stderr
    assert b"longer than 998 octets" in one_line(done.stderr)
    # A first line that is not a field starts the body: the To lines after it are content,
    # not recipients, however many there are (RFC 5322 2.2; Postfix's cleanup reads it so).
    headless = tmp_path / "headless.eml"
    headless.write_bytes(b"z" * 990 + b"\n" + (b"To: b@y.test\n" * (MAX_HEADER_OCTETS // 13)))
    done = mxsend("send", *NOWHERE, "-t", str(headless))
    assert done.returncode == 64, done.stderr
    assert b"no recipients" in one_line(done.stderr)


# -- delivered, end to end -----------------------------------------------------------------


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
def test_delivered_without_bcc_and_body_identical(
    chunking: bool, from_stdin: bool, message: Path
) -> None:
    with fake_smtp() as (port, server):
        done = mxsend(
            "send", "--smarthost", f"127.0.0.1:{port}", "--tls", "none", "-t", "--json",
            *([] if chunking else ["--no-chunking"]), *(["-"] if from_stdin else [str(message)]),
            stdin=HEAD + BODY if from_stdin else None,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {r["recipient"]: r["status"] for r in json.loads(done.stdout)["recipients"]}
    assert statuses == dict.fromkeys({"bob@y.test", "carol@y.test", *HIDDEN}, "delivered")
    [received] = server.messages
    assert received.sender == "ann@x.test"
    assert received.content == STRIPPED + BODY
    head = received.content[: received.content.index(b"\r\n\r\n")]
    assert b"bcc:" not in head.lower() and received.content.endswith(BODY)
    assert "BODY=8BITMIME" in received.mail_parameters
    assert f"SIZE={len(STRIPPED + BODY)}" in received.mail_parameters


def test_internal_error_is_one_line_and_70(
    message: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: Any) -> Any:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(send_command, "build_request", broken)
    assert main(["send", "--to", "b@y.test", str(message)]) == 70
    err = capsys.readouterr().err
    assert err == "mxsend: internal error: RuntimeError: a bug over two lines\n"
    assert main(["send", "-v", "--to", "b@y.test", str(message)]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith(
        "mxsend: internal error: RuntimeError: a bug over two lines\n"
    )


INSIDE_REACTOR = """
import sys
from mxsend import cli
from mxsend.cli import send

async def broken(reactor, request, as_json):
    raise RuntimeError("in the reactor")

send.run = broken
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_internal_error_in_the_reactor_is_one_line_and_70(verbose: bool, message: Path) -> None:
    import subprocess

    argv = ["send", *NOWHERE, "--from", "a@x.test", "--to", "b@y.test", str(message)]
    done = subprocess.run(
        [sys.executable, "-c", INSIDE_REACTOR, *argv, *(["-v"] if verbose else [])],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 70, done.stderr
    last = b"mxsend: internal error: RuntimeError: in the reactor"
    if verbose:
        assert b"Traceback" in done.stderr and done.stderr.strip().endswith(last)
    else:
        assert done.stderr.strip() == last


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n"], ids=["bare-cr", "lf", "crlf"])
def test_bcc_is_removed_whatever_the_line_endings(tmp_path: Path, ending: bytes) -> None:
    from mxsend.protocol import BodyEncoder

    path = tmp_path / "m.eml"
    head = [b"From: a@x.test", b"To: b@y.test", b"X-Note: one\rBcc: cr@z.test", b"Bcc: q@z.test"]
    path.write_bytes(ending.join([*head, b"", b"body"]) + ending)
    request = build("-t", str(path))
    [message] = request.messages
    recipients = [str(r.address) for r in message.envelope.recipients]
    assert sorted(recipients) == ["b@y.test", "cr@z.test", "q@z.test"]
    encoder = BodyEncoder()
    wire = b"".join(encoder.encode(c) for c in message.content.chunks()) + encoder.finish()
    assert b"bcc" not in wire.lower()
    assert wire.endswith(b"\r\n\r\nbody\r\n.\r\n")


@pytest.mark.parametrize(
    ("data", "head"),
    [
        (b"Subject: x\n\nbody\n", b"Subject: x\n\n"),
        (b"Subject: x\r\n\tgoes on\r\n\r\nbody", b"Subject: x\r\n\tgoes on\r\n\r\n"),
        (b"hi there\nSubject: x\n\n", b""),  # no header block at all
        (b"Subject: x\nnot a field\n\nrest", b"Subject: x\n"),
        (b" continues nothing\n\n", b""),
        (b"Subject: x\rBcc: y\r\rbody", b"Subject: x\rBcc: y\r\r"),  # bare CRs end lines
        (b"Subject: x", b"Subject: x"),  # only a field, no line end
        (b"zzz", b""),
        (b"X-Long: " + b"a" * 20000 + b"\n\nbody", b"X-Long: " + b"a" * 20000 + b"\n\n"),
        (b"z" * 20000, b""),  # one long line of output is a body, read no further
    ],
)
def test_header_block_ends_at_the_empty_line_or_the_first_line_that_is_no_field(
    data: bytes, head: bytes
) -> None:
    assert message_module.read_header_block(io.BytesIO(data), "m") == head
