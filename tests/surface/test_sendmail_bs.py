"""``sendmail -bs``: :func:`mxsend.cli._bs.serve` driven end to end through pipes and a
socketpair by real clients (Python's smtplib, swaks ``--pipe``), and the real
``mxsend-sendmail -bs`` queueing into $MXSEND_QUEUE_DIR. Nothing but pipes and loopback."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shlex
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import pytest

from mxsend._exits import Exit
from mxsend.cli._bs import Submission, serve
from mxsend.cli._common import UserError

SENDMAIL = Path(sys.executable).parent / "mxsend-sendmail"
SWAKS = "/usr/bin/swaks"
TIMEOUT = 30  # seconds for any one exchange, session or program

Submit = Callable[[Submission], str]


class Recorder:
    """A fake ``submit``: keeps what it is given, or raises what it is told to."""

    def __init__(self, fail: UserError | None = None) -> None:
        self.fail = fail
        self.submitted: list[tuple[Submission, bytes]] = []

    def __call__(self, submission: Submission) -> str:
        assert submission.content.tell() == 0 and submission.content.seekable()
        if self.fail is not None:
            raise self.fail
        self.submitted.append((submission, submission.content.read()))
        return f"Q{len(self.submitted)}"


@contextmanager
def serving(submit: Submit, **options: Any) -> Iterator[socket.socket]:
    """``serve`` in a thread on one end of a socketpair (as stdin and stdout); the other end
    is the client's. The session must end within TIMEOUT, with status 0."""
    ours, theirs = socket.socketpair()
    ours.settimeout(TIMEOUT)
    status: list[int] = []

    def run() -> None:
        with theirs, theirs.makefile("rb") as stdin, theirs.makefile("wb") as stdout:
            status.append(serve(stdin, stdout, host="mx.test", submit=submit, **options))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield ours
    finally:
        ours.close()
        thread.join(TIMEOUT)
    assert not thread.is_alive() and status == [0]


class SocketSMTP(smtplib.SMTP):
    """smtplib over a socket already connected (one end of a socketpair, or pipes)."""

    def __init__(self, sock: Any) -> None:
        self._given = sock
        super().__init__(timeout=TIMEOUT)
        self.connect("mx.test")

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        return self._given


def test_smtplib_submits_messages_in_one_session() -> None:
    recorder = Recorder()
    with serving(recorder) as sock:
        client = SocketSMTP(sock)
        assert client.ehlo("c.test")[0] == 250
        for name in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING"):
            assert client.has_extn(name), name
        assert client.esmtp_features["size"] == str(50 * 1024 * 1024)
        body = b"Subject: one\r\n\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nend\r\n"
        assert client.sendmail("a@x.test", ["b@y.test", "c@y.test"], body) == {}
        eight = "Subject: two\r\n\r\ncaf\u00e9\r\n".encode()
        assert client.sendmail("<>", ["d@y.test"], eight, mail_options=["BODY=8BITMIME"]) == {}
        client.quit()
    (first, one), (second, two) = recorder.submitted
    assert (first.sender, first.recipients) == ("a@x.test", ("b@y.test", "c@y.test"))
    assert one == body  # smtplib stuffed the dots; serve() hands them back un-stuffed
    assert not first.eight_bit and not first.smtputf8
    assert (second.sender, second.recipients, second.eight_bit) == (None, ("d@y.test",), True)
    assert two == eight


def test_smtplib_smtputf8_and_refused_recipients() -> None:
    recorder = Recorder()
    with serving(recorder) as sock:
        client = SocketSMTP(sock)
        client.ehlo("c.test")
        refused = client.sendmail(
            "\u00e9@x.test", ["b@y.test", "<bad"], b"x\r\n", mail_options=["SMTPUTF8"]
        )
        assert list(refused) == ["<bad"] and refused["<bad"][0] == 501
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@x.test", ["\u00fc@y.test"], b"x\r\n")  # UTF-8 needs SMTPUTF8
        client.quit()
    [(submission, content)] = recorder.submitted
    assert submission.smtputf8 and submission.sender == "\u00e9@x.test"
    assert submission.recipients == ("b@y.test",) and content == b"x\r\n"


