"""mxsend-sendmail with a config file: the issue's acceptance (queued by sendmail, delivered by
a queue run with Date, Message-ID and a DKIM signature that dkimpy verifies against the key
served by a DNS server on loopback), the rewriting keys, the lean path's settings cache, and
a broken file (exit 78, FILE:LINE)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from aiosmtpd.controller import Controller

from mxsend.dkim import keygen
from tests.integration.test_dkim_dns import dns_server, record_strings, txt_lookup

SENDMAIL = Path(sys.executable).parent / "mxsend-sendmail"


@dataclass
class Recorder:
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), data))
        return "250 2.0.0 taken"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    root: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "MXSEND_QUEUE_DIR": str(self.queue),
            "MXSEND_CONFIG": str(self.config),
            "XDG_CACHE_HOME": str(self.root / "cache"),
        }

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def config(self) -> Path:
        return self.root / "mxsend.toml"

    def sendmail(self, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(SENDMAIL), *args], input=stdin, env=self.env, capture_output=True,
            timeout=60, check=False,
        )  # fmt: skip

    def entries(self) -> list[tuple[dict[str, Any], bytes]]:
        return [
            (json.loads(p.read_text()), p.with_suffix(".msg").read_bytes())
            for p in sorted((self.queue / "entries").glob("*.json"))
        ]

    def deliver(self) -> list[tuple[str, list[str], bytes]]:
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10)
        controller.start()
        try:
            run = subprocess.run(
                [sys.executable, "-m", "mxsend", "queue", "run", "--queue-dir", str(self.queue),
                 "--smarthost", f"127.0.0.1:{port}", "--tls", "none", "--timeout", "all=30"],
                env=self.env, capture_output=True, timeout=120, check=False,
            )  # fmt: skip
        finally:
            controller.stop()
        assert run.returncode == 0, run.stderr.decode(errors="replace")
        return recorder.received


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_queued_then_delivered_with_date_message_id_and_a_dkim_signature(world: World) -> None:
    rsa = world.root / "rsa.key"
    ed = world.root / "ed.key"
    records = {}
    for path, selector, kind in ((rsa, "s1", "rsa"), (ed, "s2", "ed25519")):
        name, strings = record_strings(keygen("x.test", selector, kind, path))
        records[name] = strings
    world.config.write_text(
        '[sendmail]\ndelivery = "queue"\n\n'
        f'[[dkim."x.test"]]\nselector = "s1"\nkey_file = "{rsa}"\n\n'
        f'[[dkim."x.test"]]\nselector = "s2"\nkey_file = "{ed}"\nalgorithm = "ed25519"\n'
    )
    world.config.chmod(0o600)
    # The command, as it is: the config's delivery = "queue" keeps it local.
    done = world.sendmail(
        "-t", "-i", "-f", "a@x.test", stdin=b"To: b@y.test\nSubject: hi\n\nbody\n"
    )
    assert done.returncode == 0, done.stderr
    [(entry, stored)] = world.entries()
    assert entry["sender"] == "a@x.test"
    assert stored.count(b"DKIM-Signature:") == 2
    assert b"\n" not in stored.replace(b"\r\n", b"")  # signed as it is stored: CRLF only
    [(sender, recipients, data)] = world.deliver()
    assert (sender, recipients) == ("a@x.test", ["b@y.test"])
    assert data == stored  # the signed bytes are the bytes on the wire
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head and b"From: a@x.test" in head
    with dns_server(records) as port:
        lookup = txt_lookup(port)
        signatures = dkim.DKIM(data)
        assert signatures.verify(0, dnsfunc=lookup) and signatures.verify(1, dnsfunc=lookup)
        assert not dkim.verify(data.replace(b"body", b"b0dy"), dnsfunc=lookup)


def test_the_config_s_rewriting_and_default_sender(world: World) -> None:
    world.config.write_text(
        'sender = "noreply@mail.corp.test"\ndomain = "corp.test"\n\n'
        '[sendmail]\ndelivery = "queue"\nmasquerade_domain = "corp.test"\n'
        "undisclosed_recipients = true\n"
    )
    world.config.chmod(0o600)
    done = world.sendmail("root", stdin=b"Subject: s\n\nx\n")
    assert done.returncode == 0, done.stderr
    [(entry, stored)] = world.entries()
    assert entry["sender"] == "noreply@corp.test"  # the default sender, masqueraded
    assert [r["address"] for r in entry["recipients"]] == ["root@corp.test"]
    assert b"From: noreply@corp.test\r\n" in stored
    assert b"To: undisclosed-recipients:;\r\n" in stored


def test_the_lean_path_reads_the_settings_from_its_cache(world: World) -> None:
    world.config.write_text('[sendmail]\nforce_sender = "bot@corp.test"\ndelivery = "queue"\n')
    world.config.chmod(0o600)
    code = (
        "import sys; from mxsend.cli.sendmail import main; "
        "status = main(['sendmail', '-f', 'a@x.test', 'b@y.test']); "
        "print(status, 'tomllib' in sys.modules, 'mxsend.config' in sys.modules)"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            input=b"x\n",
            env=world.env,
            capture_output=True,
            timeout=60,
            check=False,
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [[b"0", b"True", b"True"], [b"0", b"False", b"False"]]
    assert [e["sender"] for e, _ in world.entries()] == ["bot@corp.test"] * 2
    # A change to the file is seen at once: the cache is of the file as it was.
    world.config.write_text('[sendmail]\nforce_sender = "other@corp.test"\ndelivery = "queue"\n')
    assert world.sendmail("b@y.test", stdin=b"x\n").returncode == 0
    assert sorted(e["sender"] for e, _ in world.entries())[-1] == "other@corp.test"


def test_a_broken_config_is_exit_78_naming_the_line(world: World) -> None:
    world.config.write_text('[sendmail]\ndelivery = "later"\nforce_sender = 3\n')
    world.config.chmod(0o600)
    done = world.sendmail("b@y.test", stdin=b"x\n")
    assert done.returncode == 78
    [line] = done.stderr.decode().splitlines()
    assert f"{world.config}:2:" in line and "1 more" in line
    assert not (world.queue / "entries").exists() or not world.entries()


def test_dash_c_names_the_config_file(world: World) -> None:
    other = world.root / "other.toml"
    other.write_text('[sendmail]\nforce_sender = "c@corp.test"\ndelivery = "queue"\n')
    other.chmod(0o600)
    world.config.write_text("this is not TOML")
    done = world.sendmail("-C", str(other), "b@y.test", stdin=b"x\n")
    assert done.returncode == 0, done.stderr
    [(entry, _)] = world.entries()
    assert entry["sender"] == "c@corp.test"


def test_dash_q_r_and_s_run_only_the_entries_they_name(world: World) -> None:
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        world.config.write_text(
            f'[sendmail]\ndelivery = "queue"\n\n[routes."*"]\nvia = "[127.0.0.1]:{port}"\n'
            'tls = "none"\n'
        )
        world.config.chmod(0o600)
        for sender, rcpt in (("a@x.test", "b@y.test"), ("c@x.test", "d@Z.test")):
            assert world.sendmail("-f", sender, rcpt, stdin=b"x\n").returncode == 0
        done = world.sendmail("-qRz.TEST", stdin=b"")
        assert done.returncode == 0, done.stderr
        assert [(s, r) for s, r, _ in recorder.received] == [("c@x.test", ["d@Z.test"])]
        assert world.sendmail("-qSnobody", stdin=b"").returncode == 0
        assert len(recorder.received) == 1  # no sender holds it: nothing run
        assert world.sendmail("-qSa@x", stdin=b"").returncode == 0
        assert [s for s, _, _ in recorder.received] == ["c@x.test", "a@x.test"]
        assert not world.entries()
    finally:
        controller.stop()
    bad = world.sendmail("-q30m", stdin=b"")
    assert bad.returncode == 64 and b"mxsend daemon" in bad.stderr


def test_send_queue_signs_with_the_config_s_keys_too(world: World) -> None:
    key = world.root / "rsa.key"
    name, strings = record_strings(keygen("x.test", "s1", "rsa", key))
    world.config.write_text(f'[[dkim."x.test"]]\nselector = "s1"\nkey_file = "{key}"\n')
    world.config.chmod(0o600)
    message = world.root / "m.eml"
    message.write_bytes(b"From: A <a@x.test>\nTo: b@y.test\nSubject: s\n\nbody\n")
    done = subprocess.run(
        [sys.executable, "-m", "mxsend", "send", "--queue", "--to", "b@y.test", str(message)],
        env=world.env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [(entry, stored)] = world.entries()
    assert entry["sender"] == "a@x.test" and stored.startswith(b"DKIM-Signature:")
    with dns_server({name: strings}) as port:
        assert dkim.verify(stored, dnsfunc=txt_lookup(port))
