"""What the Twisted shell keeps and runs for configured routes: a password command's deadline
holds whatever the command started, its stderr and environment stay its own, password files
are checked like DKIM keys, and per-destination state does not grow without bound."""

from __future__ import annotations

import os
import sys
import time

import pytest
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import TestCase

from mxsend.routing._table import Auth, DomainRoute, Rate, Relay
from mxsend.twisted._routes import MAX_SECRET, PRUNE_AT, CredentialsError, RouteState, run_command
from tests.conftest import temp_dir


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class PasswordCommands(TestCase):
    timeout = 60

    async def _deadline(self) -> None:
        folder = temp_dir(self)
        pidfile = folder / "grandchild"
        cases = [
            # The shell waits on its child: killing the shell alone left sleep (and the pipe).
            (f"sleep 30 & echo $! > {pidfile}; wait", "still running after 1s, killed"),
            # The shell is done; what it left behind holds stdout open.
            (f"sleep 30 & echo $! > {pidfile}; echo tok", "still held its output after 1s"),
        ]
        for script, why in cases:
            started = time.monotonic()
            with pytest.raises(CredentialsError) as caught:
                await run_command(reactor, ("/bin/sh", "-c", script), seconds=1)
            assert why in str(caught.value), caught.value
            assert time.monotonic() - started < 5  # not the 30 s the grandchild sleeps
            grandchild = int(pidfile.read_text())
            deadline = time.monotonic() + 5
            while not _gone(grandchild):  # killed with its process group
                assert time.monotonic() < deadline, f"pid {grandchild} still running"
                await task.deferLater(reactor, 0.05, lambda: None)

    def test_the_deadline_kills_what_the_command_started(self) -> Deferred[None]:
        return ensureDeferred(self._deadline())

    async def _stderr(self) -> None:
        script = "echo 'token endpoint said: refresh_token=1//0gSECRET' >&2; exit 1"
        with pytest.raises(CredentialsError) as caught:
            await run_command(reactor, ("/bin/sh", "-c", script))
        text = str(caught.value)
        assert "exited with status 1" in text and "SECRET" not in text, text
        assert "refresh_token" not in text

    def test_stderr_never_reaches_the_error(self) -> Deferred[None]:
        return ensureDeferred(self._stderr())

    async def _environment(self) -> None:
        for name, value in (("MXSEND_PASSWORD", "leak"), ("OTHER", "x")):
            self.addCleanup(_restore, name, os.environ.get(name))
            os.environ[name] = value
        code = (
            "import os; print(os.environ.get('MXSEND_PASSWORD'), os.environ.get('OTHER'),"
            " 'PATH' in os.environ)"
        )
        assert await run_command(reactor, (sys.executable, "-c", code)) == "None None True"

    def test_a_minimal_environment(self) -> Deferred[None]:
        return ensureDeferred(self._environment())


class PasswordFiles(TestCase):
    timeout = 30

    async def _files(self) -> None:
        folder = temp_dir(self)
        state = RouteState(reactor)

        def auth(name: str, data: bytes | None, mode: int = 0o600) -> Auth:
            path = folder / name
            if data is not None:
                path.write_bytes(data)
                path.chmod(mode)
            return Auth("me", password_file=str(path))

        assert await state._secret(auth("ok", b"secret\nignored\n")) == "secret"
        assert await state._secret(auth("group", b"secret\n", 0o640)) == "secret"
        os.mkfifo(folder / "fifo", 0o600)  # refused, never waited on
        for name, data, mode, why in [
            ("open", b"secret\n", 0o644, "is open to other users (mode 0644)"),
            ("writable", b"secret\n", 0o602, "is open to other users (mode 0602)"),
            ("groupw", b"secret\n", 0o660, "is writable by its group (mode 0660)"),
            ("fifo", None, 0, "is not a regular file"),
            ("long", b"x" * (MAX_SECRET + 1) + b"\n", 0o600, "first line is longer than"),
            ("longer", b"x" * (3 * MAX_SECRET), 0o600, "first line is longer than"),
        ]:
            with pytest.raises(CredentialsError) as caught:
                await state._secret(auth(name, data, mode))
            assert why in str(caught.value), caught.value
        exact = b"y" * MAX_SECRET
        assert await state._secret(auth("exact", exact + b"\r\n")) == exact.decode()

    def test_password_files_are_checked(self) -> Deferred[None]:
        return ensureDeferred(self._files())


def test_auth_repr_shows_no_command_arguments_nor_password() -> None:
    auth = Auth("me", "XOAUTH2", password_command=("/bin/tok", "--refresh", "1//0gSECRET"))
    route = DomainRoute(relay=Relay("r.example"), auth=auth)
    for text in (repr(auth), repr(route), str(auth)):
        assert "SECRET" not in text and "--refresh" not in text and "/bin/tok" in text, text
    assert "hunter2" not in repr(Auth("me", password="hunter2"))
    assert auth.password_command == ("/bin/tok", "--refresh", "1//0gSECRET")  # kept, unshown


def test_per_destination_state_stays_bounded() -> None:
    clock = task.Clock()
    state = RouteState(clock)
    busy = state.slots("busy.example", 2)
    busy.acquire()
    rate = Rate(100, 60.0)
    for batch in range(5):
        for i in range(2000):
            destination = f"d{batch}-{i}.example"
            slots = state.slots(destination, 2)
            slots.acquire()
            slots.release()
            taken = ensureDeferred(state.take(destination, rate, 1))
            assert taken.called
        clock.advance(60)  # every bucket full again
    # 10,000 destinations used, those idle dropped: at most a sweep's worth are left.
    assert len(state._slots) <= 2 * PRUNE_AT, len(state._slots)
    assert len(state._buckets) <= 2 * PRUNE_AT, len(state._buckets)
    # What is in use is never dropped: its holders and waiters share it still.
    assert state.slots("busy.example", 2) is busy


def test_a_bucket_that_has_not_refilled_is_kept() -> None:
    clock = task.Clock()
    state = RouteState(clock)
    rate = Rate(1, 60.0)
    ensureDeferred(state.take("slow.example", rate, 1))
    for i in range(2 * PRUNE_AT):
        ensureDeferred(state.take(f"d{i}.example", rate, 1))
    waiting = ensureDeferred(state.take("slow.example", rate, 1))
    assert not waiting.called  # still empty: its rate holds across the sweeps
    clock.advance(60)
    assert waiting.called
