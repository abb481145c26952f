"""The queue stores: the disk store's layout, permissions, claims across processes (flock,
SIGKILL), the journal after a crash, corrupt and planted files, a full disk; and the memory
store's contract with leases that expire. Everything lives under pytest's tmp_path."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from mxsend.protocol import (
    Body,
    Content,
    ContentError,
    EnhancedStatus,
    Envelope,
    MailOptions,
    Message,
    Notify,
    RcptOptions,
    Reply,
    Ret,
)
from mxsend.queue import (
    Attempt,
    BusyError,
    Claim,
    DiskStore,
    Entry,
    MemoryStore,
    NoSuchEntryError,
    QueuedRecipient,
    QueueError,
    QueueStore,
    RecipientState,
    default_queue_dir,
    enqueue,
)

NOW = 1_700_000_000.0  # whole seconds: file times keep them exactly
HOUR = 3600.0
SENDER = "alice@example.com"
BOB = "bob@example.net"
CAROL = "carol@example.org"
# Every octet value, CRLF and bare LF and CR, a NUL, 8-bit text: stored as given.
BODY = b"Subject: hi\r\n\r\nline\nbare\rcr\x00nul\r\n" + bytes(range(256)) + "é\n".encode()


def message(
    recipients: Sequence[str] = (BOB,),
    content: bytes | Content = BODY,
    *,
    sender: str | None = SENDER,
    options: MailOptions | None = None,
    rcpt: RcptOptions | None = None,
) -> Message:
    """The one way these tests build a message."""
    return Message(Envelope.build(sender, recipients, options, rcpt), content)


def recipient(entry: Entry, address: str) -> QueuedRecipient:
    found = entry.recipient(address)
    assert found is not None, f"{address} is not a recipient of {entry.id}"
    return found


def delivered(r: QueuedRecipient, at: float = NOW + 1) -> QueuedRecipient:
    reply = Reply(250, ("2.0.0 queued as 1234",), EnhancedStatus.parse("2.0.0"))
    attempt = Attempt(at, RecipientState.DELIVERED, reply, "mx.example.net", "192.0.2.1")
    return r.after(attempt, r.attempts + 1, 0.0)


def failed(r: QueuedRecipient, at: float = NOW + 1) -> QueuedRecipient:
    reply = Reply(550, ("5.1.1 no such user",), EnhancedStatus.parse("5.1.1"))
    attempt = Attempt(at, RecipientState.FAILED, reply, "mx.example.org", "192.0.2.2")
    return r.after(attempt, r.attempts + 1, 0.0)


def deferred(r: QueuedRecipient, next_attempt: float, at: float = NOW + 1) -> QueuedRecipient:
    reply = Reply(451, ("4.7.1 try later",), EnhancedStatus.parse("4.7.1"))
    attempt = Attempt(at, RecipientState.DEFERRED, reply, "mx.example.org", "192.0.2.2")
    return r.after(attempt, r.attempts + 1, next_attempt)


def read(claim: Claim) -> bytes:
    return b"".join(claim.content.chunks())


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def broken_after_first_chunk() -> Iterator[bytes]:
    yield b"Subject: half\r\n\r\n" + b"x" * 1000
    raise ContentError("the source went away")


class Logged:
    """A ``log=`` callback that keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> QueueStore:
    if request.param == "disk":
        return DiskStore(tmp_path / "queue", log=Logged())
    return MemoryStore(clock=Clock())


def disk(tmp_path: Path, log: Logged | None = None) -> DiskStore:
    return DiskStore(tmp_path / "queue", log=log or Logged())


def entries_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue" / "entries"


# -- another process, for flock ------------------------------------------------------------

CHILD = """
import sys, time
from mxsend.queue import BusyError, DiskStore
store = DiskStore(sys.argv[1], log=lambda line: None)
entry_id = sys.argv[2]
for action in sys.argv[3:]:
    if action == "claim":
        print(len(store.claim([entry_id])), flush=True)
    elif action == "claim-and-sleep":
        print("claimed" if store.claim([entry_id]) else "not claimed", flush=True)
        time.sleep(60)
    else:
        try:
            getattr(store, action)(entry_id)
        except BusyError:
            print("busy", flush=True)
        else:
            print("done", flush=True)
"""