@pytest.mark.parametrize(
    ("status", "code", "enhanced"),
    [
        (Exit.TEMPFAIL, 451, b"4.3.0"),
        (Exit.CANTCREAT, 451, b"4.3.0"),
        (Exit.CONFIG, 451, b"4.3.0"),
        (Exit.DATAERR, 554, b"5.6.0"),
        (Exit.USAGE, 554, b"5.5.4"),
    ],
)
def test_a_refused_submission_is_a_reply_and_the_session_goes_on(
    status: Exit, code: int, enhanced: bytes
) -> None:
    recorder = Recorder(UserError(status, "queue says no\nsecond line"))
    with serving(recorder) as sock:
        client = SocketSMTP(sock)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
        assert refused.value.smtp_code == code
        assert refused.value.smtp_error == enhanced + b" queue says no second line"
        assert client.noop()[0] == 250
        client.quit()
    assert recorder.submitted == []


def test_a_message_over_the_size_limit_is_refused_and_the_session_goes_on() -> None:
    recorder = Recorder()
    with serving(recorder, max_size=100) as sock:
        client = SocketSMTP(sock)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE= declared by smtplib
            client.sendmail("a@x.test", ["b@y.test"], b"x" * 99 + b"\r\n")
        assert refused.value.smtp_code == 552
        client.rset()
        # Undeclared, it is refused once the content passes the limit; the rest is dropped.
        client.mail("a@x.test")
        client.rcpt("b@y.test")
        assert client.data(b"y" * 60 + b"\r\n" + b"z" * 60 + b"\r\n")[0] == 552
        assert client.sendmail("a@x.test", ["b@y.test"], b"small\r\n") == {}
        client.quit()
    assert [content for _, content in recorder.submitted] == [b"small\r\n"]


def test_the_reply_waits_until_the_message_is_submitted() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(submission: Submission) -> str:
        entered.set()
        assert release.wait(TIMEOUT)
        return "Q1"

    with serving(slow) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        sock.sendall(b"x\r\n.\r\n")
        assert entered.wait(TIMEOUT)
        lines = [reader.readline() for _ in range(10)]  # EHLO (7), MAIL, RCPT, 354
        assert lines[-1].startswith(b"354 ")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # no 250 before the message is safe (RFC 5321 6.1)
        sock.settimeout(TIMEOUT)
        release.set()
        assert reader.readline() == b"250 2.0.0 Ok: queued as Q1\r\n"
        sock.sendall(b"QUIT\r\n")
        assert reader.readline() == b"221 2.0.0 Bye\r\n"


def test_each_command_is_answered_without_waiting_for_more_input() -> None:
    # Partial reads: a reply comes for what has arrived, while the pipe stays open.
    with serving(Recorder()) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for command, reply in [
            (b"NOOP\r\n", b"250 2.0.0 Ok\r\n"),
            (b"HELO c\r\n", b"250 mx.test\r\n"),
        ]:
            sock.sendall(command)
            assert reader.readline() == reply
        sock.sendall(b"QUIT\r\n")
        assert reader.readline() == b"221 2.0.0 Bye\r\n"


