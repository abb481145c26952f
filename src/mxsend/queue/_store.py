"""Queue stores: the interface, and the default one on local disk.

On disk (format 1), everything lives in one directory, mode 0700, files 0600::

    DIR/entries/ID.msg       the message as it will be sent, immutable; its flock is the claim
    DIR/entries/ID.json      the envelope and each recipient's state (see ``_entry``); its
                             modification time is when the entry is next due
    DIR/entries/ID.held      the same file while the entry is on hold
    DIR/entries/ID.journal   decided recipients since the .json was written, one JSON per line
    DIR/tmp/                 files being written; only renamed into entries/ once synced
    DIR/corrupt/             entries that could not be read, moved aside with their files

Enqueue writes the message and the entry to ``tmp/``, syncs both, renames the message into
``entries/``, then the entry, then syncs the directory: a reader sees an entry only with its
message, and ``enqueue`` returns only once both survive a crash (RFC 5321 6.1). A claim is an
exclusive ``flock`` on the message file, held by the claiming process: the kernel lets go of it
when that process dies, so after a SIGKILL every claimed entry is free again at once, and two
processes (a daemon and a ``queue run``) never hold one entry. Each delivered recipient is
appended to the journal as its transaction ends (an entry delivered whole is removed instead),
and :meth:`DiskStore.sync` makes a whole turn's worth durable with one syncfs(2), so a crash
re-sends only what was in flight. Releasing a claim writes the merged state to a new entry
file (synced, renamed, its time set to when it is next due) and removes the journal once
that is synced. The queue is best on a file system of its own: syncfs flushes all of it.

A store shared by several hosts (PostgreSQL) has the same interface, with leases that expire
instead of locks held by a process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from mxsend import _queuefiles
from mxsend._queuefiles import fsync_dir as _fsync_dir
from mxsend._queuefiles import write_all as _write_all
from mxsend._queuefiles import write_new as _write_new
from mxsend.protocol import Content, ContentError, Message, MxsendError
from mxsend.queue._entry import (
    Entry,
    EntryFormatError,
    QueuedRecipient,
    apply_journal,
    entry_from_json,
    entry_to_json,
    journal_line,
)

__all__ = [
    "BusyError",
    "Claim",
    "DiskStore",
    "NoSuchEntryError",
    "QueueError",
    "QueueStats",
    "QueueStore",
    "default_queue_dir",
    "new_entry",
]

_OPEN = _queuefiles.OPEN
_CHUNK = 1 << 16
# Files in tmp/ older than this were left by a process that died while writing them.
_STALE = 3600.0
# Messages up to this size are read whole when claimed, to go out in a pipelined group; a
# daemon holds at most workers x batch of them (4 x 250 x 32 KiB = 32 MB). Larger ones are
# streamed from their file, never read whole.
_READ_WHOLE = 32 * 1024


class QueueError(MxsendError):
    """The queue cannot be used or changed: it says why, on one line."""


class NoSuchEntryError(QueueError):
    """No entry has that id."""


class BusyError(QueueError):
    """Another process is delivering that entry right now."""


@dataclass
class Claim:
    """An entry this process may deliver, and its message, until :meth:`QueueStore.release`."""

    entry: Entry
    content: Content
    handle: Any = field(default=None, repr=False)  #: the store's own: a lock, a lease
    path: str | None = None  #: the message's file, when the store keeps it in one


@dataclass(frozen=True, slots=True)
class QueueStats:
    messages: int
    held: int
    recipients: dict[str, int]  #: by state
    destinations: dict[str, int]  #: undecided recipients by domain

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> QueueStats:
        messages = held = 0
        states: dict[str, int] = {}
        destinations: dict[str, int] = {}
        for entry in entries:
            messages += 1
            held += entry.held
            for r in entry.recipients:
                states[r.state.value] = states.get(r.state.value, 0) + 1
                if not r.state.decided:
                    domain = r.recipient.address.domain.lower()
                    destinations[domain] = destinations.get(domain, 0) + 1
        return cls(messages, held, states, destinations)


class QueueStore(Protocol):
    """Where queued mail is kept. Every method is synchronous and durable when it returns."""

    def enqueue(self, entries: Sequence[tuple[Entry, Message]]) -> list[str]:
        """Keep each entry with its message's content, all durable in one commit."""
        ...

    def scan(self, now: float | None = None) -> list[str]:
        """Ids of entries not on hold that are due at ``now`` (all when None), earliest first."""
        ...

    def claim(self, ids: Sequence[str]) -> list[Claim]:
        """Claim those of ``ids`` nobody else holds; vanished and unreadable ones are skipped
        (unreadable ones moved aside)."""
        ...

    def record(
        self, claim: Claim, decided: Sequence[QueuedRecipient], *, sync: bool = True
    ) -> None:
        """Keep the decided recipients (after each transaction): durable now, or with
        ``sync=False`` at the next :meth:`sync` (a group commit)."""
        ...

    def release(self, claim: Claim, entry: Entry, *, sync: bool = True) -> None:
        """Keep ``entry`` as the claimed entry's new state and let it go; an entry whose
        recipients are all decided is removed. ``sync=False``: durable at the next sync."""
        ...

    def sync(self) -> None:
        """Make everything recorded or released with ``sync=False`` durable, at once."""
        ...

    def finish(self, claim: Claim, *, sync: bool = True) -> None:
        """Remove the claimed entry now that every recipient is delivered (its removal is the
        record); :meth:`release` then only lets the claim go."""
        ...

    def abandon(self, claim: Claim) -> None:
        """Let go of ``claim`` without changing the entry (what was recorded stays)."""
        ...

    def get(self, entry_id: str) -> Entry: ...
    def entries(self) -> Iterator[Entry]: ...
    def hold(self, entry_id: str) -> None: ...
    def unhold(self, entry_id: str) -> None: ...
    def delete(self, entry_id: str) -> None: ...
    def flush(self, now: float) -> int: ...
    def stats(self) -> QueueStats: ...
    def clean(self, now: float) -> int:
        """Remove what writers that died left behind; the number of files."""
        ...


