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
    assert "delivered  ann@alpha.test" in done.stdout
    assert "failed  nobody@beta.test  550 5.1.1" in done.stdout
    assert "deferred  busy@beta.test  451 4.2.1" in done.stdout
    assert "Traceback" not in done.stderr


def test_usage_error_is_one_line_and_64(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == 64
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mxsend: ")


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.startswith("mxsend ")
