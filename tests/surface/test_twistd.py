"""`twistd -n mxsend send ...` and `twistd -ny examples/tutorial.tac` deliver and exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import World

ROOT = Path(__file__).parent.parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")


def test_twistd_plugin_delivers_and_exits_with_status(world: World, tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\n\nhello\n")
    args = ["--dns", f"127.0.0.1:{world.dns_port}", "--mx-port", str(world.mx_port)]
    ok = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "mxsend", "send", *args, "--from", "a@x.test",
         "--to", "ann@alpha.test", "--json", str(message)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"status": "delivered"' in ok.stdout
    deferred = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "mxsend", "send", *args, "--from", "a@x.test",
         "--to", "busy@gamma.test", str(message)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert deferred.returncode == 75, deferred.stdout + deferred.stderr
    bad = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "mxsend", "send", *args, "--from", "a@x.test",
         "--to", "x\ry@z.test", str(message)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert bad.returncode == 65 and "mxsend: " in bad.stderr


def test_tutorial_tac(world: World, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        MXSEND_TO="ann@alpha.test,bob@beta.test",
        MXSEND_DNS=f"127.0.0.1:{world.dns_port}",
        MXSEND_MX_PORT=str(world.mx_port),
        MXSEND_CAFILE=str(world.cafile),
    )
    done = subprocess.run(
        [TWISTD, "-ny", str(ROOT / "examples" / "tutorial.tac"), "--pidfile="],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ann@alpha.test: delivered 250" in done.stdout
    assert "bob@beta.test: delivered 250" in done.stdout


def test_twistd_daemon_delivers_the_queue_and_stops_on_sigterm(
    world: World, tmp_path: Path
) -> None:
    import json
    import signal
    import time

    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\n\nhello\n")
    spool = tmp_path / "q"
    queued = subprocess.run(
        [sys.executable, "-m", "mxsend", "send", "--queue", "--queue-dir", str(spool),
         "--from", "a@x.test", "--to", "ann@alpha.test", "--json", str(message)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    [entry_id] = json.loads(queued.stdout)["queued"]
    args = ["--dns", f"127.0.0.1:{world.dns_port}", "--mx-port", str(world.mx_port)]
    log = tmp_path / "twistd.log"
    child = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", f"--logfile={log}", "mxsend", "daemon", *args,
         "--queue-dir", str(spool)],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and f"{entry_id}: to=<ann@alpha.test>" in log.read_text()):
            assert child.poll() is None, log.read_text() if log.exists() else ""
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.1)
        assert "status=sent" in log.read_text()
        assert not list((spool / "entries").iterdir())
        child.send_signal(signal.SIGTERM)
        # twistd ends as its applications do after a signal: by re-raising it once the
        # reactor has stopped cleanly (systemd counts that as a clean stop).
        assert child.wait(timeout=30) in (0, -signal.SIGTERM)
        text = log.read_text()
        assert "Traceback" not in text and "Main loop terminated." in text, text
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def test_twistd_daemon_refuses_processes(tmp_path: Path) -> None:
    # Several processes are `mxsend daemon`'s to start; under twistd it would be ignored.
    done = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "mxsend", "daemon", "--processes", "2",
         "--queue-dir", str(tmp_path / "q")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 64 and "--processes" in done.stderr, done.stderr