def default_queue_dir(environ: dict[str, str] | None = None) -> Path:
    """``$MXSEND_QUEUE_DIR``, else /var/spool/mxsend for root, else the XDG state directory."""
    return Path(_queuefiles.default_queue_dir(os.environ if environ is None else environ))


def new_entry(message: Message, *, now: float, uid: int | None = None) -> Entry:
    """A fresh entry for ``message``: every recipient pending, due now. Duplicate recipients
    are kept once."""
    envelope = message.envelope
    seen: set[tuple[str, str]] = set()
    recipients = []
    for recipient in envelope.recipients:
        key = (recipient.address.local_part, recipient.address.domain.lower())  # RFC 5321 2.4
        if key not in seen:
            seen.add(key)
            recipients.append(QueuedRecipient(recipient, next_attempt=now))
    sender = str(envelope.sender) if envelope.sender is not None else None
    return Entry(_new_id(now), sender, envelope.options, tuple(recipients), now, uid=uid)


def _new_id(now: float) -> str:
    # Milliseconds first, so ids sort by arrival; then randomness, so processes never collide.
    return f"{int(now * 1000):011x}{secrets.token_hex(5)}"


_HEX = "0123456789abcdef"


def _valid_id(entry_id: str) -> bool:
    """12 to 64 lower-case hex digits (what ``_new_id`` makes): never a path of its own."""
    # strip() leaves something exactly when some character is not a hex digit.
    return isinstance(entry_id, str) and 12 <= len(entry_id) <= 64 and not entry_id.strip(_HEX)


def _os_error(what: str, exc: OSError) -> QueueError:
    return QueueError(f"{what}: {exc.strerror or exc}")


def _dump(entry: Entry) -> bytes:
    return json.dumps(entry_to_json(entry), separators=(",", ":")).encode() + b"\n"


class _Lock:
    """An open message file with its exclusive flock; ``journal`` once it has one."""

    def __init__(self, fd: int, stem: str = "") -> None:
        self.fd: int | None = fd
        #: The entry's files without their suffix ("" for the daemon's lock): the id of a
        #: claimed entry is checked once, when its lock is taken.
        self.stem = stem
        self.journal = False  #: the entry has a journal file (removal must take it too)
        self.finished = False  #: removed by DiskStore.finish()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


