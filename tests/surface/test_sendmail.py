"""mxsend-sendmail: the sendmail command line as cron, mail(1), PHP and git call it."""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import smtp_sink

SENDMAIL = Path(sys.executable).parent / "mxsend-sendmail"


def sendmail(
    queue: Path, *args: str, stdin: bytes, program: Path = SENDMAIL
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(queue)}
    return subprocess.run(
        [str(program), *args], input=stdin, env=env, capture_output=True, timeout=60, check=False
    )


def entries(queue: Path) -> list[tuple[dict[str, object], bytes]]:
    """Each queued entry's state file and message file."""
    found = []
    for state in sorted((queue / "entries").glob("*.json")):
        found.append((json.loads(state.read_text()), state.with_suffix(".msg").read_bytes()))
    return found


def recipients(entry: dict[str, object]) -> list[object]:
    listed = entry["recipients"]
    assert isinstance(listed, list)
    return [r["address"] for r in listed]


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    return tmp_path / "queue"


def test_php_mail_with_t_and_i(queue: Path) -> None:
    # PHP's mail(): sendmail -t -i; recipients from To, Cc and Bcc; Bcc removed.
    message = b"To: b@y.test\nCc: c@y.test\nBcc: hidden@z.test\nSubject: hi\n\nbody\n.\nend\n"
    done = sendmail(queue, "-t", "-i", "-f", "a@x.test", "-odq", stdin=message)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [(entry, content)] = entries(queue)
    assert entry["sender"] == "a@x.test"
    assert recipients(entry) == ["b@y.test", "c@y.test", "hidden@z.test"]
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["Bcc"] is None and b"hidden" not in content
    # Date, Message-ID and From added (RFC 5322 3.6); the rest byte for byte, a lone dot kept.
    assert parsed["Date"] and parsed["Message-ID"] and parsed["From"] == "a@x.test"
    # Bcc's removal leaves the header lines in CRLF; the body is not touched.
    assert content.replace(b"\r\n", b"\n").endswith(
        b"To: b@y.test\nCc: c@y.test\nSubject: hi\n\nbody\n.\nend\n"
    )


def test_cron_flags_and_the_null_sender(queue: Path) -> None:
    message = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@h> job\n\noutput\n"
    args = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-f", "<>", "root"]
    done = sendmail(queue, *args, "-odq", stdin=message)
    assert done.returncode == 0, done.stderr
    [(entry, content)] = entries(queue)
    assert entry["sender"] == ""  # the null sender <> (cronie#170)
    [recipient] = recipients(entry)
    assert isinstance(recipient, str) and recipient.startswith("root@")  # qualified, as Postfix
    assert content.count(b"From:") == 1  # an existing From is kept as it is


def test_full_name_goes_into_an_added_from(queue: Path) -> None:
    done = sendmail(queue, "-F", "Build Bot", "-f", "bot@x.test", "-odq", "b@y.test", stdin=b"hi\n")
    assert done.returncode == 0, done.stderr
    [(_, content)] = entries(queue)
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["From"] == "Build Bot <bot@x.test>"
    assert parsed.get_content() == "hi\n"  # no header block: the body keeps its first line


def test_a_lone_dot_ends_the_input_without_i(queue: Path) -> None:
    message = b"Subject: dots\n\nkept\n.\nnot part of it\n"
    assert sendmail(queue, "-odq", "b@y.test", stdin=message).returncode == 0
    [(_, content)] = entries(queue)
    assert content.endswith(b"\n\nkept\n") and b"not part" not in content


def test_bcc_only_message_keeps_no_empty_to(queue: Path) -> None:
    done = sendmail(queue, "-t", "-odq", stdin=b"Bcc: b@y.test\nSubject: s\n\nx\n")
    assert done.returncode == 0, done.stderr
    [(entry, content)] = entries(queue)
    assert recipients(entry) == ["b@y.test"]
    assert b"Bcc" not in content and b"To:" not in content


@pytest.mark.parametrize(
    ("args", "message", "status", "says"),
    [
        (["-Y", "b@y.test"], b"x\n", 64, "unknown option -Y"),
        (["-f"], b"x\n", 64, "needs a value"),
        (["-t"], b"Subject: none\n\nx\n", 64, "no recipients"),
        (["-t"], b"To: not an address at all\n\nx\n", 65, "header To:"),
        (["b@y.test"], b"From: \n\nx\n", 65, "header From:"),
        (["bad address@y.test"], b"x\n", 65, ""),
    ],
)
def test_bad_input_is_one_line_and_queues_nothing(
    queue: Path, args: list[str], message: bytes, status: int, says: str
) -> None:
    done = sendmail(queue, "-odq", *args, stdin=message)
    assert done.returncode == status, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in lines[0]
    assert not entries(queue) if (queue / "entries").exists() else True


