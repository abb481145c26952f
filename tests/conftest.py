"""Shared fixtures: servers on loopback that the tests start themselves and stop by PID, and
temporary folders kept out of the checkout (a run that leaves an untracked file in it fails:
see tests/cleantree.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests import cleantree

# Hypothesis's folder for this session (see pytest_sessionstart), removed at its end.
_HYPOTHESIS_HOME = pytest.StashKey[Path]()


def pytest_sessionstart(session: pytest.Session) -> None:
    cleantree.pytest_sessionstart(session)  # a run that leaves an untracked file fails
    # Hypothesis keeps its example database and caches in ./.hypothesis, the checkout under
    # pytest, from collection on (before any fixture runs): give it a folder of its own
    # instead, unless HYPOTHESIS_STORAGE_DIRECTORY names one.
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        home = Path(tempfile.mkdtemp(prefix="mxsend-hypothesis-"))
        session.config.stash[_HYPOTHESIS_HOME] = home
        set_hypothesis_home_dir(home)


def pytest_sessionfinish(session: pytest.Session) -> None:
    home = session.config.stash.get(_HYPOTHESIS_HOME, None)
    if home is not None:
        set_hypothesis_home_dir(None)
        shutil.rmtree(home, ignore_errors=True)
    cleantree.pytest_sessionfinish(session)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    cleantree.pytest_terminal_summary(terminalreporter)


# Set for the session by _scratch_root: where temp_dir() makes its folders.
_SCRATCH: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _scratch_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Trial cases get their folders from temp_dir(), under pytest's base temporary folder."""
    _SCRATCH[:] = [tmp_path_factory.mktemp("trial")]


def temp_dir(case: unittest.TestCase) -> Path:
    """A fresh, empty folder for one trial test, under pytest's base temporary folder. (Trial's
    own ``mktemp()`` names one relative to the working directory: the checkout, under pytest.)"""
    parent = _SCRATCH[0] if _SCRATCH else None  # None: the system's temporary folder
    name = case.id().rsplit(".", 1)[-1][:40]
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))


def run_mxsend(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m mxsend ARGS`` in a child process, output captured as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "mxsend", *args], input=stdin, capture_output=True,
        timeout=120, check=False,
    )  # fmt: skip


@dataclass
class World:
    dns_port: int
    mx_port: int
    cafile: Path
    pid: int


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The demo's local world (DNS on 127.0.0.1, SMTP on 127.0.0.3-5) in a child process."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.world_process"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        cafile = tmp_path_factory.mktemp("world") / "ca.pem"
        cafile.write_text(info["ca"])
        yield World(info["dns_port"], info["mx_port"], cafile, child.pid)
    finally:
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, pid: int, host: str = "127.0.0.1", seconds: float = 20) -> None:
    """Wait until something accepts on host:port; fail loudly if the process died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {host}:{port} (pid {pid})")


SMTP_SINK = "/usr/sbin/smtp-sink"


@contextlib.contextmanager
def smtp_sink(*flags: str, dump: Path | None = None, port: int | None = None) -> Iterator[int]:
    """Postfix's smtp-sink on 127.0.0.1 with fault flags; yields its port. Fails if absent."""
    assert os.path.exists(SMTP_SINK), "smtp-sink missing: ./dev test installs postfix"
    port = port or free_port()
    extra = []
    if dump is not None:
        dump.chmod(0o777)  # smtp-sink writes as nobody
        extra = ["-d", f"{dump}/%M%S."]
    child = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", *extra, *flags, f"inet:127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, child.pid)
        yield port
    finally:
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=30)
