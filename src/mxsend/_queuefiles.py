"""The queue directory's file primitives, on the standard library alone: shared by the store
(:mod:`mxsend.queue._store`) and by mxsend-sendmail's lean path (:mod:`mxsend.cli._drop`),
which writes an entry without importing the queue package. One place for the rules that
make an entry durable and the directory safe."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs the lean path an import; mypy takes this as True
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "COMMIT_INTERVAL",
    "LAST_TIME",
    "OPEN",
    "UnusableQueueError",
    "daemon_pid",
    "default_queue_dir",
    "fsync_dir",
    "prepare_dirs",
    "wake",
    "write_all",
    "write_new",
]

#: Opening a queue file never follows a symlink, and never leaks into a child.
OPEN = os.O_NOFOLLOW | os.O_CLOEXEC
#: Seconds a delivery record (journal line, removed entry) may wait for the group commit
#: that makes it survive a crash of the machine; a crash of the process loses none. A commit
#: at the end of every reactor turn cost about 15% of the drain rate here (Postfix does not
#: sync its delivery records at all).
COMMIT_INTERVAL = 0.2
#: An entry with nothing left to try is never due; file times end somewhere (year 9999).
LAST_TIME = 253402300799.0


class UnusableQueueError(Exception):
    """The queue directory cannot be used; ``str()`` says why, on one line."""


def default_queue_dir(environ: Mapping[str, str]) -> str:
    """``$MXSEND_QUEUE_DIR``, else /var/spool/mxsend for root, else the XDG state directory."""
    if environ.get("MXSEND_QUEUE_DIR"):
        return environ["MXSEND_QUEUE_DIR"]
    if os.geteuid() == 0:
        return "/var/spool/mxsend"
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(state, "mxsend", "queue")


def prepare_dirs(root: str, subdirectories: Iterable[str]) -> None:
    """``root`` and its ``subdirectories``, made when missing: each a directory (not a
    symlink), this user's, and 0700 (tightened when it is not)."""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        for path in (root, *subdirectories):
            os.makedirs(path, mode=0o700, exist_ok=True)
            info = os.lstat(path)
            if info.st_mode & 0o170000 != 0o040000:
                raise UnusableQueueError(f"{path} is not a directory")
            if info.st_uid != os.geteuid():
                raise UnusableQueueError(f"{path} belongs to uid {info.st_uid}, not to this user")
            if info.st_mode & 0o077:
                os.chmod(path, 0o700, follow_symlinks=False)
    except OSError as exc:
        raise UnusableQueueError(f"cannot use the queue directory {root}: {exc.strerror}") from None


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(
    path: str | os.PathLike[str],
    chunks: Iterable[bytes],
    *,
    sync: bool,
    due: float | None = None,
) -> None:
    """Create ``path`` (never an existing file or a symlink), 0600, with ``chunks``; its
    modification time is ``due`` when given (an entry file's is when it is next due; set
    before the sync, so it is synced too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN, 0o600)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        if due is not None:
            due = min(due, LAST_TIME)
            os.utime(fd, (due, due))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def daemon_pid(root: str | os.PathLike[str]) -> int | None:
    """The id of the process serving the queue at ``root`` (it holds the flock of
    ``daemon.pid``), or None when no daemon does."""
    import fcntl  # noqa: PLC0415 - only a submission that wakes a daemon needs it

    try:
        fd = os.open(os.path.join(root, "daemon.pid"), os.O_RDONLY | OPEN)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: a daemon that has gone
    finally:
        os.close(fd)


def wake(root: str | os.PathLike[str]) -> bool:
    """Ask the daemon serving the queue at ``root`` to look for due work now (SIGUSR1);
    False when no daemon serves it."""
    pid = daemon_pid(root)
    if pid is None:
        return False
    import _signal  # type: ignore[import-not-found]  # noqa: PLC0415 - signal's numbers, no enums

    try:
        os.kill(pid, _signal.SIGUSR1)
    except OSError:
        return False
    return True
