"""A private Postfix instance on 127.0.0.1 (INTEROP.md recipe): STARTTLS with the test CA,
AUTH PLAIN/LOGIN from a Cyrus sasldb, DSN, SMTPUTF8, PIPELINING, CHUNKING, Maildir delivery
for @test.example, and smtpd_forbid_bare_newline = reject."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mxsend._testca import TestCA
from tests.conftest import free_port, wait_for_port

USER, DOMAIN, PASSWORD = "user", "test.example", "secret"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {p}/spool
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx2.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file_prefixes = /var, /dev/stdout, {p}
maillog_file = {p}/maillog
alias_maps =
alias_database =
virtual_mailbox_domains = test.example
virtual_mailbox_base = {p}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_tls_cert_file = {p}/mx.crt
smtpd_tls_key_file = {p}/mx.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {p}/etc/sasl
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_forbid_bare_newline = reject
smtpd_forbid_unauth_pipelining = yes
smtputf8_enable = yes
"""


@dataclass
class Postfix:
    root: Path
    port: int
    cafile: Path

    @property
    def inbox(self) -> Path:
        return self.root / "mail" / "inbox"

    def messages(self) -> list[bytes]:
        found = []
        for sub in ("new", "cur"):
            folder = self.inbox / sub
            if folder.exists():
                found += [p.read_bytes() for p in sorted(folder.iterdir())]
        return found

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def running_postfix() -> Iterator[Postfix]:
    assert shutil.which("postfix") and shutil.which("saslpasswd2"), (
        "postfix and sasl2-bin missing: ./dev test installs them"
    )
    root = Path(tempfile.mkdtemp(prefix="mxsend-postfix-"))
    root.chmod(0o755)
    port = free_port()
    ca = TestCA()
    issued = ca.issue("mx2.test.example", "localhost", "127.0.0.1")
    (root / "mx.crt").write_bytes(issued.cert_pem)
    (root / "mx.key").write_bytes(issued.key_pem)
    (root / "mx.key").chmod(0o600)
    cafile = root / "ca.pem"
    cafile.write_bytes(ca.cert_pem)
    etc = root / "etc"
    (etc / "sasl").mkdir(parents=True)
    (etc / "main.cf").write_text(MAIN_CF.format(p=root))
    master = Path("/etc/postfix/master.cf").read_text().splitlines()
    lines = []
    for entry in master:
        words = entry.split()
        if len(words) < 8 or entry.startswith((" ", "\t", "#")):
            lines.append(entry)
        elif words[0] == "smtp" and words[1] == "inet":
            lines.append(f"127.0.0.1:{port} inet n - n - - smtpd")
        else:
            words[4] = "n"  # no chroot
            lines.append(" ".join(words))
    (etc / "master.cf").write_text("\n".join(lines) + "\n")
    sasldb = etc / "sasldb2"
    subprocess.run(
        ["saslpasswd2", "-p", "-f", str(sasldb), "-u", DOMAIN, "-c", USER],
        input=PASSWORD.encode(), check=True,
    )  # fmt: skip
    shutil.chown(sasldb, "postfix")
    (etc / "sasl" / "smtpd.conf").write_text(
        f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
        f"sasldb_path: {sasldb}\n"
    )
    for folder in ("data", "spool", "mail"):
        (root / folder).mkdir(exist_ok=True)
    shutil.chown(root / "data", "postfix")
    os.chown(root / "mail", 65534, 65534)
    pidfile = root / "spool" / "pid" / "master.pid"
    try:
        started = subprocess.run(
            ["postfix", "-c", str(etc), "start"], capture_output=True, text=True, check=False
        )
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for_port(port, -1)
        yield Postfix(root, port, cafile)
    finally:
        subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True, check=False)
        if pidfile.exists():  # make sure, by PID
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().strip()), 9)
        shutil.rmtree(root, ignore_errors=True)
