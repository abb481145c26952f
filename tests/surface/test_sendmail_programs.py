"""mxsend-sendmail as the real programs run it: mail(1) from bsd-mailx, PHP's mail() from
php-cli, git send-email from git-email, and the command lines cron passes.

Each program runs with an isolated environment (HOME, the queue, git's and PHP's config all
under the test's folder) and is pointed at a stand-in for /usr/sbin/sendmail: a shell script
that records the arguments and standard input it was given, then runs ``mxsend-sendmail``
with ``-odq``, so that nothing is delivered by the command itself (any ``-od?`` the program
passes becomes ``-odq``: cronie's ``-odi`` would otherwise start a delivery to real MX hosts).
The test then delivers the queue with ``mxsend queue run --smarthost 127.0.0.1:PORT`` into an
aiosmtpd sink on loopback that keeps the envelope and the DATA as received, byte for byte.

A missing program fails the test, naming the Debian package (``./dev test`` installs them).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port

SENDMAIL = Path(sys.executable).parent / "mxsend-sendmail"
TIMEOUT = 60  # seconds for any one program or queue run

# The stand-in for /usr/sbin/sendmail the programs are given. Each call gets a file prefix
# under the log folder: .argv (NUL-terminated arguments), .stdin, .stderr and .status.
WRAPPER = """#!/bin/sh
call=$(mktemp {log}/call.XXXXXX) || exit 75
: > "$call.argv"
for arg in "$@"; do printf '%s\\0' "$arg" >> "$call.argv"; done
# Queue only, whatever the program asked for (-odi, -odb): nothing leaves this machine.
for arg in "$@"; do
    shift
    case $arg in -od*) arg=-odq ;; esac
    set -- "$@" "$arg"
done
tee "$call.stdin" | {sendmail} -odq "$@" 2> "$call.stderr"
status=$?
cat "$call.stderr" >&2
echo "$status" > "$call.status"
exit "$status"
"""


def need(program: str, package: str) -> str:
    """The path of ``program``; fails (never skips) when it is missing."""
    found = shutil.which(program, path="/usr/local/bin:/usr/bin:/bin")
    assert found, f"{program} is missing: install the Debian package {package} (./dev test does)"
    return found


def git_send_email() -> str:
    git = need("git", "git")
    exec_path = subprocess.run(
        [git, "--exec-path"], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout.strip()
    found = Path(exec_path) / "git-send-email"
    assert found.exists(), "git send-email is missing: install the Debian package git-email"
    return git


@dataclass
class Call:
    """One run of the stand-in sendmail: what the program passed, and how it ended."""

    argv: list[str]
    stdin: bytes
    stderr: bytes
    status: int


@dataclass
class Received:
    """One transaction the sink took: the envelope and the DATA as sent (dots unstuffed)."""

    sender: str
    options: list[str]
    recipients: list[str]
    data: bytes


@dataclass
class Recorder:
    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                bytes(envelope.original_content),
            )
        )
        return "250 2.0.0 taken"


@dataclass
class Bench:
    """A temporary world for one test: HOME, the queue, the stand-in sendmail."""

    root: Path
    home: Path = field(init=False)
    queue: Path = field(init=False)
    log: Path = field(init=False)
    wrapper: Path = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.home, self.queue, self.log = self.root / "home", self.root / "queue", self.root / "log"
        self.home.mkdir()
        self.log.mkdir()
        self.wrapper = self.root / "sendmail"
        self.wrapper.write_text(
            WRAPPER.format(log=shlex.quote(str(self.log)), sendmail=shlex.quote(str(SENDMAIL)))
        )
        self.wrapper.chmod(0o755)
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": "tester",
            "LOGNAME": "tester",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "MXSEND_QUEUE_DIR": str(self.queue),
            "XDG_STATE_HOME": str(self.home / ".local/state"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "MAILRC": str(self.home / ".mailrc"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_SYSTEM": os.devnull,
            "PHPRC": str(self.root / "no-php-ini"),
            "PHP_INI_SCAN_DIR": "",
        }
        if "PYTHONDONTWRITEBYTECODE" in os.environ:
            self.env["PYTHONDONTWRITEBYTECODE"] = os.environ["PYTHONDONTWRITEBYTECODE"]

    def run(
        self,
        argv: Sequence[str],
        stdin: bytes = b"",
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            list(argv), input=stdin, env={**self.env, **(env or {})}, cwd=cwd or self.root,
            capture_output=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    def calls(self) -> list[Call]:
        found = []
        for argv in sorted(self.log.glob("call.*.argv")):
            base = str(argv)[: -len(".argv")]
            status = Path(base + ".status")
            found.append(
                Call(
                    [a.decode() for a in argv.read_bytes().split(b"\0")[:-1]],
                    Path(base + ".stdin").read_bytes(),
                    Path(base + ".stderr").read_bytes(),
                    int(status.read_text()) if status.exists() else -1,
                )
            )
        return found

    def only_call(self) -> Call:
        calls = self.calls()
        assert len(calls) == 1, calls
        [call] = calls
        assert call.status == 0, call.stderr
        return call

    def entries(self) -> list[tuple[dict[str, Any], bytes]]:
        """Each queued entry's state and message file."""
        found = []
        for state in sorted((self.queue / "entries").glob("*.json")):
            found.append((json.loads(state.read_text()), state.with_suffix(".msg").read_bytes()))
        return found

    def deliver(self) -> list[Received]:
        """Deliver the whole queue to a sink on 127.0.0.1; what it took, each message checked
        to be the queued one, its lines ended in CRLF."""
        queued = self.entries()
        assert queued, "nothing was queued"
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10)
        controller.start()
        try:
            run = subprocess.run(
                [sys.executable, "-m", "mxsend", "queue", "run", "--queue-dir", str(self.queue),
                 "--smarthost", f"127.0.0.1:{port}", "--tls", "none", "--timeout", "all=30"],
                env={**os.environ, "HOME": str(self.home)}, capture_output=True,
                timeout=TIMEOUT * 2, check=False,
            )  # fmt: skip
        finally:
            controller.stop()
        assert run.returncode == 0, run.stderr.decode(errors="replace")
        assert not self.entries(), "the queue run left entries behind"
        sent = sorted(recorder.received, key=lambda r: r.data)
        assert [r.data for r in sent] == sorted(crlf(message) for _, message in queued)
        return recorder.received


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)


