"""The command line: exit statuses and one-line errors."""

from __future__ import annotations

import pytest

from mxsend.cli import main
from tests.conftest import run_mxsend as run


def test_demo_reports_every_outcome_and_exits_tempfail() -> None:
    done = run("demo")
    assert done.returncode == 75, done.stderr
    out = done.stdout.decode()
    assert "delivered  ann@alpha.test via mx2.alpha.test [127.0.0.3]" in out  # first MX down
    assert "delivered  bob@beta.test via mx.beta.test [127.0.0.4] TLSv1" in out
    assert " verified: 250" in out
    assert "failed  nobody@gamma.test via mx.gamma.test [127.0.0.5]: 550 5.1.1" in out
    assert "deferred  busy@gamma.test via mx.gamma.test [127.0.0.5]: 451 4.2.1" in out
    assert "failed  anyone@void.test: 556 5.1.10" in out
    assert done.stderr == b""


def test_usage_error_is_one_line_and_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mxsend: ")


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.startswith(b"mxsend ")


def test_host_port_forms() -> None:
    import argparse

    from mxsend.cli._common import host_port
    from mxsend.message import strip_bcc

    assert host_port("mail.example", 25) == ("mail.example", 25)
    assert host_port("mail.example:587", 25) == ("mail.example", 587)
    assert host_port("[::1]:2525", 25) == ("::1", 2525)
    assert host_port("[::1]", 25) == ("::1", 25)
    assert host_port("2001:db8::1", 25) == ("2001:db8::1", 25)
    for bad in ("host:0", "host:x", "[::1]x", ":25", "host:70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            host_port(bad, 25)
    message = b"To: a@x\r\nBcc: b@x,\r\n c@x\r\nSubject: s\r\n\r\nBcc: body stays\r\n"
    assert strip_bcc(message) == b"To: a@x\r\nSubject: s\r\n\r\nBcc: body stays\r\n"


def test_demo_json_names_each_failure_kind() -> None:
    import json

    done = run("demo", "--json")
    document = json.loads(done.stdout)
    kinds = {r["recipient"]: r["failure"] for r in document["recipients"]}
    assert kinds == {
        "ann@alpha.test": None,
        "bob@beta.test": None,
        "nobody@gamma.test": "reply",
        "busy@gamma.test": "reply",
        "anyone@void.test": "dns",
    }
    assert document["format"] == 1