def in_child(root: Path, entry_id: str, *actions: str) -> list[str]:
    """What a DiskStore in another process says to ``actions`` on ``entry_id``."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), entry_id, *actions],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# -- enqueue and get -------------------------------------------------------------------------


def test_one_message_round_trips_every_envelope_field(store: QueueStore) -> None:
    options = MailOptions(
        size=1234,
        body=Body.EIGHT_BIT_MIME,
        smtputf8=True,
        ret=Ret.HDRS,
        envid="env-42+x",
        requiretls=True,
    )
    rcpt = RcptOptions(frozenset({Notify.FAILURE, Notify.DELAY}), "Orig@example.net")
    sent = message([BOB, CAROL, BOB], options=options, rcpt=rcpt)
    ids = enqueue(store, sent, now=NOW, uid=1000)
    assert len(ids) == 1
    entry = store.get(ids[0])
    assert entry.id == ids[0]
    assert entry.sender == SENDER
    assert entry.mail == options
    assert entry.arrival == NOW and entry.uid == 1000
    assert not entry.held and not entry.warned and not entry.is_bounce
    assert [r.address for r in entry.recipients] == [BOB, CAROL]  # the duplicate kept once
    for r in entry.recipients:
        assert r.recipient.options == rcpt
        assert r.state is RecipientState.PENDING
        assert r.attempts == 0 and r.next_attempt == NOW and r.history == ()
    assert entry.due == NOW
    assert entry.envelope() == Envelope(sent.envelope.sender, sent.envelope.recipients[:2], options)
    [claim] = store.claim(ids)
    try:
        assert claim.entry == entry
        assert read(claim) == BODY
        assert read(claim) == BODY  # a claim's content can be sent again (next MX)
    finally:
        store.release(claim, claim.entry)


def test_a_batch_gets_one_id_each_in_order(store: QueueStore) -> None:
    bodies = [BODY + str(n).encode() for n in range(3)]
    sent = [message([f"user{n}@example.net"], body) for n, body in enumerate(bodies)]
    ids = enqueue(store, sent, now=NOW)
    assert len(set(ids)) == 3
    for entry_id, body, n in zip(ids, bodies, range(3), strict=True):
        assert [r.address for r in store.get(entry_id).recipients] == [f"user{n}@example.net"]
        [claim] = store.claim([entry_id])
        assert read(claim) == body
        store.release(claim, claim.entry)
    assert sorted(store.scan(None)) == sorted(ids)
    assert [e.id for e in store.entries()] == sorted(ids)


def test_the_null_sender_round_trips_as_none(store: QueueStore) -> None:
    [entry_id] = enqueue(store, message(sender=None), now=NOW)
    entry = store.get(entry_id)
    assert entry.sender is None and entry.is_bounce
    assert entry.envelope().sender is None


def test_content_from_a_file_and_from_chunks_is_stored_byte_for_byte(
    store: QueueStore, tmp_path: Path
) -> None:
    source = tmp_path / "message.eml"
    big = BODY * 300  # more than one 64 KiB chunk
    source.write_bytes(big)
    pieces = [BODY, b"", b"\r\n", BODY * 2]
    ids = enqueue(
        store,
        [message(content=Content.from_path(source)), message(content=Content.from_chunks(pieces))],
        now=NOW,
    )
    claims = store.claim(ids)
    assert [read(c) for c in claims] == [big, b"".join(pieces)]
    for claim in claims:
        store.release(claim, claim.entry)


def test_disk_files_carry_the_entry_and_the_message(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message(), now=NOW)
    entries = entries_dir(tmp_path)
    assert names(entries) == [f"{entry_id}.json", f"{entry_id}.msg"]
    assert (entries / f"{entry_id}.msg").read_bytes() == BODY
    assert os.stat(entries / f"{entry_id}.json").st_mtime == NOW  # due now
    data = json.loads((entries / f"{entry_id}.json").read_text())
    assert data["format"] == 1 and data["id"] == entry_id and data["sender"] == SENDER
    assert names(tmp_path / "queue" / "tmp") == []
    assert store.scan(NOW) == [entry_id]
    assert store.scan(NOW - 1) == []


# -- nothing half-queued ---------------------------------------------------------------------


def test_content_failing_midway_queues_nothing(store: QueueStore, tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="went away"):
        enqueue(store, message(content=Content.from_chunks(broken_after_first_chunk())), now=NOW)
    assert store.scan(None) == []
    assert list(store.entries()) == []
    if isinstance(store, DiskStore):
        assert names(entries_dir(tmp_path)) == []
        assert names(tmp_path / "queue" / "tmp") == []


def test_a_batch_with_a_failing_third_message_queues_none_of_it(
    store: QueueStore, tmp_path: Path
) -> None:
    batch = [
        message([BOB]),
        message([CAROL]),
        message([BOB], Content.from_chunks(broken_after_first_chunk())),
        message([CAROL]),
    ]
    with pytest.raises(QueueError, match="went away"):
        enqueue(store, batch, now=NOW)
    assert store.scan(None) == []
    assert list(store.entries()) == []
    assert store.stats().messages == 0
    if isinstance(store, DiskStore):
        assert names(entries_dir(tmp_path)) == []
        assert names(tmp_path / "queue" / "tmp") == []
    # and the store still works afterwards
    [entry_id] = enqueue(store, message(), now=NOW)
    assert store.scan(None) == [entry_id]


def test_messages_are_in_place_before_any_entry_and_a_failed_rename_undoes_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = disk(tmp_path)
    real = os.rename
    moved: list[str] = []
    fail_on_json: list[int] = [2]  # fail the second entry file's rename

    def rename(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        name = Path(target).name
        if name.endswith(".json"):
            fail_on_json[0] -= 1
            if fail_on_json[0] == 0:
                raise OSError(errno.EIO, "Input/output error")
        real(source, target)
        moved.append(name.rsplit(".", 1)[1])

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(QueueError, match="Input/output error"):
        enqueue(store, [message(), message([CAROL]), message()], now=NOW)
    assert moved == ["msg", "msg", "msg", "json"]
    assert names(entries_dir(tmp_path)) == []
    assert names(tmp_path / "queue" / "tmp") == []
    assert store.scan(None) == []

    moved.clear()
    ids = enqueue(store, [message(), message([CAROL]), message()], now=NOW)
    assert moved == ["msg", "msg", "msg", "json", "json", "json"]
    assert sorted(store.scan(None)) == sorted(ids)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs under tmp_path, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(
            f"the disk-full test needs a small tmpfs and could not mount one on {mount} "
            f"(it must run as root, with mount(8)): {done.stderr.strip() or done.returncode}"
        )
    try:
        yield mount
    finally:
        _unmount(mount)


def test_a_full_disk_leaves_every_entry_whole(small_disk: Path) -> None:
    store = DiskStore(small_disk / "queue", log=Logged())
    small = [BODY * 50 + bytes([n]) for n in range(40)]  # about 16 KB each
    queued: dict[str, bytes] = {}
    for body in small[:4]:
        [entry_id] = enqueue(store, message(content=body), now=NOW)
        queued[entry_id] = body
    with pytest.raises(QueueError, match=r"(?i)no space"):
        enqueue(store, message(content=b"x" * 400_000), now=NOW)
    # fill it up: one of these fails somewhere, in the message or in the entry file
    for body in small[4:]:
        try:
            [entry_id] = enqueue(store, message(content=body), now=NOW)
        except QueueError as exc:
            assert "no space" in str(exc).lower(), exc
            break
        queued[entry_id] = body
    else:
        pytest.fail("a 256 KB file system took 40 messages of 16 KB")
    with pytest.raises(QueueError, match=r"(?i)no space"):
        enqueue(store, [message(content=body) for body in small[:3]], now=NOW)

    entries = small_disk / "queue" / "entries"
    assert names(small_disk / "queue" / "tmp") == []
    ids = sorted(name[:-5] for name in os.listdir(entries) if name.endswith(".json"))
    assert ids == sorted(queued)
    assert names(entries) == sorted(f"{i}{s}" for i in ids for s in (".json", ".msg"))
    for entry_id in ids:
        assert [r.address for r in store.get(entry_id).recipients] == [BOB]
    claims = store.claim(ids)
    try:
        assert {c.entry.id: read(c) for c in claims} == queued
    finally:
        for claim in claims:
            claim.handle.close()  # a release would need space; the disk must be unmounted


# -- permissions and planted files -----------------------------------------------------------


def test_a_new_queue_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = disk(tmp_path)
        ids = enqueue(store, [message(), message([CAROL])], now=NOW)
        [claim] = store.claim(ids[:1])
        store.record(claim, [delivered(claim.entry.recipients[0])])  # a journal...
        store.hold(ids[1])  # ...and a held entry
        root = tmp_path / "queue"
        for directory in (root, root / "entries", root / "tmp", root / "corrupt"):
            assert mode(directory) == 0o700, directory
        files = list((root / "entries").iterdir())
        assert {p.suffix for p in files} == {".msg", ".json", ".journal", ".held"}
        for path in files:
            assert mode(path) == 0o600, path
        store.release(claim, claim.entry.with_recipient(deferred(recipient(claim.entry, BOB), NOW)))
        assert mode(root / "entries" / f"{ids[0]}.json") == 0o600  # rewritten: still private
    finally:
        os.umask(old)


@pytest.mark.parametrize("loose", ["", "entries", "tmp", "corrupt"])
def test_an_existing_open_directory_is_tightened(tmp_path: Path, loose: str) -> None:
    root = tmp_path / "queue"
    (root / loose).mkdir(parents=True, exist_ok=True)
    os.chmod(root / loose, 0o755)
    DiskStore(root, log=Logged())
    for sub in ("", "entries", "tmp", "corrupt"):
        assert mode(root / sub) == 0o700, sub


@pytest.mark.parametrize("foreign", ["", "entries"])
def test_a_directory_of_another_user_is_refused(tmp_path: Path, foreign: str) -> None:
    assert os.geteuid() == 0, "this test chowns a folder: it runs as root"
    root = tmp_path / "queue"
    (root / foreign).mkdir(parents=True, exist_ok=True)
    os.chown(root / foreign, 12345, 12345)
    with pytest.raises(QueueError, match="12345"):
        DiskStore(root, log=Logged())


@pytest.mark.parametrize("linked", ["queue", "entries"])
def test_a_symlinked_queue_directory_is_refused(tmp_path: Path, linked: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "queue"
    if linked == "queue":
        root.symlink_to(elsewhere)
    else:
        root.mkdir(mode=0o700)
        (root / "entries").symlink_to(elsewhere)
    with pytest.raises(QueueError, match="not a directory"):
        DiskStore(root, log=Logged())
    assert names(elsewhere) == []


def _plant(entries: Path, name: str, outside: Path, data: bytes) -> None:
    """Replace ``entries/name`` with a symlink to ``outside``, which holds ``data``."""
    outside.write_bytes(data)
    (entries / name).unlink(missing_ok=True)
    (entries / name).symlink_to(outside)


def test_a_symlinked_entry_file_is_not_followed(tmp_path: Path) -> None:
    log = Logged()
    store = disk(tmp_path, log)
    bad, good = enqueue(store, [message(), message([CAROL])], now=NOW)
    entries = entries_dir(tmp_path)
    forged = json.loads((entries / f"{bad}.json").read_text())
    forged["sender"] = "mallory@example.org"
    outside = tmp_path / "outside.json"
    _plant(entries, f"{bad}.json", outside, json.dumps(forged).encode())

    with pytest.raises(QueueError) as raised:
        store.get(bad)
    assert not isinstance(raised.value, NoSuchEntryError)
    assert [e.id for e in store.entries()] == [good]
    assert [e.sender for e in store.entries()] == [SENDER]
    claims = store.claim([bad, good])
    assert [c.entry.id for c in claims] == [good]
    corrupt = tmp_path / "queue" / "corrupt"
    assert (corrupt / f"{bad}.json").is_symlink()  # the link itself moved, not its target
    assert outside.read_bytes() == json.dumps(forged).encode()
    assert not any(name.startswith(bad) for name in os.listdir(entries))
    store.release(claims[0], claims[0].entry)


@pytest.mark.parametrize("suffix", [".held", ".journal"])
def test_a_symlinked_held_file_or_journal_is_not_read(tmp_path: Path, suffix: str) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    entries = entries_dir(tmp_path)
    original = (entries / f"{entry_id}.json").read_bytes()
    reply = {"code": 250, "lines": ["ok"], "enhanced": None, "local": False}
    line = {"address": BOB, "state": "delivered", "attempts": 1, "at": NOW, "reply": reply}
    target = original if suffix == ".held" else json.dumps(line).encode() + b"\n"
    if suffix == ".held":
        (entries / f"{entry_id}.json").unlink()
    outside = tmp_path / f"outside{suffix}"
    _plant(entries, f"{entry_id}{suffix}", outside, target)
    with pytest.raises(QueueError):
        store.get(entry_id)
    assert list(store.entries()) == []
    assert store.claim([entry_id]) == []
    assert outside.read_bytes() == target
    assert (tmp_path / "queue" / "corrupt" / f"{entry_id}{suffix}").is_symlink()


# -- claims ------------------------------------------------------------------------------------


def test_in_one_process_an_entry_is_claimed_once(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message(), now=NOW)
    claims = store.claim([entry_id, entry_id])
    assert len(claims) == 1  # the second open of the message conflicts with the first
    assert store.claim([entry_id]) == []
    assert disk(tmp_path).claim([entry_id]) == []
    with pytest.raises(BusyError):
        store.hold(entry_id)
    with pytest.raises(BusyError):
        store.unhold(entry_id)
    with pytest.raises(BusyError):
        store.delete(entry_id)
    assert store.get(entry_id) == claims[0].entry  # reading is never blocked
    store.release(claims[0], claims[0].entry)
    [again] = disk(tmp_path).claim([entry_id])
    assert again.entry == claims[0].entry
    again.handle.close()


def test_a_claim_excludes_another_process_until_released(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message(), now=NOW)
    [claim] = store.claim([entry_id])
    assert in_child(tmp_path / "queue", entry_id, "claim", "hold", "delete") == [
        "0",
        "busy",
        "busy",
    ]
    assert store.get(entry_id).held is False  # the refused hold changed nothing
    store.release(claim, claim.entry)
    assert in_child(tmp_path / "queue", entry_id, "claim") == ["1"]
    [again] = store.claim([entry_id])  # the child's claim ended with it
    store.release(again, again.entry)
    assert in_child(tmp_path / "queue", entry_id, "hold") == ["done"]
    assert store.get(entry_id).held


def test_a_claim_dies_with_its_process(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message(), now=NOW)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "queue"), entry_id, "claim-and-sleep"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "claimed"
        assert store.claim([entry_id]) == []
        with pytest.raises(BusyError):
            store.delete(entry_id)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        [claim] = store.claim([entry_id])  # at once: no timeout, no stale-lock cleanup
        assert claim.entry.recipients[0].state is RecipientState.PENDING
        store.release(claim, claim.entry)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()


def test_vanished_entries_are_skipped_by_claim(store: QueueStore) -> None:
    [gone, kept] = enqueue(store, [message(), message([CAROL])], now=NOW)
    store.delete(gone)
    assert [c.entry.id for c in store.claim([gone, kept])] == [kept]


# -- the journal and crashes -------------------------------------------------------------------


def test_a_recorded_recipient_survives_a_crash(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    bob = delivered(recipient(claim.entry, BOB))
    store.record(claim, [bob])
    assert (entries_dir(tmp_path) / f"{entry_id}.journal").exists()
    claim.handle.close()  # the process dies: no release

    fresh = disk(tmp_path)
    entry = fresh.get(entry_id)
    assert recipient(entry, BOB) == bob
    assert recipient(entry, BOB).state is RecipientState.DELIVERED
    assert recipient(entry, BOB).attempts == 1
    assert recipient(entry, BOB).reply == bob.reply
    assert recipient(entry, CAROL).state is RecipientState.PENDING
    assert recipient(entry, CAROL).attempts == 0
    [again] = fresh.claim([entry_id])
    assert again.entry == entry
    assert [str(r.address) for r in again.entry.envelope().recipients] == [CAROL]  # not Bob again
    assert fresh.stats().recipients == {"delivered": 1, "pending": 1}
    again.handle.close()


def test_each_record_appends_and_a_stale_journal_changes_nothing(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL, "dave@example.com"]), now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [])  # nothing decided: nothing written
    journal = entries_dir(tmp_path) / f"{entry_id}.journal"
    assert not journal.exists()
    bob = delivered(recipient(claim.entry, BOB))
    carol = failed(recipient(claim.entry, CAROL))
    store.record(claim, [bob])
    store.record(claim, [carol])
    assert len(journal.read_bytes().splitlines()) == 2
    assert mode(journal) == 0o600
    current = store.get(entry_id)
    assert (recipient(current, BOB), recipient(current, CAROL)) == (bob, carol)
    saved = journal.read_bytes()
    dave = deferred(recipient(claim.entry, "dave@example.com"), NOW + HOUR)
    final = current.with_recipient(dave)
    store.release(claim, final)
    assert not journal.exists()
    assert store.get(entry_id) == final
    journal.write_bytes(saved)  # a crash between the rewrite and the journal's removal
    assert store.get(entry_id) == final


def test_release_with_deferred_recipients_schedules_the_entry(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id, other] = enqueue(store, [message([BOB, CAROL]), message()], now=NOW)
    [claim] = store.claim([entry_id])
    bob = delivered(recipient(claim.entry, BOB))
    store.record(claim, [bob])
    later = NOW + 600
    carol = deferred(recipient(claim.entry, CAROL), later)
    updated = claim.entry.with_recipient(bob).with_recipient(carol)
    store.release(claim, updated)
    entries = entries_dir(tmp_path)
    assert not (entries / f"{entry_id}.journal").exists()
    assert os.stat(entries / f"{entry_id}.json").st_mtime == later
    assert names(tmp_path / "queue" / "tmp") == []
    assert store.get(entry_id) == updated
    assert store.get(entry_id).due == later
    assert store.scan(NOW) == [other]
    assert store.scan(later - 1) == [other]
    assert store.scan(later) == [other, entry_id]
    assert store.scan(None) == [other, entry_id]
    [again] = store.claim([entry_id])  # released: free again
    assert again.entry == updated
    store.release(again, again.entry)


def test_release_with_every_recipient_decided_removes_the_entry(store: QueueStore) -> None:
    [entry_id, other] = enqueue(store, [message([BOB, CAROL]), message()], now=NOW)
    [claim] = store.claim([entry_id])
    bob = delivered(recipient(claim.entry, BOB))
    store.record(claim, [bob])
    store.release(
        claim, claim.entry.with_recipient(bob).with_recipient(failed(recipient(claim.entry, CAROL)))
    )
    with pytest.raises(NoSuchEntryError):
        store.get(entry_id)
    assert store.scan(None) == [other]
    assert store.claim([entry_id]) == []
    if isinstance(store, DiskStore):
        left = names(store.root / "entries")
        assert left == [f"{other}.json", f"{other}.msg"]
        assert names(store.root / "tmp") == []


def test_claim_record_release_contract(store: QueueStore) -> None:
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim(store.scan(NOW))
    assert store.claim([entry_id]) == []
    bob = delivered(recipient(claim.entry, BOB))
    store.record(claim, [bob])
    assert recipient(store.get(entry_id), BOB) == bob
    carol = deferred(recipient(claim.entry, CAROL), NOW + HOUR)
    store.release(claim, claim.entry.with_recipient(bob).with_recipient(carol))
    assert store.scan(NOW) == []
    assert store.scan(NOW + HOUR) == [entry_id]
    entry = store.get(entry_id)
    assert recipient(entry, CAROL) == carol and entry.due == NOW + HOUR


# -- corrupt entries ---------------------------------------------------------------------------


def _garbage(entries: Path, entry_id: str) -> None:
    (entries / f"{entry_id}.json").write_bytes(b"\x00not json{{")


def _unknown_format(entries: Path, entry_id: str) -> None:
    path = entries / f"{entry_id}.json"
    data = json.loads(path.read_text())
    data["format"] = 99
    path.write_text(json.dumps(data))


def _huge_number(entries: Path, entry_id: str) -> None:
    # float() of it raises OverflowError, which once escaped as no format error.
    path = entries / f"{entry_id}.json"
    text = path.read_text()
    path.write_text(text.replace('"arrival":', '"arrival":1' + "0" * 400 + ',"was":', 1))


def _nested(entries: Path, entry_id: str) -> None:
    # Deeper than the JSON parser's recursion: a RecursionError once.
    (entries / f"{entry_id}.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)


CORRUPTIONS: dict[str, Callable[[Path, str], None]] = {
    "garbage": _garbage,
    "format 99": _unknown_format,
    "a huge number": _huge_number,
    "nested too deeply": _nested,
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_claim_moves_a_corrupt_entry_aside_and_claims_the_rest(
    tmp_path: Path, corruption: str
) -> None:
    log = Logged()
    store = disk(tmp_path, log)
    first, bad, last = enqueue(store, [message(), message([CAROL]), message()], now=NOW)
    entries = entries_dir(tmp_path)
    CORRUPTIONS[corruption](entries, bad)
    moved = sorted(name for name in os.listdir(entries) if name.startswith(bad))

    claims = store.claim([first, bad, last])
    assert [c.entry.id for c in claims] == [first, last]
    assert not any(name.startswith(bad) for name in os.listdir(entries))
    assert names(tmp_path / "queue" / "corrupt") == moved
    assert len(log.lines) == 1
    assert bad in log.lines[0] and "\n" not in log.lines[0]
    with pytest.raises(NoSuchEntryError):
        store.get(bad)
    assert sorted(store.scan(None)) == sorted([first, last])
    for claim in claims:
        store.release(claim, claim.entry)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_listing_skips_an_unreadable_entry(tmp_path: Path, corruption: str) -> None:
    log = Logged()
    store = disk(tmp_path, log)
    first, bad, last = enqueue(store, [message(), message([CAROL]), message()], now=NOW)
    CORRUPTIONS[corruption](entries_dir(tmp_path), bad)
    assert [e.id for e in store.entries()] == sorted([first, last])
    assert len(log.lines) == 1 and bad in log.lines[0]
    stats = store.stats()
    assert stats.messages == 2 and stats.recipients == {"pending": 2}
    with pytest.raises(QueueError) as raised:
        store.get(bad)
    assert not isinstance(raised.value, NoSuchEntryError)
    assert bad in str(raised.value)
    assert names(tmp_path / "queue" / "corrupt") == []  # listing moves nothing


# -- hold, unhold, delete ----------------------------------------------------------------------


def test_hold_and_unhold(store: QueueStore) -> None:
    [held, other] = enqueue(store, [message(), message([CAROL])], now=NOW)
    store.hold(held)
    assert store.scan(None) == [other]
    assert store.scan(NOW) == [other]
    assert store.claim([held]) == []
    assert store.get(held).held
    assert {e.id: e.held for e in store.entries()} == {held: True, other: False}
    assert store.stats().held == 1
    if isinstance(store, DiskStore):
        assert names(store.root / "entries") == sorted(
            [f"{held}.held", f"{held}.msg", f"{other}.json", f"{other}.msg"]
        )
    store.unhold(held)
    assert not store.get(held).held
    assert sorted(store.scan(NOW)) == sorted([held, other])
    assert store.stats().held == 0
    [claim] = store.claim([held])
    store.release(claim, claim.entry)
    if isinstance(store, DiskStore):
        assert not (store.root / "entries" / f"{held}.held").exists()
        assert os.stat(store.root / "entries" / f"{held}.json").st_mtime == NOW


def test_hold_keeps_what_the_journal_recorded(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    bob = delivered(recipient(claim.entry, BOB))
    store.record(claim, [bob])
    claim.handle.close()  # crash
    store.hold(entry_id)
    assert not (entries_dir(tmp_path) / f"{entry_id}.journal").exists()
    assert recipient(store.get(entry_id), BOB) == bob
    store.unhold(entry_id)
    assert recipient(store.get(entry_id), BOB) == bob


def test_delete_removes_every_file(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id, other] = enqueue(store, [message([BOB, CAROL]), message()], now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [delivered(recipient(claim.entry, BOB))])
    claim.handle.close()
    store.delete(entry_id)
    assert names(entries_dir(tmp_path)) == [f"{other}.json", f"{other}.msg"]
    with pytest.raises(NoSuchEntryError):
        store.get(entry_id)
    with pytest.raises(NoSuchEntryError):
        store.delete(entry_id)
    store.hold(other)
    store.delete(other)  # a held one too
    assert names(entries_dir(tmp_path)) == []


@pytest.mark.parametrize("action", ["get", "hold", "unhold", "delete"])
def test_an_unknown_id_is_no_such_entry(store: QueueStore, action: str) -> None:
    enqueue(store, message(), now=NOW)
    with pytest.raises(NoSuchEntryError):
        getattr(store, action)("0123456789abcdef0123")


@pytest.mark.parametrize("action", ["get", "hold", "unhold", "delete"])
@pytest.mark.parametrize("entry_id", ["../x", "../../outside", "/etc/passwd", "", ".", "A" * 20])
def test_an_id_with_path_characters_never_reaches_a_file(
    tmp_path: Path, action: str, entry_id: str
) -> None:
    store = disk(tmp_path)
    [real] = enqueue(store, message(), now=NOW)
    root = tmp_path / "queue"
    entry_file = (entries_dir(tmp_path) / f"{real}.json").read_bytes()
    body = (entries_dir(tmp_path) / f"{real}.msg").read_bytes()
    for place in (root / "x", tmp_path / "outside"):  # what ../x and ../../outside would name
        place.with_suffix(".json").write_bytes(entry_file)
        place.with_suffix(".msg").write_bytes(body)
    with pytest.raises(NoSuchEntryError):
        getattr(store, action)(entry_id)
    for place in (root / "x", tmp_path / "outside"):
        assert place.with_suffix(".json").read_bytes() == entry_file
        assert place.with_suffix(".msg").read_bytes() == body
        assert not place.with_suffix(".held").exists()


# -- flush and clean ---------------------------------------------------------------------------


def test_flush_makes_every_entry_not_on_hold_due(store: QueueStore) -> None:
    [later, held, due] = enqueue(store, [message([BOB, CAROL]), message(), message()], now=NOW)
    [claim] = store.claim([later])
    carol = deferred(recipient(claim.entry, CAROL), NOW + 5 * HOUR)
    bob = deferred(recipient(claim.entry, BOB), NOW + 2 * HOUR)
    store.release(claim, claim.entry.with_recipient(bob).with_recipient(carol))
    store.hold(held)
    now = NOW + 60
    assert store.scan(now) == [due]
    assert store.scan(NOW + 2 * HOUR) == [due, later]  # the earliest recipient counts
    assert store.flush(now) == 2
    assert sorted(store.scan(now)) == sorted([later, due])
    assert held not in store.scan(None)
    assert store.get(held).held
    [claim] = store.claim([later])
    assert [r.state for r in claim.entry.recipients] == [RecipientState.DEFERRED] * 2
    store.release(claim, claim.entry)


def test_clean_removes_only_what_dead_writers_left_long_ago(tmp_path: Path) -> None:
    store = disk(tmp_path)
    now = time.time()
    old = now - 2 * HOUR
    [queued, held] = enqueue(store, [message(), message()], now=now)
    store.hold(held)
    root = tmp_path / "queue"
    entries = root / "entries"
    for name in (f"{queued}.json", f"{queued}.msg", f"{held}.held", f"{held}.msg"):
        os.utime(entries / name, (old, old))  # long queued: not orphans for all that
    orphan, fresh = "0123456789abcdef01", "0123456789abcdef02"
    planted = {
        root / "tmp" / f"{orphan}.1a2b3c4d.msg": old,
        root / "tmp" / f"{orphan}.1a2b3c4d.json": old,
        root / "tmp" / f"{fresh}.5e6f7a8b.msg": now,
        entries / f"{orphan}.msg": old,
        entries / f"{orphan}.journal": old,
        entries / f"{fresh}.msg": now - 60,
    }
    for path, when in planted.items():
        path.write_bytes(b"left behind")
        os.utime(path, (when, when))
    assert store.clean(now) == 4
    assert names(root / "tmp") == [f"{fresh}.5e6f7a8b.msg"]
    assert names(entries) == sorted(
        [f"{queued}.json", f"{queued}.msg", f"{held}.held", f"{held}.msg", f"{fresh}.msg"]
    )
    [claim] = store.claim([queued])
    assert read(claim) == BODY
    store.release(claim, claim.entry)
    assert store.clean(now) == 0


# -- default directory -------------------------------------------------------------------------


def test_the_environment_names_the_queue_directory() -> None:
    assert default_queue_dir({"MXSEND_QUEUE_DIR": "/srv/q", "XDG_STATE_HOME": "/x"}) == Path(
        "/srv/q"
    )


def test_root_queues_in_var_spool() -> None:
    assert os.geteuid() == 0, "these tests run as root"
    assert default_queue_dir({}) == Path("/var/spool/mxsend")
    assert default_queue_dir({"MXSEND_QUEUE_DIR": ""}) == Path("/var/spool/mxsend")
    assert default_queue_dir({"XDG_STATE_HOME": "/x"}) == Path("/var/spool/mxsend")


def test_another_user_queues_in_the_xdg_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/ann")
    assert default_queue_dir({"XDG_STATE_HOME": "/state"}) == Path("/state/mxsend/queue")
    assert default_queue_dir({}) == Path("/home/ann/.local/state/mxsend/queue")
    assert default_queue_dir({"XDG_STATE_HOME": ""}) == Path("/home/ann/.local/state/mxsend/queue")
    assert default_queue_dir({"MXSEND_QUEUE_DIR": "/q"}) == Path("/q")
    monkeypatch.setenv("MXSEND_QUEUE_DIR", "/from/environ")
    assert default_queue_dir() == Path("/from/environ")


# -- the memory store's leases -----------------------------------------------------------------


def test_a_lease_blocks_other_claims_until_it_expires() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, lease=60.0)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    assert store.body(entry_id) == BODY
    [first] = store.claim([entry_id])
    assert read(first) == BODY
    clock.now += 59
    assert store.claim([entry_id]) == []
    with pytest.raises(BusyError):
        store.hold(entry_id)
    with pytest.raises(BusyError):
        store.delete(entry_id)
    clock.now += 1  # expired
    [second] = store.claim([entry_id])
    assert second.handle != first.handle
    bob = delivered(recipient(first.entry, BOB))
    with pytest.raises(BusyError):
        store.record(first, [bob])
    with pytest.raises(BusyError):
        store.release(first, first.entry.with_recipient(bob))
    assert recipient(store.get(entry_id), BOB).state is RecipientState.PENDING
    store.record(second, [bob])
    assert recipient(store.get(entry_id), BOB) == bob
    store.release(second, second.entry.with_recipient(bob))
    [third] = store.claim([entry_id])
    assert recipient(third.entry, BOB) == bob
    store.release(third, third.entry)


def test_a_holder_whose_lease_ran_out_untaken_may_still_release() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, lease=60.0)
    [entry_id] = enqueue(store, message(), now=NOW)
    [claim] = store.claim([entry_id])
    clock.now += 120
    done = delivered(claim.entry.recipients[0])
    store.release(claim, claim.entry.with_recipient(done))
    with pytest.raises(NoSuchEntryError):
        store.get(entry_id)


def test_a_released_lease_frees_the_entry_at_once() -> None:
    store = MemoryStore(clock=Clock(), lease=60.0)
    [entry_id] = enqueue(store, message(), now=NOW)
    [claim] = store.claim([entry_id])
    store.release(claim, claim.entry)
    store.hold(entry_id)
    store.unhold(entry_id)
    [claim] = store.claim([entry_id])
    store.release(claim, claim.entry)
    store.delete(entry_id)
    assert list(store.entries()) == []


# -- stats -------------------------------------------------------------------------------------


def test_stats_count_by_state_and_by_destination(store: QueueStore) -> None:
    [mixed, held, single] = enqueue(
        store,
        [
            message([BOB, CAROL, "dave@Example.NET", "erin@example.com"]),
            message(["frank@example.org"]),
            message(["grace@EXAMPLE.org"]),
        ],
        now=NOW,
    )
    [claim] = store.claim([mixed])
    entry = claim.entry
    entry = entry.with_recipient(delivered(recipient(entry, BOB)))
    entry = entry.with_recipient(failed(recipient(entry, "erin@example.com")))
    entry = entry.with_recipient(deferred(recipient(entry, CAROL), NOW + HOUR))
    store.release(claim, entry)
    store.hold(held)
    stats = store.stats()
    assert stats.messages == 3
    assert stats.held == 1
    assert stats.recipients == {"delivered": 1, "failed": 1, "deferred": 1, "pending": 3}
    # undecided recipients only, domains folded to lower case; held entries count too
    assert stats.destinations == {"example.net": 1, "example.org": 3}
    assert single in store.scan(None)


# -- found in review -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_line",
    [
        b"{this is not json\n",
        b"42\n",
        b"[]\n",
        b'{"address": 3}\n',
        b'{"addr',
        b"[" * 200_000 + b"\n",
    ],
    ids=["not json", "a number", "a list", "bad fields", "torn by a crash", "nested too deeply"],
)
def test_a_journal_line_that_cannot_be_used_is_left_out(tmp_path: Path, bad_line: bytes) -> None:
    # Leaving a line out can only cost a duplicate; moving the entry aside would lose mail.
    log = Logged()
    store = disk(tmp_path, log)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [delivered(recipient(claim.entry, BOB))])
    claim.handle.close()  # a crash
    with open(entries_dir(tmp_path) / f"{entry_id}.journal", "ab") as journal:
        journal.write(bad_line)
    entry = store.get(entry_id)
    assert recipient(entry, BOB).state is RecipientState.DELIVERED
    assert recipient(entry, CAROL).state is RecipientState.PENDING
    [again] = store.claim([entry_id])
    assert [str(r.address) for r in again.entry.envelope().recipients] == [CAROL]
    assert names(tmp_path / "queue" / "corrupt") == []
    # get and claim each log a line they cannot use; a torn tail or a line about no
    # recipient of this entry changes nothing and needs no word.
    assert len(log.lines) == (0 if bad_line in (b'{"addr', b'{"address": 3}\n') else 2)
    store.release(again, again.entry)


def test_claim_skips_and_moves_aside_an_entry_whose_message_is_a_symlink(tmp_path: Path) -> None:
    log = Logged()
    store = disk(tmp_path, log)
    good, bad = enqueue(store, [message(), message([CAROL])], now=NOW)
    outside = tmp_path / "outside.msg"
    outside.write_bytes(b"not the queued message")
    msg = entries_dir(tmp_path) / f"{bad}.msg"
    msg.unlink()
    msg.symlink_to(outside)
    claims = store.claim([bad, good])
    assert [c.entry.id for c in claims] == [good]
    assert (tmp_path / "queue" / "corrupt" / f"{bad}.msg").is_symlink()
    assert outside.read_bytes() == b"not the queued message"
    assert len(log.lines) == 1


def test_an_entry_whose_message_is_missing_is_moved_aside(tmp_path: Path) -> None:
    log = Logged()
    store = disk(tmp_path, log)
    good, bad = enqueue(store, [message(), message([CAROL])], now=NOW)
    (entries_dir(tmp_path) / f"{bad}.msg").unlink()
    assert [c.entry.id for c in store.claim([bad, good])] == [good]
    assert names(tmp_path / "queue" / "corrupt") == [f"{bad}.json"]


def test_an_entry_left_done_by_a_crash_is_finished_not_claimed(tmp_path: Path) -> None:
    # Every recipient journaled, then SIGKILL before release: the next claim finishes it.
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB]), now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [delivered(recipient(claim.entry, BOB))])
    claim.handle.close()
    assert store.claim([entry_id]) == []
    assert names(entries_dir(tmp_path)) == []


def test_require_dsn_survives_the_queue(tmp_path: Path) -> None:
    store = disk(tmp_path)
    options = MailOptions(envid="e1", require_dsn=True)
    [entry_id] = enqueue(store, message(options=options), now=NOW)
    assert store.get(entry_id).mail == options


def test_a_stray_file_in_entries_does_not_break_a_pass(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message(), now=NOW)
    (entries_dir(tmp_path) / "notes.json").write_text("{}")
    (entries_dir(tmp_path) / "NOTES.held").write_text("{}")
    assert store.scan(None) == [entry_id]
    assert [c.entry.id for c in store.claim([*store.scan(None), "notes"])] == [entry_id]
    assert [e.id for e in store.entries()] == [entry_id]


def test_recipients_differing_only_in_domain_case_are_one(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, BOB.upper().replace("BOB", "bob")]), now=NOW)
    assert [r.address for r in store.get(entry_id).recipients] == [BOB]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        _unmount(mount)


def _fill(mount: Path) -> None:
    try:
        with open(mount / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass


def test_release_and_record_on_a_full_disk_raise_queue_error(full_disk: Path) -> None:
    store = DiskStore(full_disk / "queue", log=Logged())
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    _fill(full_disk)
    with pytest.raises(QueueError):
        store.record(claim, [delivered(recipient(claim.entry, BOB))] * 400)
    later = claim.entry.with_recipient(deferred(recipient(claim.entry, CAROL), NOW + HOUR))
    with pytest.raises(QueueError):
        store.release(claim, later)
    assert names(full_disk / "queue" / "tmp") == []
    (full_disk / "filler").unlink()
    # Nothing half-written: the entry reads back as it was queued.
    entry = store.get(entry_id)
    assert [r.state for r in entry.recipients] == [RecipientState.PENDING] * 2


def test_finish_removes_the_entry_and_release_its_message(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB]), now=NOW)
    [claim] = store.claim([entry_id])
    store.finish(claim, sync=False)
    assert store.scan(None) == [] and names(entries_dir(tmp_path)) == [f"{entry_id}.msg"]
    assert read(claim) == BODY  # still readable for a DSN until release
    store.release(claim, claim.entry.with_recipient(delivered(recipient(claim.entry, BOB))))
    store.sync()
    assert names(entries_dir(tmp_path)) == []


def test_a_group_commit_keeps_journals_until_the_rewrite_is_synced(tmp_path: Path) -> None:
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [delivered(recipient(claim.entry, BOB))], sync=False)
    later = claim.entry.with_recipient(delivered(recipient(claim.entry, BOB)))
    later = later.with_recipient(deferred(recipient(later, CAROL), NOW + HOUR))
    store.release(claim, later, sync=False)
    assert f"{entry_id}.journal" in names(entries_dir(tmp_path))  # not before the sync
    store.sync()
    assert f"{entry_id}.journal" not in names(entries_dir(tmp_path))
    entry = store.get(entry_id)
    assert recipient(entry, BOB).state is RecipientState.DELIVERED
    assert recipient(entry, CAROL).state is RecipientState.DEFERRED


def test_a_finished_entrys_journal_goes_only_once_its_removal_is_synced(tmp_path: Path) -> None:
    # No file system may keep the journal's removal and lose the entry's: BOB, journaled in
    # an earlier session, would be sent again.
    store = disk(tmp_path)
    [entry_id] = enqueue(store, message([BOB, CAROL]), now=NOW)
    [claim] = store.claim([entry_id])
    store.record(claim, [delivered(recipient(claim.entry, BOB))], sync=False)
    store.finish(claim, sync=False)
    assert names(entries_dir(tmp_path)) == [f"{entry_id}.journal", f"{entry_id}.msg"]
    store.sync()
    assert names(entries_dir(tmp_path)) == [f"{entry_id}.msg"]
    store.release(claim, claim.entry)
    assert names(entries_dir(tmp_path)) == []


def test_memory_finish_is_gone_at_once_even_if_abandoned() -> None:
    store = MemoryStore(clock=lambda: NOW)
    [entry_id] = enqueue(store, message([BOB]), now=NOW)
    [claim] = store.claim([entry_id])
    store.finish(claim)
    store.abandon(claim)
    assert store.scan(None) == [] and list(store.entries()) == []


def _unmount(mount: Path) -> None:
    """Unmount a test's tmpfs; lazily when something still holds it (a failed test's
    frames keep a store and its descriptor), so no mount outlives the run."""
    done = subprocess.run(["umount", str(mount)], capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True, capture_output=True)