# A host name as the qualified addresses carry it (which one is mxsend-sendmail's business,
# tested in test_sendmail.py): a domain name, or localhost.
HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.I)


def qualified(address: str, local: str) -> str:
    """The host part of ``address``, which must be ``local`` at this host; fails if not."""
    user, at, host = address.rpartition("@")
    assert (user, at) == (local, "@") and HOST.fullmatch(host), address
    return host


def assert_own_address(address: str) -> None:
    """``address`` is what mxsend-sendmail gives a message without -f: this user here."""
    qualified(address, pwd.getpwuid(os.getuid()).pw_name)


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def count(head: bytes, name: bytes) -> int:
    """How many ``name`` fields the header block ``head`` (CRLF lines) has."""
    return sum(line.lower().startswith(name.lower() + b":") for line in head.split(b"\r\n"))


def header_block_and_body(data: bytes) -> tuple[bytes, bytes]:
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data[:200]
    return head + b"\r\n", body


def assert_crlf_only(data: bytes) -> None:
    """Every line of ``data`` ends in CRLF: no bare LF, no bare CR (RFC 5321 2.3.8)."""
    lone = re.search(rb"\r(?!\n)|(?<!\r)\n", data)
    assert lone is None, f"bare line ending at {lone.start()}: {data[lone.start() - 40 :][:80]!r}"
    assert data.endswith(b"\r\n")


def crlf(text: bytes) -> bytes:
    """``text`` with each line ending (LF, CRLF) made CRLF."""
    return re.sub(rb"\r?\n", b"\r\n", text)