class DiskStore:
    """The default :class:`QueueStore`: files in one local directory (see the module)."""

    def __init__(self, root: str | os.PathLike[str], *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self._entries = self.root / "entries"
        self._entries_name = str(self._entries)
        self._tmp = self.root / "tmp"
        self._corrupt = self.root / "corrupt"
        self._log = log or (lambda line: sys.stderr.write(f"mxsend queue: {line}\n"))
        self._unsynced: set[str] = set()  #: journals written since the last sync
        self._entries_unsynced = False  #: names in entries/ changed since the last sync
        #: Journals of rewritten entries: removed once the rewrite is synced, so that no
        #: file system can keep the journal's removal and lose the rename.
        self._stale_journals: list[str] = []
        self._prepare()
        # Held for the store's life: syncfs through it reports every write-back error since.
        self._sync_fd: int | None = _open_dir(self._entries)

    def close(self) -> None:
        """Let go of the directory this store keeps open (it can be unmounted then)."""
        fd, self._sync_fd = self._sync_fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- the directory ---------------------------------------------------------------------

    def _prepare(self) -> None:
        try:
            folders = [str(path) for path in (self._entries, self._tmp, self._corrupt)]
            _queuefiles.prepare_dirs(str(self.root), folders)
        except _queuefiles.UnusableQueueError as exc:
            raise QueueError(str(exc)) from None

    def _path(self, entry_id: str, suffix: str) -> Path:
        return Path(self._name(entry_id, suffix))

    def _name(self, entry_id: str, suffix: str) -> str:
        """The file's path as text: what the hot paths hand to ``os`` (no Path objects)."""
        if not _valid_id(entry_id):
            raise NoSuchEntryError(f"no queue entry {entry_id!r}")
        return f"{self._entries_name}/{entry_id}{suffix}"

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, entries: Sequence[tuple[Entry, Message]]) -> list[str]:
        written: list[tuple[Path, Path, Entry]] = []
        # Opened before the writes, so that syncfs through it reports their write-back
        # errors even if another process's syncfs saw them first (Linux errseq).
        batch_fd = _open_dir(self._tmp) if len(entries) > 1 else None
        try:
            for entry, message in entries:
                token = secrets.token_hex(4)
                body = self._tmp / f"{entry.id}.{token}.msg"
                state = self._tmp / f"{entry.id}.{token}.json"
                written.append((body, state, entry))
                content = message.content
                chunks = [content] if isinstance(content, bytes) else content.chunks(_CHUNK)
                _write_new(body, chunks, sync=len(entries) == 1)
                _write_new(state, [_dump(entry)], sync=len(entries) == 1, due=entry.due)
            if batch_fd is not None:
                _sync_all(batch_fd, [p for b, s, _ in written for p in (b, s)])
            for body, _, entry in written:
                os.rename(body, self._path(entry.id, ".msg"))
            _fsync_dir(self._entries)  # every message is in place before any entry appears
            for _, state, entry in written:
                os.rename(state, self._path(entry.id, ".json"))
            _fsync_dir(self._entries)
        except (OSError, ContentError) as exc:
            self._undo(written)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if batch_fd is not None:
                os.close(batch_fd)
            raise QueueError(f"could not queue the message: {reason}") from None
        if batch_fd is not None:
            os.close(batch_fd)
        return [entry.id for _, _, entry in written]

    def _undo(self, written: list[tuple[Path, Path, Entry]]) -> None:
        """Take back a failed enqueue, entry file before message file, so no reader sees an
        entry without its body. An entry already visible is taken back only under its lock:
        one that a daemon is delivering already stays (it is as good as queued)."""
        for body, state, entry in written:
            for path in (state, body):
                with contextlib.suppress(OSError):
                    path.unlink()
            lock = None
            with contextlib.suppress(OSError):
                lock = self._lock(entry.id)
            if lock is None and self._path(entry.id, ".msg").exists():
                continue
            try:
                for suffix in (".json", ".msg"):
                    with contextlib.suppress(OSError):
                        self._path(entry.id, suffix).unlink()
            finally:
                if lock is not None:
                    lock.close()

    # -- reading ---------------------------------------------------------------------------

    def scan(self, now: float | None = None) -> list[str]:
        found: list[tuple[float, str]] = []
        for entry_id, item in self._entry_files():
            try:
                due = item.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue  # released or deleted meanwhile
            if now is None or due <= now:
                found.append((due, entry_id))
        found.sort()
        return [entry_id for _, entry_id in found]

    def _entry_files(self) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(id, directory entry) of every entry file not on hold; a stray file is none of
        ours."""
        with os.scandir(self._entries) as listing:
            for item in listing:
                name = item.name
                if name.endswith(".json") and _valid_id(name[:-5]):
                    yield name[:-5], item

    def _load(self, entry_id: str) -> tuple[Entry, str, bool]:
        """The entry with its journal applied, the suffix of the file it was read from
        (".json" or ".held"), and whether it has a journal."""
        for suffix in (".json", ".held"):
            try:
                data = _read(self._name(entry_id, suffix))
            except FileNotFoundError:
                continue
            entry = entry_from_json(_parse(data))
            if entry.id != entry_id:
                raise EntryFormatError(f"the file says it is entry {entry.id!r}")
            journal_path = self._name(entry_id, ".journal")
            # Most entries have none: asked without the cost of raising FileNotFoundError.
            # A claim's holder is the only writer, so under a claim none appears meanwhile.
            # Plain access(2): faccessat2, which follow_symlinks=False needs, is refused by
            # some sandboxes, and every journal would then be missed. A symbolic link that
            # leads nowhere is missed instead: it holds nothing, and clean() removes it.
            if not os.access(journal_path, os.F_OK):
                return entry, suffix, False
            try:
                journal = _read(journal_path)
            except FileNotFoundError:
                return entry, suffix, False
            return self._replay(entry, journal), suffix, True
        raise NoSuchEntryError(f"no queue entry {entry_id}")

    def _replay(self, entry: Entry, journal: bytes) -> Entry:
        """``entry`` with each whole journal line applied. A last line without its line end
        was torn by a crash and is left out; a line that cannot be used is logged and left
        out (its recipient is then tried again: a possible duplicate, never a loss)."""
        for raw in journal.split(b"\n")[:-1]:
            if not raw.strip():
                continue
            try:
                line = _parse(raw)
                if not isinstance(line, dict):
                    raise EntryFormatError("a journal line must be an object")
                entry = apply_journal(entry, [line])
            except (ValueError, MxsendError) as exc:
                self._log(f"{entry.id}: journal line left out ({exc})")
        return entry

    def get(self, entry_id: str) -> Entry:
        try:
            return self._load(entry_id)[0]
        except (OSError, ValueError, MxsendError) as exc:
            if isinstance(exc, NoSuchEntryError):
                raise
            raise QueueError(f"queue entry {entry_id} cannot be read: {exc}") from None

    def entries(self) -> Iterator[Entry]:
        """Every readable entry, held or not, in arrival order."""
        ids = sorted(
            {
                name.rsplit(".", 1)[0]
                for name in os.listdir(self._entries)
                if name.endswith((".json", ".held")) and _valid_id(name.rsplit(".", 1)[0])
            }
        )
        for entry_id in ids:
            try:
                yield self._load(entry_id)[0]
            except NoSuchEntryError:
                continue
            except (OSError, ValueError, MxsendError) as exc:
                self._log(f"{entry_id}: cannot be read ({exc}); skipped")

    def stats(self) -> QueueStats:
        return QueueStats.of(self.entries())

    # -- claims ----------------------------------------------------------------------------

    def _lock(self, entry_id: str) -> _Lock | None:
        """The entry's lock, or None when another process holds it. Raises OSError when its
        message file cannot be opened (FileNotFoundError once the entry is gone)."""
        stem = self._name(entry_id, "")
        fd = os.open(stem + ".msg", os.O_RDONLY | _OPEN)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return _Lock(fd, stem)

    def claim(self, ids: Sequence[str]) -> list[Claim]:
        claims = []
        for entry_id in ids:
            try:
                claim = self._claim(entry_id)
            except Exception as exc:  # one entry never stops the others
                self._log(f"{entry_id}: not claimed ({exc})")
                continue
            if claim is not None:
                claims.append(claim)
        return claims

    def _claim(self, entry_id: str) -> Claim | None:
        if not _valid_id(entry_id):
            return None
        try:
            lock = self._lock(entry_id)
        except FileNotFoundError:
            if any(os.path.lexists(self._name(entry_id, s)) for s in (".json", ".held")):
                self._move_aside(entry_id, "its message file is missing")
            return None  # else: delivered and removed meanwhile
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._move_aside(entry_id, "its message file is a symbolic link")
            return None
        if lock is None:
            return None  # another process has it
        try:
            try:
                entry, suffix, journaled = self._load(entry_id)
            except NoSuchEntryError:
                lock.close()  # delivered and removed by the previous holder
                return None
            except (ValueError, MxsendError) as exc:
                self._move_aside(entry_id, str(exc))
                lock.close()
                return None
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise  # EMFILE, EIO...: the entry may be fine; try it next time
                self._move_aside(entry_id, "a file of it is a symbolic link")
                lock.close()
                return None
            if suffix == ".held":
                lock.close()
                return None
            if entry.done:
                # Every recipient was journaled before a crash kept the holder from
                # releasing it: finish that release now.
                self._remove(entry_id)
                lock.close()
                return None
            lock.journal = journaled
            body = lock.stem + ".msg"
            assert lock.fd is not None
            size = os.fstat(lock.fd).st_size
            if size <= _READ_WHOLE:
                # Small: read through the locked descriptor, sent from memory with the rest
                # of a pipelined group. Larger ones stream from the file, never read whole.
                content = Content.from_bytes(_read_exactly(lock.fd, size))
            else:
                content = Content.from_path(body)
        except BaseException:
            lock.close()
            raise
        return Claim(entry, content, lock, body)

    def record(
        self, claim: Claim, decided: Sequence[QueuedRecipient], *, sync: bool = True
    ) -> None:
        if not decided:
            return
        path = claim.handle.stem + ".journal"
        data = b"".join(
            json.dumps(journal_line(r), separators=(",", ":")).encode() + b"\n" for r in decided
        )
        try:
            if not claim.handle.journal:  # set at claim time when one was there already
                self._entries_unsynced = True  # a new name in entries/
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _OPEN, 0o600)
            claim.handle.journal = True  # it exists now, whatever the write does
            try:
                start = os.lseek(fd, 0, os.SEEK_END)
                try:
                    _write_all(fd, data)
                except OSError:
                    # Never leave half a line for the next append to be glued to.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    raise
            finally:
                os.close(fd)
            self._unsynced.add(path)
            if sync:
                self.sync()
        except OSError as exc:
            raise _os_error(f"queue entry {claim.entry.id}: cannot record", exc) from None

    def finish(self, claim: Claim, *, sync: bool = True) -> None:
        """Remove the claimed entry, every recipient of it now delivered, straight away:
        the removal of its state file is itself the durable record (no journal line). The
        message file stays until :meth:`release` (a DSN may still quote it); should a crash
        come between, ``clean()`` removes it as an orphan."""
        stem = claim.handle.stem
        try:
            _unlink(stem + ".json")
            if claim.handle.journal:  # else there is none: the lock holder would have made it
                # Removed once the entry's removal is synced: no file system may keep the
                # journal's removal and lose the entry's (its recipients would go again).
                self._stale_journals.append(claim.entry.id)
            claim.handle.finished = True
            self._entries_unsynced = True
            if sync:
                self.sync()
        except OSError as exc:
            raise _os_error(f"queue entry {claim.entry.id}: cannot remove", exc) from None

    def release(self, claim: Claim, entry: Entry, *, sync: bool = True) -> None:
        try:
            if claim.handle.finished:
                _unlink(claim.handle.stem + ".msg")  # the rest went in finish()
            elif entry.done:
                self._remove(entry.id, sync=False)
            else:
                self._rewrite(entry, ".json", sync=False)
                if claim.handle.journal:
                    self._stale_journals.append(entry.id)
            if claim.handle.journal:
                self._unsynced.discard(self._name(entry.id, ".journal"))
            self._entries_unsynced = True
            if sync:
                self.sync()
        except OSError as exc:
            raise _os_error(f"queue entry {entry.id}: cannot save its state", exc) from None
        finally:
            claim.handle.close()

    def sync(self) -> None:
        """One syncfs(2) for everything written with ``sync=False`` (one journal commit
        however many entries), or, without it, an fsync of each journal and the directory."""
        if not self._unsynced and not self._entries_unsynced and not self._stale_journals:
            return
        try:
            if self._sync_fd is None:
                self._sync_fd = _open_dir(self._entries)
            if not _sync_filesystem(self._sync_fd):
                for path in sorted(self._unsynced):
                    with contextlib.suppress(FileNotFoundError):
                        fd = os.open(path, os.O_RDONLY | _OPEN)
                        try:
                            os.fdatasync(fd)
                        finally:
                            os.close(fd)
                _fsync_dir(self._entries)
        except OSError as exc:
            raise _os_error("cannot sync the queue", exc) from None
        self._unsynced.clear()
        self._entries_unsynced = False
        stale, self._stale_journals = self._stale_journals, []
        for entry_id in stale:  # their entries' new state is durable now
            self._unlink(entry_id, ".journal")
        if stale:
            self._entries_unsynced = True  # harmless if lost: journals apply idempotently

    def abandon(self, claim: Claim) -> None:
        """Let go of ``claim`` leaving the entry as it is on disk, journal included (after an
        error in the middle of a delivery: what was recorded stays recorded)."""
        claim.handle.close()

    def _rewrite(self, entry: Entry, suffix: str, *, sync: bool = True) -> None:
        """Replace the entry file: the new one is written and synced under tmp/ first, so a
        crash leaves the old file or the new one, whole. ``sync=False`` leaves the rename to
        the next :meth:`sync`."""
        temporary = self._tmp / f"{entry.id}.{secrets.token_hex(4)}{suffix}"
        try:
            _write_new(temporary, [_dump(entry)], sync=True, due=entry.due)
            os.rename(temporary, self._path(entry.id, suffix))
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        if sync:
            _fsync_dir(self._entries)

    def _unlink(self, entry_id: str, suffix: str) -> None:
        _unlink(self._name(entry_id, suffix))

    def _remove(self, entry_id: str, *, sync: bool = True) -> None:
        # The entry file goes first: from then on no reader sees the entry. Should a crash
        # undo an unsynced removal, the entry comes back with its journal: what the journal
        # says was delivered is not sent again.
        for suffix in (".json", ".held", ".journal", ".msg"):
            self._unlink(entry_id, suffix)
        if sync:
            _fsync_dir(self._entries)

    def _move_aside(self, entry_id: str, why: str) -> None:
        moved = []
        for suffix in (".json", ".held", ".journal", ".msg"):
            source = self._path(entry_id, suffix)
            try:
                os.rename(source, self._corrupt / source.name)
                moved.append(source.name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._log(f"{entry_id}: cannot move {source.name} aside: {exc.strerror}")
        _fsync_dir(self._entries)
        self._log(f"{entry_id}: unreadable ({why}); moved to {self._corrupt}")

    # -- commands --------------------------------------------------------------------------

    def _locked(self, entry_id: str) -> _Lock:
        exists = any(self._path(entry_id, s).exists() for s in (".json", ".held"))
        try:
            lock = self._lock(entry_id)
        except OSError as exc:
            if not exists:
                raise NoSuchEntryError(f"no queue entry {entry_id}") from None
            raise _os_error(f"queue entry {entry_id} cannot be locked", exc) from None
        if lock is None:
            raise BusyError(f"queue entry {entry_id} is being delivered now; try again")
        return lock

    def _change(self, entry_id: str, change: Callable[[Entry], tuple[Entry, str] | None]) -> None:
        lock = self._locked(entry_id)
        try:
            entry, was, _ = self._load(entry_id)
            outcome = change(entry)
            if outcome is not None:
                updated, suffix = outcome
                self._rewrite(updated, suffix)
                if was != suffix:
                    self._path(entry_id, was).unlink()
                    _fsync_dir(self._entries)
                self._unlink(entry_id, ".journal")
        except (OSError, ValueError) as exc:
            raise QueueError(f"queue entry {entry_id} cannot be changed: {exc}") from None
        finally:
            lock.close()

    def hold(self, entry_id: str) -> None:
        self._change(entry_id, lambda e: (replace(e, held=True), ".held"))

    def unhold(self, entry_id: str) -> None:
        self._change(entry_id, lambda e: (replace(e, held=False), ".json"))

    def delete(self, entry_id: str) -> None:
        lock = self._locked(entry_id)
        try:
            self._remove(entry_id)
        finally:
            lock.close()

    def flush(self, now: float) -> int:
        """Make every entry not on hold due ``now``; the number of entries."""
        count = 0
        for _, item in self._entry_files():  # no stat and no sort, as scan() needs
            try:
                os.utime(item.path, (now, now), follow_symlinks=False)
                count += 1
            except FileNotFoundError:
                continue
        return count

    # -- the daemon that serves this queue ----------------------------------------------------

    def serve(self) -> _Lock:
        """Become the queue's daemon: an exclusive lock on ``daemon.pid``, which holds this
        process's id for :meth:`wake`. Raises BusyError when a daemon already serves it."""
        path = self.root / "daemon.pid"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN, 0o600)
        except OSError as exc:
            raise _os_error(f"cannot open {path}", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BusyError(f"a daemon already serves {self.root}") from None
        os.ftruncate(fd, 0)
        _write_all(fd, f"{os.getpid()}\n".encode())
        return _Lock(fd)

    def daemon_pid(self) -> int | None:
        """The id of the process serving this queue, or None when no daemon does."""
        return _queuefiles.daemon_pid(self.root)

    def wake(self) -> bool:
        """Ask the daemon serving this queue to look for due work now (SIGUSR1)."""
        return _queuefiles.wake(self.root)

    def clean(self, now: float) -> int:
        """Remove what dead writers left: stale files in tmp/ and messages without an entry."""
        removed = 0
        for item in os.scandir(self._tmp):
            if now - item.stat(follow_symlinks=False).st_mtime > _STALE:
                os.unlink(item.path)
                removed += 1
        names = set(os.listdir(self._entries))
        for name in names:
            entry_id, _, suffix = name.rpartition(".")
            if suffix not in ("msg", "journal"):
                continue
            if f"{entry_id}.json" in names or f"{entry_id}.held" in names:
                continue
            path = self._entries / name
            try:
                if now - os.lstat(path).st_mtime > _STALE:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _parse(data: bytes) -> Any:
    """JSON from an entry or journal file; nesting too deep for the parser is a format
    error (the entry is moved aside), never a RecursionError for the caller."""
    try:
        return json.loads(data)
    except RecursionError:
        raise EntryFormatError("nested too deeply") from None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read(path: str | Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _OPEN)
    try:
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    """Everything from ``fd``'s position to its end, with plain reads (no file object)."""
    chunks = []
    while chunk := os.read(fd, _CHUNK):  # an entry file is one read and the end's
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_exactly(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise OSError(errno.EIO, f"read {len(data)} of {size} octets")
    return data


def _open_dir(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _sync_filesystem(fd: int) -> bool:
    """syncfs(2) on the file system of ``fd``: True when it synced and reported no error.
    False when it cannot be trusted to report write-back errors (no syncfs in the C
    library, or Linux before 5.8) or it failed: the caller then syncs file by file, which
    reports the error."""
    syncfs = _syncfs()
    return syncfs is not None and syncfs(fd) == 0


def _sync_all(fd: int, paths: Sequence[Path]) -> None:
    """Make ``paths`` durable: one syncfs(2) through ``fd`` (one journal commit for a
    whole batch), else an fsync each."""
    if _sync_filesystem(fd):
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY | _OPEN)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_SYNCFS: list[Callable[[int], int] | None] = []


def _reports_errors() -> bool:
    """Whether syncfs(2) reports write-back errors: Linux 5.8 and later."""
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (5, 8)
    except (IndexError, ValueError):
        return False


def _syncfs() -> Callable[[int], int] | None:
    if not _SYNCFS:
        if not _reports_errors():
            _SYNCFS.append(None)
            return None
        try:
            import ctypes  # noqa: PLC0415 - only batches need it

            function = ctypes.CDLL(None, use_errno=True).syncfs
            function.argtypes = [ctypes.c_int]
            _SYNCFS.append(function)
        except (OSError, AttributeError):
            _SYNCFS.append(None)
    return _SYNCFS[0]
