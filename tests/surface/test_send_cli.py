"""`mxsend send` and `mxsend plan` end to end against the local world: JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import World
from tests.conftest import run_mxsend as mxsend

MESSAGE = b"From: a@x.test\nTo: ann@alpha.test\nBcc: hidden@beta.test\nSubject: t\n\nhello\n"


def routed(world: World, *args: str) -> list[str]:
    return ["--dns", f"127.0.0.1:{world.dns_port}", "--mx-port", str(world.mx_port), *args]


@pytest.fixture
def message(tmp_path: Path) -> Path:
    path = tmp_path / "msg.eml"
    path.write_bytes(MESSAGE)
    return path


def test_send_json_delivers(world: World, message: Path) -> None:
    done = mxsend(
        "send", *routed(world, "--from", "a@x.test", "--to", "ann@alpha.test", "--json"),
        str(message),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    [ann] = document["recipients"]
    assert ann["recipient"] == "ann@alpha.test" and ann["status"] == "delivered"
    assert ann["code"] == 250 and ann["enhanced"] == "2.0.0"
    assert ann["mx"] == "mx2.alpha.test" and ann["address"] == "127.0.0.3"
    assert {"reply", "tls"} <= set(ann)


def test_send_tls_report_and_cafile(world: World, message: Path) -> None:
    done = mxsend(
        "send",
        *routed(world, "--to", "bob@beta.test", "--json", "--cafile", str(world.cafile)),
        str(message),
    )
    assert done.returncode == 0, done.stderr
    [bob] = json.loads(done.stdout)["recipients"]
    assert bob["tls"]["verified"] is True and bob["tls"]["version"].startswith("TLSv1.")


def test_exit_statuses(world: World, message: Path) -> None:
    mixed = mxsend("send", *routed(world, "--to", "ann@alpha.test", "--to", "busy@gamma.test"),
                   str(message))  # fmt: skip
    assert mixed.returncode == 75, mixed.stderr
    failed = mxsend("send", *routed(world, "--to", "nobody@gamma.test", "--to", "x@void.test"),
                    str(message))  # fmt: skip
    assert failed.returncode == 69, failed.stderr
    assert b"556 5.1.10" in failed.stdout


def test_recipients_from_headers_and_bcc_removed(world: World, message: Path) -> None:
    done = mxsend("send", *routed(world, "-t", "--json", "--cafile", str(world.cafile)),
                  str(message))  # fmt: skip
    assert done.returncode == 0, done.stderr
    recipients = {r["recipient"] for r in json.loads(done.stdout)["recipients"]}
    assert recipients == {"ann@alpha.test", "hidden@beta.test"}


def test_stdin_and_verbose_transcript(world: World) -> None:
    done = mxsend("send", *routed(world, "--to", "ann@alpha.test", "-v"), "-", stdin=MESSAGE)
    assert done.returncode == 0
    assert b"[127.0.0.3] C: MAIL FROM:<a@x.test>" in done.stderr
    assert b"[127.0.0.3] S: 250" in done.stderr


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        (["--to", "bad\r\naddress@x.test"], 65, b"control"),
        (["--to", "b@y.test>\r\nRCPT TO:<evil@x.test"], 65, b"mxsend: "),
        (["--to", "b@y.test", "/nonexistent/message"], 66, b"cannot read"),
        (["--to", "b@y.test", "--cafile", "/nonexistent/ca.pem"], 78, b"cafile"),
        (["--to", "b@y.test", "--smarthost", "h.test", "--auth-user", "u"], 78, b"password"),
        (["--to", "b@y.test", "--mx-port", "0"], 64, b"port"),
        ([], 64, b"no recipients"),
    ],
)
def test_user_errors_are_one_line(args: list[str], status: int, text: bytes, message: Path) -> None:
    # The DNS server given does not exist: a user error must be reported before any lookup.
    argv = ["send", "--dns", "127.0.0.1:9", "--from", "a@x.test", *args]
    if not any(a.startswith("/") for a in args):
        argv.append(str(message))
    done = mxsend(*argv, stdin=b"")
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"mxsend: ") and text in lines[0]
    assert done.stdout == b""


def test_plan_json(world: World) -> None:
    done = mxsend("plan", *routed(world, "--to", "ann@alpha.test", "--to", "x@void.test", "--json"))
    assert done.returncode == 69, done.stderr
    plans = {d["domain"]: d for d in json.loads(done.stdout)["destinations"]}
    alpha = plans["alpha.test"]
    assert [h["name"] for h in alpha["hosts"]] == ["mx1.alpha.test", "mx2.alpha.test"]
    assert alpha["hosts"][0]["addresses"] == ["127.0.0.2"] and alpha["tls"] == "may"
    assert plans["void.test"]["error"]["code"] == 556