def test_mail_1_from_bsd_mailx(bench: Bench) -> None:
    mailx = need("bsd-mailx", "bsd-mailx")
    # bsd-mailx runs the program named by its "sendmail" variable, read from $MAILRC; -n skips
    # /etc/mail.rc.
    Path(bench.env["MAILRC"]).write_text(f"set sendmail={bench.wrapper}\n")
    body = "Report: all good.\n.\nThe line above holds only a dot.\nCafé, naïve, 8-bit.\n"
    done = bench.run(
        [mailx, "-n", "-s", "Nightly report", "-c", "cc@y.test", "-b", "bcc@z.test", "rcpt@y.test"],
        body.encode(),
    )
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    call = bench.only_call()
    assert call.argv == ["-i", "-t"]  # recipients in the header; a lone dot is not the end
    assert b"\nBcc: bcc@z.test\n" in call.stdin  # mail(1) leaves the removal to sendmail -t

    [(entry, _)] = bench.entries()
    assert entry["mail"]["body"] == "8BITMIME"
    [received] = bench.deliver()
    assert_own_address(received.sender)
    assert sorted(received.recipients) == ["bcc@z.test", "cc@y.test", "rcpt@y.test"]
    assert "BODY=8BITMIME" in received.options
    assert_crlf_only(received.data)
    message = parsed(received.data)
    # mail(1) writes no Date, Message-ID nor From: added on submission.
    assert message["Date"] and message["Message-ID"] and message["From"] == received.sender
    assert message["Subject"] == "Nightly report"
    assert message["To"] == "rcpt@y.test" and message["Cc"] == "cc@y.test"
    assert message["Bcc"] is None and b"bcc@z.test" not in received.data
    _, delivered_body = header_block_and_body(received.data)
    assert delivered_body == crlf(body.encode())  # the dot line and the 8-bit bytes unchanged


def test_mail_1_with_a_sender_and_a_latin_1_body(bench: Bench) -> None:
    mailx = need("bsd-mailx", "bsd-mailx")
    Path(bench.env["MAILRC"]).write_text(f"set sendmail={bench.wrapper}\n")
    latin_1 = "Prix : 10 francs, déjà payé.\nÀ bientôt.\n".encode("latin-1")
    done = bench.run(
        [mailx, "-n", "-r", "a@x.test", "-a", 'Content-Type: text/plain; charset="ISO-8859-1"',
         "-s", "Latin-1", "b@y.test"],
        latin_1,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    call = bench.only_call()
    assert call.argv == ["-i", "-t", "-f", "a@x.test"]  # -r becomes the envelope sender

    [received] = bench.deliver()
    assert (received.sender, received.recipients) == ("a@x.test", ["b@y.test"])
    assert "BODY=8BITMIME" in received.options
    assert_crlf_only(received.data)
    head, delivered_body = header_block_and_body(received.data)
    assert count(head, b"From") == 1 and parsed(received.data)["From"] == "a@x.test"
    assert delivered_body == crlf(latin_1)  # not decoded, not re-encoded: the same octets


PHP_MAIL = (
    'var_export(mail("b@y.test", "Subj", "line1\\nline2\\n.\\nline4",'
    ' "From: a@x.test\\r\\nCc: c@y.test\\r\\nBcc: d@z.test"));'
)


def php(bench: Bench, code: str) -> subprocess.CompletedProcess[bytes]:
    binary = need("php", "php-cli")
    # -n: no php.ini; PHP runs sendmail_path through /bin/sh, as its default "sendmail -t -i".
    return bench.run(
        [binary, "-n", "-d", f"sendmail_path={bench.wrapper} -t -i", "-d", "display_errors=stderr",
         "-r", code]
    )  # fmt: skip


def test_php_mail(bench: Bench) -> None:
    done = php(bench, PHP_MAIL)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"true", b""), done.stderr
    call = bench.only_call()
    assert call.argv == ["-t", "-i"]
    # PHP ends the header lines in CRLF, but the body's lines as the script gave them.
    assert call.stdin == (
        b"To: b@y.test\r\nSubject: Subj\r\nFrom: a@x.test\r\nCc: c@y.test\r\nBcc: d@z.test\r\n"
        b"\r\nline1\nline2\n.\nline4\r\n"
    )

    [received] = bench.deliver()
    assert_own_address(received.sender)  # no -f: From does not set the envelope
    assert sorted(received.recipients) == ["b@y.test", "c@y.test", "d@z.test"]
    assert_crlf_only(received.data)
    message = parsed(received.data)
    assert message["Date"] and message["Message-ID"] and message["From"] == "a@x.test"
    assert (message["To"], message["Cc"], message["Subject"]) == ("b@y.test", "c@y.test", "Subj")
    assert message["Bcc"] is None and b"d@z.test" not in received.data
    assert received.data.endswith(b"\r\nCc: c@y.test\r\n\r\nline1\r\nline2\r\n.\r\nline4\r\n")


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("UTF-8", "Grüße aus Köln: 10 €, «ça va», ✓\nzweite Zeile"),
        ("ISO-8859-1", "Déjà vu, naïve café, 10 ¤\nseconde ligne"),
    ],
)
def test_php_mail_8bit_body_with_bare_lf_and_an_envelope_sender(
    bench: Bench, charset: str, text: str
) -> None:
    octets = text.encode(charset)
    assert any(b > 0x7F for b in octets)
    body = "".join(f"\\x{b:02x}" for b in octets)  # the exact octets, in a PHP string
    headers = (
        f"From: Sender <a@x.test>\\r\\nMIME-Version: 1.0\\r\\n"
        f"Content-Type: text/plain; charset={charset}\\r\\nContent-Transfer-Encoding: 8bit"
    )
    # The fifth argument is added to sendmail_path's command, as applications set the
    # envelope sender.
    code = f'var_export(mail("b@y.test", "8-bit", "{body}", "{headers}", "-fbounce@x.test"));'
    done = php(bench, code)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"true", b""), done.stderr
    call = bench.only_call()
    assert call.argv == ["-t", "-i", "-fbounce@x.test"]
    assert call.stdin.endswith(b"\r\n\r\n" + octets + b"\r\n")  # LF inside, CRLF last

    [(entry, _)] = bench.entries()
    assert entry["mail"]["body"] == "8BITMIME" and entry["sender"] == "bounce@x.test"
    [received] = bench.deliver()
    assert (received.sender, received.recipients) == ("bounce@x.test", ["b@y.test"])
    assert "BODY=8BITMIME" in received.options
    assert_crlf_only(received.data)
    _, delivered_body = header_block_and_body(received.data)
    assert delivered_body == crlf(octets + b"\n")
    assert parsed(received.data).get_content().replace("\r\n", "\n") == text + "\n"


