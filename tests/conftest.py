"""Shared fixtures: servers on loopback that the tests start themselves and stop by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


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