def test_names_mailq_and_newaliases(queue: Path, tmp_path: Path) -> None:
    assert sendmail(queue, "-odq", "b@y.test", stdin=b"x\n").returncode == 0
    for name in ("mailq", "newaliases"):
        (tmp_path / name).symlink_to(SENDMAIL)
    listed = sendmail(queue, stdin=b"", program=tmp_path / "mailq")
    assert listed.returncode == 0 and b"b@y.test" in listed.stdout
    assert sendmail(queue, "-bp", stdin=b"").stdout == listed.stdout
    aliases = sendmail(queue, stdin=b"", program=tmp_path / "newaliases")
    assert aliases.returncode == 0 and b"nothing to rebuild" in aliases.stderr


def test_a_plain_submission_imports_no_twisted(queue: Path) -> None:
    code = (
        "import sys; from mxsend.cli.sendmail import main; "
        "status = main(['sendmail', '-odq', 'b@y.test']); "
        "loaded = {'twisted', 'OpenSSL', 'asyncio'} & set(sys.modules); "
        "print(status, sorted(loaded))"
    )
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(queue)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=b"x\n",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.decode().split() == ["0", "[]"], done.stderr


def test_queued_by_sendmail_then_delivered_by_a_queue_run(queue: Path) -> None:
    message = b"To: b@y.test\nSubject: hi\n\nbody\n"
    assert sendmail(queue, "-t", "-i", "-f", "a@x.test", "-odq", stdin=message).returncode == 0
    dump = Path(tempfile.mkdtemp(prefix="mxsend-sink-"))  # smtp-sink writes as nobody
    try:
        with smtp_sink(dump=dump) as port:
            run = subprocess.run(
                [sys.executable, "-m", "mxsend", "queue", "run", "--queue-dir", str(queue),
                 "--smarthost", f"127.0.0.1:{port}", "--tls", "none"],
                capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        saved = [p.read_bytes() for p in dump.iterdir()]
    finally:
        shutil.rmtree(dump)
    assert run.returncode == 0, run.stderr
    [received] = saved
    assert b"\nDate: " in received and b"\nMessage-ID: <" in received
    assert received.rstrip().endswith(b"Subject: hi\n\nbody")
    assert not entries(queue)


def test_a_queue_that_cannot_be_used_is_a_temporary_failure(tmp_path: Path) -> None:
    # 75 only when the message is not safe (OpenSMTPD#840: never after it is).
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    done = sendmail(blocked / "queue", "-odq", "b@y.test", stdin=b"x\n")
    assert done.returncode == 75 and len(done.stderr.splitlines()) == 1, done.stderr


def install(prefix: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxsend", "install-sendmail", "--prefix", str(prefix), *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_install_sendmail_links_the_three_names(tmp_path: Path, queue: Path) -> None:
    done = install(tmp_path)
    assert done.returncode == 0, done.stderr
    links = [tmp_path / "sbin/sendmail", tmp_path / "bin/mailq", tmp_path / "bin/newaliases"]
    assert all(link.is_symlink() and link.resolve() == SENDMAIL.resolve() for link in links)
    # Through the link, it is sendmail; again, nothing changes.
    assert sendmail(queue, "-odq", "b@y.test", stdin=b"x\n", program=links[0]).returncode == 0
    assert len(entries(queue)) == 1
    assert install(tmp_path).returncode == 0


def test_install_sendmail_leaves_an_existing_file_alone_without_force(tmp_path: Path) -> None:
    existing = tmp_path / "sbin" / "sendmail"
    existing.parent.mkdir()
    existing.write_text("#!/bin/sh\n# another MTA\n")
    done = install(tmp_path)
    assert done.returncode == 73 and "--force" in done.stderr and len(done.stderr.splitlines()) == 1
    assert existing.read_text().endswith("another MTA\n") and not (tmp_path / "bin").exists()
    assert install(tmp_path, "--force").returncode == 0
    assert existing.is_symlink()


def test_a_full_name_cannot_inject_a_header(queue: Path) -> None:
    done = sendmail(queue, "-odq", "-F", "Evil\r\nBcc: x@z.test", "b@y.test", stdin=b"x\n")
    assert done.returncode == 64 and b"-F" in done.stderr
    assert not (queue / "entries").exists() or not entries(queue)


def test_resent_fields_give_the_recipients_and_resent_bcc_goes(queue: Path) -> None:
    message = (
        b"Resent-To: r@y.test\nResent-Bcc: hidden@z.test\nTo: first@y.test\nSubject: again\n\nx\n"
    )
    assert sendmail(queue, "-t", "-odq", stdin=message).returncode == 0
    [(entry, content)] = entries(queue)
    assert recipients(entry) == ["r@y.test", "hidden@z.test"]  # RFC 5322 3.6.6
    assert b"hidden" not in content and b"To: first@y.test" in content


def test_large_output_with_no_header_block_is_queued(queue: Path) -> None:
    # `command | sendmail user`: no headers, no empty line, megabytes of output.
    output = b"".join(b"line %d\n" % n for n in range(300_000))
    assert len(output) > 2 << 20
    for stdin in (output, b"Subject: cron\n" + output):
        done = sendmail(queue, "-i", "-odq", "root", stdin=stdin)
        assert done.returncode == 0, done.stderr
    contents = sorted(content for _, content in entries(queue))
    assert all(c.replace(b"\r\n", b"\n").endswith(output) for c in contents)
    assert [c.count(b"\nline 0\n") + c.startswith(b"line 0\n") for c in contents] == [1, 1]


@pytest.mark.parametrize(
    "field", [b"Reply-To: <@", b"To: a@[", b"From: ", b"Resent-Bcc: not an address at all"]
)
def test_broken_address_fields_are_one_line_not_a_traceback(queue: Path, field: bytes) -> None:
    done = sendmail(queue, "-odq", "b@y.test", stdin=field + b"\n\nx\n")
    assert done.returncode == 65, done.stderr
    [line] = done.stderr.decode().splitlines()
    assert "header" in line and "Traceback" not in line


def test_closed_standard_input_and_a_malformed_sender(queue: Path) -> None:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(queue)}
    closed = subprocess.run(
        f"exec {SENDMAIL} -odq b@y.test <&-", shell=True, env=env, capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert closed.returncode == 66 and len(closed.stderr.splitlines()) == 1, closed.stderr
    bad = sendmail(queue, "-odq", "-f", "a@x.test>", "b@y.test", stdin=b"x\n")
    assert bad.returncode == 65 and b"not an address" in bad.stderr


def test_a_line_over_998_octets_is_folded_not_refused(queue: Path) -> None:
    # Cron output with one long line: folded with CRLF SP as Postfix does, not lost.
    long = b"a" * 2500
    done = sendmail(queue, "-odq", "root", stdin=b"Subject: c\n\n" + long + b"\nend\n")
    assert done.returncode == 0, done.stderr
    [(_, content)] = entries(queue)
    assert max(map(len, content.split(b"\r\n"))) <= 998
    assert content.replace(b"\r\n ", b"").endswith(b"\r\n\r\n" + long + b"\r\nend\r\n")


def test_one_argument_may_list_several_recipients(queue: Path) -> None:
    # Debian's cron passes MAILTO=ops@x.test,root as one argument; Postfix reads each
    # argument as an address list. "-o i" is "-oi", as getopt's "o:" reads it.
    args = ["-odq", "-o", "i", "ops@x.test,root", "Pat <p@y.test>"]
    done = sendmail(queue, *args, stdin=b"Subject: s\n\nx\n.\nmore\n")
    assert done.returncode == 0, done.stderr
    [(entry, content)] = entries(queue)
    listed = recipients(entry)
    assert listed[0] == "ops@x.test" and str(listed[1]).startswith("root@")
    assert listed[2:] == ["p@y.test"]
    assert content.endswith(b"x\n.\nmore\n")  # -o i: the lone dot did not end it


def test_a_bs_message_taken_with_smtputf8_is_queued_with_it(queue: Path) -> None:
    # RFC 6531 3.2: a message accepted with SMTPUTF8 must go on with it (or bounce).
    session = (
        "EHLO client.test\r\nMAIL FROM:<a@x.test> SMTPUTF8\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
        "Subject: caf\u00e9\r\n\r\nx\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\n"
        "DATA\r\nSubject: plain\r\n\r\ny\r\n.\r\nQUIT\r\n"
    ).encode()
    done = sendmail(queue, "-bs", "-odq", stdin=session)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"250 2.0.0 Ok: queued as") == 2
    flags = sorted(
        (str(recipients(entry)[0]), entry["mail"]["smtputf8"])  # type: ignore[index]
        for entry, _ in entries(queue)
    )
    assert flags == [("b@y.test", True), ("c@y.test", False)]
