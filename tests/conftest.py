"""Shared fixtures: servers on loopback that the tests start themselves and stop by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


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
def smtp_sink(*flags: str, dump: Path | None = None) -> Iterator[int]:
    """Postfix's smtp-sink on 127.0.0.1 with fault flags; yields its port. Fails if absent."""
    assert os.path.exists(SMTP_SINK), "smtp-sink missing: ./dev test installs postfix"
    port = free_port()
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