def test_the_end_of_input_drops_an_unfinished_message() -> None:
    recorder = Recorder()
    with serving(recorder) as sock:
        sock.sendall(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nhalf\r\n")
        sock.shutdown(socket.SHUT_WR)
        replies = sock.makefile("rb").read()  # to the end: serve() returned
    assert replies.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert recorder.submitted == []


def test_serve_over_plain_file_objects() -> None:
    # A stream without read1 or a descriptor (read() is then used), and all of it at once.
    session = (
        b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 3\r\nabcBDAT 3 LAST\r\n"
        b"d\r\nQUIT\r\n"
    )

    class Plain(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            piece, self.data = self.data[:7], self.data[7:]  # short reads
            return piece

        def fileno(self) -> int:
            raise OSError("no descriptor")

    recorder = Recorder()
    out = io.BytesIO()
    stdin: BinaryIO = Plain(session)  # type: ignore[assignment]
    assert serve(stdin, out, host="mx.test", submit=recorder) == 0
    assert out.getvalue().endswith(b"250 2.0.0 Ok: 6 bytes queued as Q1\r\n221 2.0.0 Bye\r\n")
    assert [content for _, content in recorder.submitted] == [b"abcd\r\n"]


def test_serve_reads_a_raw_descriptor_with_os_read() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n")
    os.close(write_end)  # then the end of input, without QUIT
    recorder = Recorder()
    out = io.BytesIO()
    with open(read_end, "rb", buffering=0) as stdin:  # a FileIO: no read1
        assert serve(stdin, out, host="mx.test", submit=recorder) == 0
    assert out.getvalue().endswith(b"250 2.0.0 Ok: queued as Q1\r\n")
    assert [content for _, content in recorder.submitted] == [b"x\r\n"]


def test_unreadable_input_ends_the_session() -> None:
    class Broken(io.BytesIO):
        def read1(self, size: int | None = -1, /) -> bytes:
            raise OSError(5, "Input/output error")

    out = io.BytesIO()
    assert serve(Broken(), out, host="mx.test", submit=Recorder()) == 0
    assert out.getvalue() == b"220 mx.test ESMTP mxsend\r\n"


def test_a_spool_that_cannot_be_written_refuses_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("mxsend.cli._bs.tempfile.TemporaryFile", Full)
    recorder = Recorder()
    out = io.BytesIO()
    session = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n"
    assert serve(io.BytesIO(session), out, host="mx.test", submit=recorder) == 0
    assert out.getvalue().endswith(
        b"451 4.3.0 cannot spool: No space left on device\r\n250 2.0.0 Ok\r\n"
    )
    assert recorder.submitted == []


def _enospc(*args: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


class Buffered(io.BytesIO):
    """A spool whose buffer meets a full disk at flush (or seek), and at close once."""

    failing = "flush"

    def flush(self) -> None:
        if self.failing == "flush":
            _enospc()

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if self.failing == "seek":
            _enospc()
        return super().seek(offset, whence)

    def close(self) -> None:
        if not self.closed:
            super().close()
            _enospc()  # best effort: ignored


class Unseekable(Buffered):
    failing = "seek"


@pytest.mark.parametrize("spool", [_enospc, Buffered, Unseekable], ids=["create", "flush", "seek"])
@pytest.mark.parametrize("bdat", [False, True], ids=["data", "bdat"])
def test_a_spool_that_fails_outside_write_refuses_the_message(
    monkeypatch: pytest.MonkeyPatch, spool: Callable[[], Any], bdat: bool
) -> None:
    monkeypatch.setattr("mxsend.cli._bs.tempfile.TemporaryFile", spool)
    recorder = Recorder()
    out = io.BytesIO()
    content = b"BDAT 3 LAST\r\nx\r\n" if bdat else b"DATA\r\nx\r\n.\r\n"
    session = b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\n" + content + b"NOOP\r\n"
    assert serve(io.BytesIO(session), out, host="mx.test", submit=recorder) == 0
    assert out.getvalue().endswith(
        b"451 4.3.0 cannot spool: No space left on device\r\n250 2.0.0 Ok\r\n"
    )
    assert recorder.submitted == []


def test_a_bdat_line_refused_for_a_tab_does_not_run_its_chunk() -> None:
    chunk = b"RCPT TO:<attacker@evil.test>\r\nBDAT 8 LAST\r\nforged\r\n"
    envelope = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
    session = envelope + b"BDAT %d LAST\t\r\n" % len(chunk) + chunk
    recorder = Recorder()
    out = io.BytesIO()
    assert serve(io.BytesIO(session), out, host="mx.test", submit=recorder) == 0
    assert out.getvalue().endswith(b"250 2.1.5 Ok\r\n521 5.5.4 Syntax: BDAT count [LAST]\r\n")
    assert recorder.submitted == []


def test_a_refusal_without_words_still_says_something() -> None:
    out = io.BytesIO()
    stdin = io.BytesIO(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n")
    recorder = Recorder(UserError(Exit.TEMPFAIL, "\n\u00e9" + "long " * 100))
    assert serve(stdin, out, host="mx.test", submit=recorder) == 0
    [last] = out.getvalue().splitlines()[-1:]
    assert last.startswith(b"451 4.3.0 ?long long") and last.endswith(b"...")
    assert len(last) == len("451 4.3.0 ") + 200
    out = io.BytesIO()
    stdin.seek(0)
    assert serve(stdin, out, host="mx.test", submit=Recorder(UserError(Exit.DATAERR, ""))) == 0
    assert out.getvalue().endswith(b"554 5.6.0 Error\r\n")


def test_a_bug_in_submit_is_a_451_then_raised() -> None:
    def broken(submission: Submission) -> str:
        raise RuntimeError("bug")

    out = io.BytesIO()
    stdin = io.BytesIO(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n")
    with pytest.raises(RuntimeError):
        serve(stdin, out, host="mx.test", submit=broken)
    assert out.getvalue().endswith(b"451 4.3.0 Error: internal error\r\n")


def test_a_client_that_stops_reading_ends_the_session() -> None:
    class Closed(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    stdin = io.BytesIO(b"EHLO c\r\n" * 10)
    assert serve(stdin, Closed(), host="mx.test", submit=Recorder()) == 0


# -- swaks --pipe, with serve() in a child process --------------------------------------

SCRIPT = """
import json, pathlib, sys
from mxsend._exits import Exit
from mxsend.cli._bs import serve
from mxsend.cli._common import UserError

folder = pathlib.Path(sys.argv[1])

def submit(submission):
    if "tempfail@y.test" in submission.recipients:
        raise UserError(Exit.TEMPFAIL, "the queue is busy")
    number = len(list(folder.glob("*.json")))
    (folder / f"{number}.msg").write_bytes(submission.content.read())
    record = {"sender": submission.sender, "recipients": list(submission.recipients),
              "eight_bit": submission.eight_bit, "smtputf8": submission.smtputf8}
    (folder / f"{number}.json").write_text(json.dumps(record))
    return f"ID{number}"

sys.exit(serve(sys.stdin.buffer, sys.stdout.buffer, host="mx.test", submit=submit))
"""


@pytest.fixture
def server_command(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "submitted"
    folder.mkdir()
    return shlex.join([sys.executable, str(script), str(folder)]), folder


def submitted(folder: Path) -> list[tuple[dict[str, Any], bytes]]:
    return [
        (json.loads(record.read_text()), record.with_suffix(".msg").read_bytes())
        for record in sorted(folder.glob("*.json"))
    ]


def swaks(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWAKS, "--pipe", command, "--helo", "c.test", "--timeout", "20", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("pipeline", [False, True], ids=["lockstep", "pipelined"])
def test_swaks_submits_through_a_pipe(server_command: tuple[str, Path], pipeline: bool) -> None:
    command, folder = server_command
    data = "Subject: swaks\n\n.leading dot\nbody"  # swaks adds the line end, then "."
    flags = ["--pipeline"] if pipeline else []
    done = swaks(command, "--from", "a@x.test", "--to", "b@y.test,c@y.test", "--data", data, *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0 Ok: queued as ID0" in done.stdout
    [(record, content)] = submitted(folder)
    assert record["sender"] == "a@x.test" and record["recipients"] == ["b@y.test", "c@y.test"]
    assert content == b"Subject: swaks\r\n\r\n.leading dot\r\nbody\r\n"


def test_swaks_sees_a_temporary_refusal(server_command: tuple[str, Path]) -> None:
    command, folder = server_command
    done = swaks(command, "--from", "a@x.test", "--to", "tempfail@y.test", "--data", "x\n")
    assert done.returncode == 26, done.stdout  # "server did not accept mail following data"
    assert "451 4.3.0 the queue is busy" in done.stdout
    assert submitted(folder) == []


def test_swaks_null_sender_and_a_refused_recipient(server_command: tuple[str, Path]) -> None:
    command, folder = server_command
    done = swaks(command, "--from", "<>", "--to", "bad address@y.test", "--data", "x\n")
    assert done.returncode == 24, done.stdout  # "no RCPTs accepted"
    assert "501 5.1.3 Bad recipient address syntax" in done.stdout
    done = swaks(command, "--from", "<>", "--to", "b@y.test", "--data", "x\n")
    assert done.returncode == 0, done.stdout
    [(record, _)] = submitted(folder)
    assert record["sender"] is None


SMUGGLING = (
    b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
    b"Subject: real\r\n\r\nhello\r\n%s"
    b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"
)


@pytest.mark.parametrize("end", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"], ids=repr)
def test_smuggling_through_a_pipe_queues_nothing(
    server_command: tuple[str, Path], end: bytes
) -> None:
    command, folder = server_command
    done = subprocess.run(
        shlex.split(command), input=SMUGGLING % end, capture_output=True, timeout=TIMEOUT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    replies = done.stdout.split(b"\r\n")
    after_data = replies[replies.index(b"354 End data with <CR><LF>.<CR><LF>") + 1 :]
    assert after_data[0].startswith(b"550 5.5.2 mx.test Error: bare <")
    assert after_data[1:] == [b"221 2.0.0 Bye", b""]
    assert submitted(folder) == []


# -- the real command: mxsend-sendmail -bs, queueing into $MXSEND_QUEUE_DIR ----------------


def sendmail_bs(queue: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(queue)}
    return subprocess.run(
        [str(SENDMAIL), "-bs"], input=stdin, env=env, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip


def entries(queue: Path) -> list[tuple[dict[str, Any], bytes]]:
    """Each queued entry's state file and message file."""
    return [
        (json.loads(state.read_text()), state.with_suffix(".msg").read_bytes())
        for state in sorted((queue / "entries").glob("*.json"))
    ]


def test_sendmail_bs_queues_a_pipelined_session(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    session = (
        b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\n"
        b"DATA\r\nSubject: bs\r\n\r\n..dotted\r\nbody\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<d@y.test>\r\nBDAT 16 LAST\r\nSubject: two\r\n\r\n"
        b"QUIT\r\n"
    )
    done = sendmail_bs(queue, session)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().split("\r\n")
    assert lines[0].startswith("220 ") and lines[-2:] == ["221 2.0.0 Bye", ""]
    queued = [line for line in lines if line.startswith("250 2.0.0 Ok: ") and "queued as" in line]
    assert len(queued) == 2, lines
    found = {entry["sender"]: (entry, content) for entry, content in entries(queue)}
    assert sorted(found) == ["", "a@x.test"]
    first, content = found["a@x.test"]
    assert [r["address"] for r in first["recipients"]] == ["b@y.test", "c@y.test"]
    assert b"Subject: bs\r\n" in content and content.endswith(b"\r\n.dotted\r\nbody\r\n")
    second, _ = found[""]
    assert [r["address"] for r in second["recipients"]] == ["d@y.test"]


def test_sendmail_bs_with_smtplib_over_its_pipes(tmp_path: Path) -> None:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(tmp_path / "queue")}
    with subprocess.Popen(
        [str(SENDMAIL), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        client = SocketSMTP(PipeSocket(child.stdin, child.stdout))
        assert client.ehlo("c.test")[0] == 250 and client.has_extn("pipelining")
        assert client.sendmail("a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nhi\r\n") == {}
        assert client.quit()[0] == 221
        assert child.wait(TIMEOUT) == 0
    [(entry, content)] = entries(tmp_path / "queue")
    assert entry["sender"] == "a@x.test" and content.endswith(b"\r\n\r\nhi\r\n")


def test_sendmail_bs_smuggling_queues_nothing(tmp_path: Path) -> None:
    done = sendmail_bs(tmp_path / "queue", SMUGGLING % b"\n.\n")
    assert done.returncode == 0, done.stderr
    assert b"550 5.5.2 " in done.stdout and b"Error: bare <LF> received" in done.stdout
    assert not (tmp_path / "queue" / "entries").exists() or entries(tmp_path / "queue") == []


class PipeSocket:
    """What smtplib needs of a socket, over a child's standard input and output."""

    def __init__(self, writer: IO[bytes], reader: IO[bytes]) -> None:
        self.writer, self.reader = writer, reader

    def sendall(self, data: bytes) -> None:
        self.writer.write(data)
        self.writer.flush()

    def makefile(self, mode: str) -> IO[bytes]:
        return self.reader

    def close(self) -> None:
        self.writer.close()


def test_a_client_that_sends_nothing_is_timed_out(tmp_path: Path) -> None:
    from mxsend.cli._bs import serve

    read, write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write, b"EHLO me\r\nMAIL FROM:<a@x.test>\r\n")  # and then nothing, pipe open
    with os.fdopen(read, "rb") as stdin, os.fdopen(out_write, "wb") as stdout:
        status = serve(stdin, stdout, host="h.test", submit=lambda m: "never", timeout=0.5)
    os.close(write)
    with os.fdopen(out_read, "rb") as replies:
        said = replies.read()
    assert status == 0
    assert said.splitlines()[-1] == b"421 4.4.2 h.test Error: timeout exceeded"


# -- deadlines, not idle timers (RFC 5321 4.5.3.2.7), over pipes ----------------------------


def _serve_pipes(
    feed: Callable[[int], None], timeout: float, recorder: Recorder
) -> tuple[float, bytes]:
    """serve() on two pipes, ``feed(fd)`` writing its input from a thread; how long it took
    and what it said."""
    read, write = os.pipe()
    out_read, out_write = os.pipe()
    feeder = threading.Thread(target=feed, args=(write,), daemon=True)
    feeder.start()
    start = time.monotonic()
    with os.fdopen(read, "rb") as stdin, os.fdopen(out_write, "wb") as stdout:
        assert serve(stdin, stdout, host="h.test", submit=recorder, timeout=timeout) == 0
    elapsed = time.monotonic() - start
    feeder.join(TIMEOUT)
    os.close(write)
    with os.fdopen(out_read, "rb") as replies:
        return elapsed, replies.read()


def _trickle(first: bytes, then: bytes, seconds: float = 4.0) -> Callable[[int], None]:
    def feed(fd: int) -> None:
        os.write(fd, first)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            time.sleep(0.05)
            try:
                os.write(fd, then)
            except BrokenPipeError:
                return

    return feed


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (b"EHLO me\r\nNOOP ", b"x"),  # a command that never ends
        (b"EHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n", b"line\r\n"),
        (b"EHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nBDAT 100000\r\n", b"line\r\n"),
    ],
    ids=["command", "data", "bdat"],
)
def test_a_client_that_trickles_is_timed_out(first: bytes, then: bytes) -> None:
    # Every read comes well within the timeout, yet the session ends at the deadline.
    recorder = Recorder()
    elapsed, said = _serve_pipes(_trickle(first, then), 0.5, recorder)
    assert said.splitlines()[-1] == b"421 4.4.2 h.test Error: timeout exceeded"
    assert elapsed < 2.5  # not the trickle's 4 s
    assert recorder.submitted == []


def test_content_that_keeps_coming_keeps_the_session() -> None:
    # Each 64 KiB of content gives another timeout: 2 s of content with a 1 s timeout.
    block = (b"y" * 998 + b"\r\n") * 66  # just over 64 KiB

    def feed(fd: int) -> None:
        os.write(fd, b"EHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        for _ in range(5):
            time.sleep(0.4)
            os.write(fd, block)
        os.write(fd, b".\r\nQUIT\r\n")

    recorder = Recorder()
    elapsed, said = _serve_pipes(feed, 1.0, recorder)
    assert said.endswith(b"250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n")
    assert elapsed > 1.0 and [content for _, content in recorder.submitted] == [block * 5]


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


@pytest.mark.parametrize("message", [False, True], ids=["commands", "message"])
def test_a_client_that_never_reads_its_replies_is_left(message: bool) -> None:
    # RFC 2920 lets a client pipeline; one that never reads must not hold serve() for ever.
    read, write = os.pipe()
    out_read, out_write = os.pipe()
    fcntl.fcntl(out_write, F_SETPIPE_SZ, 4096)  # room for a few replies, not 100 EHLOs
    session = b"EHLO c\r\n" * 100
    if message:  # its 250 could never be read: it is not submitted
        session += b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n"
    os.write(write, session)
    recorder = Recorder()
    status: list[int] = []

    def run() -> None:
        with os.fdopen(read, "rb") as stdin, os.fdopen(out_write, "wb") as stdout:
            status.append(serve(stdin, stdout, host="h.test", submit=recorder, timeout=0.5))

    thread = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(5)
    elapsed = time.monotonic() - start
    os.close(out_read)  # unblocks a serve() stuck in write (EPIPE), so the thread ends
    thread.join(TIMEOUT)
    os.close(write)
    assert elapsed < 2.5 and status == [0]
    assert recorder.submitted == []