def git_repo(bench: Bench) -> tuple[str, Path, dict[str, str]]:
    """A repository with one commit, and git's environment: no user or system config."""
    git = git_send_email()
    env = {
        "GIT_AUTHOR_NAME": "A U Thor",
        "GIT_AUTHOR_EMAIL": "a@x.test",
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
        "GIT_COMMITTER_NAME": "A U Thor",
        "GIT_COMMITTER_EMAIL": "a@x.test",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
    }
    repo = bench.root / "repo"
    repo.mkdir()
    (repo / "greeting.txt").write_bytes("hello\nwörld\n.\nend\n".encode())
    message = "Add a greeting\n\nWith an ümlaut, and a line with only a dot:\n.\nkept.\n"
    for argv in (
        [git, "init", "-q", "-b", "main", "."],
        [git, "add", "greeting.txt"],
        [git, "commit", "-q", "-m", message],
        [git, "format-patch", "-q", "-1", "-o", str(bench.root / "patches")],
    ):
        done = bench.run(argv, cwd=repo, env=env)
        assert done.returncode == 0, done.stderr
    return git, repo, env


def test_git_send_email(bench: Bench) -> None:
    git, repo, env = git_repo(bench)
    [patch] = sorted((bench.root / "patches").iterdir())
    done = bench.run(
        [git, "send-email", f"--smtp-server={bench.wrapper}", "--to=b@y.test", "--cc=c@y.test",
         "--from=A U Thor <a@x.test>", "--confirm=never", "--suppress-cc=all", "--no-validate",
         str(patch)],
        cwd=repo, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    call = bench.only_call()
    assert call.argv == ["-i", "b@y.test", "c@y.test"]  # no -f, no -t: recipients as arguments

    [received] = bench.deliver()
    assert_own_address(received.sender)
    assert received.recipients == ["b@y.test", "c@y.test"]
    assert "BODY=8BITMIME" in received.options
    assert_crlf_only(received.data)
    message = parsed(received.data)
    # git writes From, Date and Message-Id itself: kept, none added.
    head, delivered_body = header_block_and_body(received.data)
    assert [count(head, name) for name in (b"From", b"Date", b"Message-ID")] == [1, 1, 1]
    assert message["From"] == "A U Thor <a@x.test>"
    assert message["Subject"] == "[PATCH] Add a greeting"
    assert message["Message-ID"] == parsed(call.stdin)["Message-ID"]
    # The patch (from format-patch) arrives as it was written, in CRLF.
    _, _, patch_body = patch.read_bytes().partition(b"\n\n")
    assert delivered_body == crlf(patch_body)
    assert b"\r\n.\r\nkept.\r\n" in delivered_body and "wörld".encode() in delivered_body
    applied = bench.run([git, "apply", "--check", "-"], received.data, cwd=bench.root, env=env)
    assert applied.returncode == 0, applied.stderr


def test_git_send_email_with_an_envelope_sender(bench: Bench) -> None:
    git, repo, env = git_repo(bench)
    [patch] = sorted((bench.root / "patches").iterdir())
    done = bench.run(
        [git, "send-email", f"--smtp-server={bench.wrapper}", "--to=b@y.test",
         "--from=a@x.test", "--envelope-sender=bounces@x.test", "--confirm=never",
         "--suppress-cc=all", "--no-validate", str(patch)],
        cwd=repo, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert bench.only_call().argv == ["-f", "bounces@x.test", "-i", "b@y.test"]
    [received] = bench.deliver()
    assert (received.sender, received.recipients) == ("bounces@x.test", ["b@y.test"])


def cron_message(recipient: str, output: bytes) -> bytes:
    """What cron writes to sendmail (cronie's do_command.c; Debian's cron alike): LF lines."""
    return (
        f"From: root (Cron Daemon)\nTo: {recipient}\n"
        "Subject: Cron <root@vm> /usr/local/bin/report\n"
        "Content-Type: text/plain; charset=UTF-8\nAuto-Submitted: auto-generated\n"
        "X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\n"
    ).encode() + output


CRON_OUTPUT = "Sauvegarde terminée: 3 fichiers, 1,2 Go\n.\nÜberprüfung: ok ✓\n".encode()


@pytest.mark.parametrize(
    ("argv", "sender"),
    [
        # cronie (Fedora, Arch, ...): "%s -FCronDaemon -i -odi -oem -oi -t -f %s" with MAILFROM
        # or root; the recipients come from To (-t).
        (["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"], "root"),
        # Debian's cron 3.0pl1: MAILTO (or the crontab's owner) as an argument, no -t.
        (["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], None),
        # ... as older Debian releases order it.
        (["-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root"], None),
        # systemd-cron's mail helper.
        (["-i", "-B", "8BITMIME", "root"], None),
        # The builds that send from the null sender (cronie#170).
        (["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "-f", "<>", "root"], ""),
    ],
    ids=["cronie", "debian-cron", "debian-cron-old", "systemd-cron", "null-sender"],
)
def test_the_command_lines_cron_passes(bench: Bench, argv: list[str], sender: str | None) -> None:
    # cron itself cannot run here (it needs root and a minute); its exact command lines and
    # message go through the same stand-in the programs use.
    message = cron_message("root", CRON_OUTPUT)
    done = bench.run([str(bench.wrapper), *argv], message)
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    assert bench.only_call().argv == argv

    [(entry, _)] = bench.entries()
    assert entry["mail"]["body"] == "8BITMIME"
    [received] = bench.deliver()
    [recipient] = received.recipients
    host = qualified(recipient, "root")  # the bare local name gets this host's name
    if sender is None:  # none given: this user here
        assert_own_address(received.sender)
        assert received.sender.endswith(f"@{host}")
    elif sender:  # -f root: qualified as the recipient is
        assert received.sender == f"{sender}@{host}"
    else:
        assert received.sender == "<>"  # MAIL FROM:<> (aiosmtpd keeps the brackets)
    assert entry["sender"] == ("" if sender == "" else received.sender)
    assert "BODY=8BITMIME" in received.options
    assert_crlf_only(received.data)
    head, delivered_body = header_block_and_body(received.data)
    assert count(head, b"From") == 1 and b"\r\nFrom: root (Cron Daemon)\r\n" in b"\r\n" + head
    assert [count(head, name) for name in (b"Date", b"Message-ID")] == [1, 1]  # added
    assert delivered_body == crlf(CRON_OUTPUT)  # the lone dot (-i/-oi) and 8-bit bytes kept


def test_cron_mailto_with_several_recipients_in_one_argument(bench: Bench) -> None:
    # crontab: MAILTO=ops@x.test,root. Debian's cron passes MAILTO as one argument (its
    # safe_p() lets "," through, for such lists); Postfix's sendmail reads each argument as
    # an address list (tok822_parse), so both get the mail. Refused, the output is lost:
    # cron only logs "mailed N bytes of output but got status 0x0041".
    argv = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "ops@x.test,root"]
    done = bench.run([str(bench.wrapper), *argv], cron_message("ops@x.test,root", b"ok\n"))
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    [received] = bench.deliver()
    [ops, root] = received.recipients
    assert ops == "ops@x.test"
    qualified(root, "root")
