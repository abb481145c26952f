"""The command line: exit statuses and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mxsend._cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxsend", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_reports_every_outcome_and_exits_tempfail() -> None:
    done = run("demo")
    assert done.returncode == 75, done.stderr
    out = done.stdout
    assert "delivered  ann@alpha.test via mx2.alpha.test [127.0.0.3]" in out  # first MX down
    assert "delivered  bob@beta.test via mx.beta.test [127.0.0.4] TLSv1" in out
    assert " verified: 250" in out
    assert "failed  nobody@gamma.test via mx.gamma.test [127.0.0.5]: 550 5.1.1" in out
    assert "deferred  busy@gamma.test via mx.gamma.test [127.0.0.5]: 451 4.2.1" in out
    assert "failed  anyone@void.test: 556 5.1.10" in out
    assert done.stderr == ""


def test_usage_error_is_one_line_and_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mxsend: ")


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.startswith("mxsend ")
