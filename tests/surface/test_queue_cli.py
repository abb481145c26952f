"""`mxsend send --queue` and `mxsend queue ...` end to end against the local world."""

from __future__ import annotations

import email
import email.policy
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from tests.conftest import World
from tests.conftest import run_mxsend as mxsend

MESSAGE = b"From: sender@beta.test\nTo: someone\nSubject: queued\n\nhello\n"


def routed(world: World, *args: str) -> list[str]:
    return ["--dns", f"127.0.0.1:{world.dns_port}", "--mx-port", str(world.mx_port), *args]


def queue(world: World | None, queue_dir: Path, *args: str) -> Any:
    extra = routed(world) if world is not None and args[0] == "run" else []
    return mxsend("queue", *args, *extra, "--queue-dir", str(queue_dir))


def submit(queue_dir: Path, message: Path, *recipients: str) -> str:
    to = [arg for r in recipients for arg in ("--to", r)]
    done = mxsend(
        "send", "--queue", "--queue-dir", str(queue_dir), "--from", "sender@beta.test", *to,
        "--json", str(message),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [entry_id] = json.loads(done.stdout)["queued"]
    return str(entry_id)


def listed(queue_dir: Path) -> list[dict[str, Any]]:
    done = queue(None, queue_dir, "list", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["entries"])


def test_queued_then_delivered_by_a_queue_run(world: World, tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    entry_id = submit(spool, message, "ann@alpha.test")
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o700
    for path in (spool / "entries").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    [entry] = listed(spool)
    assert entry["id"] == entry_id and entry["recipients"][0]["state"] == "pending"
    done = queue(world, spool, "run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivered"] == 1
    assert (
        f"{entry_id}: to=<ann@alpha.test>, relay=mx2.alpha.test[127.0.0.3]" in done.stderr.decode()
    )
    assert "status=sent" in done.stderr.decode()
    assert listed(spool) == []


def test_deferred_then_expired_then_bounced(world: World, tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    entry_id = submit(spool, message, "busy@gamma.test")
    done = queue(world, spool, "run", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(x) for x in done.stderr.decode().splitlines()]
    assert line["id"] == entry_id and line["status"] == "deferred" and line["code"] == 451
    [entry] = listed(spool)
    [busy] = entry["recipients"]
    assert busy["state"] == "deferred" and busy["attempts"] == 1
    assert busy["reply"]["code"] == 451 and busy["reply"]["enhanced"] == "4.2.1"
    assert busy["next_attempt"] > time.time() + 200  # the first retry, about 5 minutes on
    shown = queue(None, spool, "show", entry_id)
    assert shown.returncode == 0 and b"451 4.2.1 mailbox busy" in shown.stdout

    time.sleep(1.1)
    done = queue(world, spool, "run", "--lifetime", "1s", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "entries": 1, "delivered": 0, "deferred": 0, "failed": 1, "bounces": 1
    }  # fmt: skip
    [dsn] = listed(spool)
    assert dsn["sender"] == "" and [r["address"] for r in dsn["recipients"]] == ["sender@beta.test"]
    report = email.message_from_bytes(
        (spool / "entries" / f"{dsn['id']}.msg").read_bytes(), policy=email.policy.default
    )
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert str(report["To"]) == "sender@beta.test"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"].startswith("dns;")
    assert per_recipient["Final-Recipient"] == "rfc822; busy@gamma.test"
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "4.2.1"
    assert "mailbox busy" in per_recipient["Diagnostic-Code"]
    assert per_recipient["Remote-MTA"] == "dns; mx.gamma.test"

    # The DSN goes out through the queue itself, from <>, to the sender's domain.
    done = queue(world, spool, "run", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivered"] == 1
    assert "to=<sender@beta.test>, relay=mx.beta.test" in done.stderr.decode()
    assert listed(spool) == []


def test_commands_on_entries(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    entry_id = submit(spool, message, "ann@alpha.test", "bob@beta.test")
    assert queue(None, spool, "hold", entry_id).returncode == 0
    assert listed(spool)[0]["held"] is True
    flushed = queue(None, spool, "flush")
    assert flushed.returncode == 0 and b"0 entries due now" in flushed.stdout
    assert queue(None, spool, "release", entry_id).returncode == 0
    stats = json.loads(queue(None, spool, "stats", "--json").stdout)
    assert stats == {
        "messages": 1, "held": 0, "recipients": {"pending": 2},
        "destinations": {"alpha.test": 1, "beta.test": 1},
    }  # fmt: skip
    assert queue(None, spool, "delete", entry_id).returncode == 0
    assert listed(spool) == []
    for action in ("show", "hold", "release", "delete"):
        missing = queue(None, spool, action, "0123456789abcdef")
        assert missing.returncode == 66, (action, missing.stderr)
        assert missing.stderr.count(b"\n") == 1 and b"Traceback" not in missing.stderr


def test_bad_input_queues_nothing(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    bad = mxsend("send", "--queue", "--queue-dir", str(spool), "--to", "not an address",
                 str(message))  # fmt: skip
    assert bad.returncode == 65 and bad.stderr.count(b"\n") == 1
    missing = mxsend("send", "--queue", "--queue-dir", str(spool), "--to", "a@b.test",
                     str(tmp_path / "absent.eml"))  # fmt: skip
    assert missing.returncode == 66
    assert not (spool / "entries").exists() or not list((spool / "entries").iterdir())
    usage = queue(None, spool, "run", "--lifetime", "5x")
    assert usage.returncode == 64 and b"--lifetime" in usage.stderr
    for command in (["queue", "run"], ["daemon"]):
        usage = mxsend(*command, "--queue-dir", str(spool), "--commit-interval", "61")
        assert usage.returncode == 64, usage.stderr
        assert usage.stderr == b"mxsend: --commit-interval must be from 0 to 60 seconds\n"


def test_queue_refuses_delivery_options_it_would_not_keep(tmp_path: Path) -> None:
    # A --tls verify accepted here and forgotten by the queue would be a silent downgrade.
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    done = mxsend("send", "--queue", "--queue-dir", str(spool), "--from", "a@b.test", "--to",
                  "c@d.test", "--tls", "verify", str(message))  # fmt: skip
    assert done.returncode == 64, done.stderr
    assert b"--tls" in done.stderr and done.stderr.count(b"\n") == 1
    assert not (spool / "entries").exists() or not list((spool / "entries").iterdir())


def test_queue_bounce_returns_an_entry_to_its_sender(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(MESSAGE)
    spool = tmp_path / "q"
    entry_id = submit(spool, message, "ann@alpha.test")
    done = queue(None, spool, "bounce", entry_id)
    assert done.returncode == 0, done.stderr
    assert b"DSN queued" in done.stdout
    [dsn] = listed(spool)
    assert dsn["sender"] == "" and dsn["recipients"][0]["address"] == "sender@beta.test"
    assert queue(None, spool, "bounce", entry_id).returncode == 66
