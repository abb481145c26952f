"""The sendmail front end's lean path: the common submission, queued with nothing but ``os``.

A program that runs ``sendmail`` for each message (cron, PHP, a monitoring check) waits for it,
so a submission should cost little more than starting Python. This module prepares a plain
message (ASCII header block, addresses in the common forms, short lines, no bare CR) and writes
it into the queue in the store's format 1 (see :mod:`mxsend.queue._store` and ``_entry``),
importing no Twisted, OpenSSL, asyncio, ``re``, ``enum``, ``email`` or ``json``.

Anything else (a quoted name, a group, a long line, a bare CR, a config file, DSN options, a
big message) is not refused here: :func:`prepare` returns None and the full path
(:mod:`mxsend.cli._prepare`) takes the same input, with every check. The two must agree on
every message this path takes: tests compare them, entry for entry and byte for byte.
"""

from __future__ import annotations

import os
import time

from mxsend._queuefiles import OPEN, UnusableQueueError, fsync_dir, prepare_dirs, write_new

TYPE_CHECKING = False  # typing costs an import; mypy takes this name as True
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "LEAN_LIMIT",
    "NO_REWRITE",
    "UNDISCLOSED",
    "Drop",
    "QueueWriteError",
    "Rewrite",
    "SubmitRefused",
    "address_list",
    "plain_address",
    "prepare",
    "qualified",
    "request_header",
    "send_request",
    "write",
]

#: Larger input goes to the full path, which spools it to a file instead of memory.
LEAN_LIMIT = 1 << 20
_MAX_LINE = 998  # RFC 5322 2.1.1
_MAX_HEAD = 65536
_MAX_PATH = 256  # RFC 5321 4.5.3.1.3
_MAX_LOCAL = 64
_MAX_LABEL = 63

_LDH = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_ATEXT = _LDH | frozenset(b"!#$%&'*+/=?^_`{|}~")
_NAME_TEXT = _ATEXT | {0x20}
# RFC 5322 3.6.8: a field name is printable ASCII but the colon.
_FIELD_NAME = frozenset(range(0x21, 0x7F)) - {0x3A}
_ADDRESS_FIELDS = frozenset((
    b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
    b"resent-from", b"resent-sender", b"resent-to", b"resent-cc", b"resent-bcc",
))  # fmt: skip
UNDISCLOSED = b"To: undisclosed-recipients:;\r\n"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class QueueWriteError(Exception):
    """The message could not be queued (nothing of it is left); ``str()`` says why."""


class Drop:
    """A prepared submission: the envelope and the content as the queue keeps them."""

    __slots__ = ("content", "eight_bit", "recipients", "sender", "size")

    def __init__(
        self, sender: str, recipients: list[str], content: bytes, size: int, eight_bit: bool
    ) -> None:
        self.sender = sender  #: "" is the null sender
        self.recipients = recipients
        self.content = content
        self.size = size  #: RFC 1870's size: the content as sent, lines ending in CRLF
        self.eight_bit = eight_bit


class Rewrite:
    """What the config asks of every submission: the domain for bare local names (Postfix's
    myorigin), an envelope sender forced on every message but bounces, a sender domain to
    masquerade as (``mail.example.com`` becomes ``example.com``: Postfix's
    masquerade_domains) and ``To: undisclosed-recipients:;`` for a message with no To or Cc.
    The envelope sender and a From that is added are rewritten; the message's own fields
    never are."""

    __slots__ = ("domain", "force_sender", "masquerade", "undisclosed")

    def __init__(
        self,
        *,
        domain: str | None = None,
        force_sender: str | None = None,
        masquerade: str | None = None,
        undisclosed: bool = False,
    ) -> None:
        self.domain = domain
        self.force_sender = force_sender
        self.masquerade = masquerade.lower() if masquerade else None
        self.undisclosed = undisclosed

    def sender(self, sender: str) -> str:
        """The envelope sender to use for ``sender`` (already qualified; "" stays null)."""
        if not sender:
            return sender  # a bounce keeps its null sender (RFC 5321 4.5.5)
        if self.force_sender:
            sender = self.force_sender
        local, at, domain = sender.rpartition("@")
        masquerade = self.masquerade
        if at and masquerade and domain.lower().endswith("." + masquerade):
            return f"{local}@{masquerade}"
        return sender


NO_REWRITE = Rewrite()


def plain_address(text: str) -> bool:
    """Whether ``text`` is an ASCII dot-atom at a letter-digit-hyphen domain within the
    RFC 5321 lengths: the addresses ``Address.parse`` takes on its fast path, unchanged."""
    if not text.isascii() or len(text) > _MAX_PATH - 2:
        return False
    local, at, domain = text.rpartition("@")
    return bool(at) and len(local) <= _MAX_LOCAL and _dot_atom(local) and _ldh_domain(domain)


def _dot_atom(text: str) -> bool:
    atext = _ATEXT
    return all(atom and all(ord(c) in atext for c in atom) for atom in text.split("."))


def _ldh_domain(text: str) -> bool:
    ldh = _LDH
    for label in text.split("."):
        if not label or len(label) > _MAX_LABEL or label[0] == "-" or label[-1] == "-":
            return False
        if not all(ord(c) in ldh for c in label):
            return False
    return True


def prepare(
    data: bytes,
    *,
    sender: str | None,
    full_name: str | None,
    recipients: Sequence[str],
    from_headers: bool,
    host: str,
    own_address: str,
    rewrite: Rewrite = NO_REWRITE,
) -> Drop | None:
    """The submission of ``data`` (standard input as read, ``.`` already cut), or None when
    it is not one this path takes. ``sender`` None means none was given (``own_address``
    then); ``""`` is the null sender. ``recipients`` are the arguments."""
    if len(data) > LEAN_LIMIT or b"\0" in data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    head_end, lines, ends_empty = _header_block(data)
    if head_end is None:
        return None
    head = data[:head_end]
    if not head.isascii():
        return None
    fields = _fields(lines)
    if fields is None:
        return None
    found: dict[bytes, list[str]] = {}
    for name, value in fields:
        if name in _ADDRESS_FIELDS:
            addresses = address_list(value)
            if addresses is None:
                return None
            found.setdefault(name, []).extend(addresses)
        else:
            found.setdefault(name, [])
    if not plain_address(own_address):
        return None  # a user name that makes no plain address: the full path says so
    origin = rewrite.domain or host
    envelope_sender = rewrite.sender(own_address if sender is None else qualified(sender, origin))
    rcpts = [qualified(r, origin) for r in recipients]
    if from_headers:
        names = (b"to", b"cc", b"bcc")
        if any(found.get(b"resent-" + n) for n in names):  # RFC 5322 3.6.6
            names = (b"resent-to", b"resent-cc", b"resent-bcc")
        rcpts += [qualified(a, origin) for n in names for a in found.get(n, ())]
    if not rcpts or (envelope_sender and not plain_address(envelope_sender)):
        return None  # the full path says what is wrong
    if not all(plain_address(r) for r in rcpts):
        return None
    added = _fix_ups(found, envelope_sender or rewrite.sender(own_address), full_name, host)
    if added is None:
        return None
    if rewrite.undisclosed and b"to" not in found and b"cc" not in found:
        added += UNDISCLOSED
    kept = _strip_bcc(lines) if (b"bcc" in found or b"resent-bcc" in found) else head
    content = added + kept + (b"" if ends_empty else b"\r\n") + data[head_end:]
    if _has_long_line(content):
        return None  # folded by the full path
    size = len(content) + content.count(b"\n") - content.count(b"\r\n")
    if content and not content.endswith(b"\n"):
        size += 2  # the final CRLF the encoder adds
    return Drop(envelope_sender, _unique(rcpts), content, size, not content.isascii())


def qualified(address: str, domain: str | None) -> str:
    """A bare local name (``root``) in ``domain`` (as Postfix appends myorigin); any other
    address, and the null sender, as it is."""
    return f"{address}@{domain}" if domain and address and "@" not in address else address


def _unique(recipients: list[str]) -> list[str]:
    """Each recipient once (RFC 5321 2.4: the domain is caseless), as the queue keeps them."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for r in recipients:
        local, _, domain = r.rpartition("@")
        key = (local, domain.lower())
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def _header_block(data: bytes) -> tuple[int | None, list[bytes], bool]:
    """Where the header block ends (after its empty line, or where a line that is no field
    starts: ``read_header_block``'s rule), its lines with their endings, and whether an
    empty line ends it. None when the block is too long for this path."""
    lines: list[bytes] = []
    start = 0
    size = len(data)
    while start < size:
        newline = data.find(b"\n", start)
        end = size if newline < 0 else newline + 1
        if end - start > _MAX_LINE + 2 or end > _MAX_HEAD:
            return None, lines, False
        line = data[start:end]
        if line in (b"\n", b"\r\n"):
            lines.append(line)
            return end, lines, True
        if not _is_field(line, first=not lines):
            return start, lines, False
        lines.append(line)
        start = end
    return size, lines, False


def _is_field(line: bytes, *, first: bool) -> bool:
    if line[0] in (0x20, 0x09):  # a continuation (RFC 5322 2.2.3), never first
        return not first
    colon = line.find(b":")
    names = _FIELD_NAME
    return colon > 0 and all(c in names for c in line[:colon])


def _fields(lines: list[bytes]) -> list[tuple[bytes, str]] | None:
    """(lower-case name, unfolded value) of each field."""
    fields: list[tuple[bytes, str]] = []
    for line in lines:
        text = line.rstrip(b"\r\n")
        if not text:
            break
        if text[0] in (0x20, 0x09):
            folded_name, folded = fields[-1]
            fields[-1] = (folded_name, folded + text.decode("ascii"))
            continue
        name, _, value = text.partition(b":")
        fields.append((name.lower(), value.decode("ascii")))
    return fields


def address_list(value: str) -> list[str] | None:
    """The addr-specs of an address field in the forms this path knows: ``addr``, ``addr
    (comment)`` and ``Name <addr>``, with commas between; an addr may be a bare local name.
    None for anything else (groups, quoted strings, routes, empty entries)."""
    found = []
    for entry in value.split(","):
        item = entry.strip(" \t")
        if item.endswith(")"):  # "root (Cron Daemon)": a comment after the address
            open_at = item.find("(")
            comment = item[open_at + 1 : -1]
            if open_at < 0 or any(c in "()\\" for c in comment) or not comment.isprintable():
                return None
            item = item[:open_at].rstrip(" \t")
        if item.endswith(">"):
            name, bracket, address = item[:-1].partition("<")
            if not bracket or not all(ord(c) in _NAME_TEXT for c in name):
                return None
        else:
            address = item
        if not _addr_spec(address):
            return None
        found.append(address)
    return found


def _addr_spec(text: str) -> bool:
    if "=?" in text:
        return False  # an RFC 2047 encoded-word is never an address (RFC 2047 5)
    if "@" not in text:
        return bool(text) and text.isascii() and _dot_atom(text)
    return plain_address(text)


def _fix_ups(
    found: dict[bytes, list[str]], sender: str, full_name: str | None, host: str
) -> bytes | None:
    """From, Date and Message-ID, each when missing (RFC 5322 3.6), as ``email.utils``
    writes them; None for a full name this path does not write."""
    added = b""
    if b"from" not in found:
        if not full_name:
            added += f"From: {sender}\r\n".encode("ascii")
        elif all(ord(c) in _NAME_TEXT for c in full_name):
            added += f"From: {full_name} <{sender}>\r\n".encode("ascii")
        else:
            return None  # quoted or encoded as RFC 2047 says: the full path does it
    now = time.time()
    if b"date" not in found:
        added += f"Date: {_date(now)}\r\n".encode("ascii")
    if b"message-id" not in found:
        unique = int.from_bytes(os.urandom(8), "big")
        added += f"Message-ID: <{int(now * 100)}.{os.getpid()}.{unique}@{host}>\r\n".encode()
    return added


def _date(now: float) -> str:
    """RFC 5322 3.3's date-time in local time, as ``email.utils.formatdate(localtime=True)``."""
    t = time.localtime(now)
    offset = t.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


def _strip_bcc(lines: list[bytes]) -> bytes:
    """The header lines without Bcc and Resent-Bcc fields (with their continuations), each
    ending in CRLF, then the empty line as it was: ``mxsend.message.strip_bcc``'s result."""
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        text = line.rstrip(b"\r\n")
        if not text:
            return b"".join(kept) + line
        if text[0] not in (0x20, 0x09):
            skipping = text.lower().startswith((b"bcc:", b"resent-bcc:"))
        if not skipping:
            kept.append(text + b"\r\n")
    return b"".join(kept)


def _has_long_line(content: bytes) -> bool:
    if len(content) <= _MAX_LINE:
        return False
    start = 0
    while True:
        newline = content.find(b"\n", start)
        if newline < 0:
            return len(content) - start > _MAX_LINE
        end = newline - 1 if newline > start and content[newline - 1] == 0x0D else newline
        if end - start > _MAX_LINE:
            return True
        start = newline + 1


# -- the queue -------------------------------------------------------------------------------


def write(root: str, drop: Drop, *, uid: int, now: float | None = None) -> str:
    """Queue ``drop`` at ``root`` as ``DiskStore.enqueue`` does for one message: message
    and entry written to tmp/ and synced, the message renamed into entries/, the directory
    synced, then the entry, then the directory again. Its queue id; QueueWriteError with
    nothing left behind when it cannot."""
    when = time.time() if now is None else now
    entry_id = f"{int(when * 1000):011x}{os.urandom(5).hex()}"
    entries, tmp = f"{root}/entries", f"{root}/tmp"
    token = os.urandom(4).hex()
    body, state = f"{tmp}/{entry_id}.{token}.msg", f"{tmp}/{entry_id}.{token}.json"
    final_body = f"{entries}/{entry_id}.msg"
    final_state = f"{entries}/{entry_id}.json"
    renamed = False
    try:
        prepare_dirs(root, (entries, tmp, f"{root}/corrupt"))
    except UnusableQueueError as exc:
        raise QueueWriteError(str(exc)) from None
    try:
        write_new(body, [drop.content], sync=True)
        write_new(state, [_entry_json(entry_id, drop, uid, when)], sync=True, due=when)
        os.rename(body, final_body)
        renamed = True
        fsync_dir(entries)  # the message is in place before its entry appears
        os.rename(state, final_state)
        queued_ids.append(entry_id)  # visible now: an interrupt from here on is not a failure
        fsync_dir(entries)
    except OSError as exc:
        for path in (state, body):
            _unlink(path)
        if renamed and not _undo(final_state, final_body):
            queued_ids.append(entry_id)
            return entry_id  # a daemon is delivering it already: it is as good as queued
        if queued_ids and queued_ids[-1] == entry_id:
            queued_ids.pop()
        raise QueueWriteError(f"could not queue the message: {exc.strerror or exc}") from None
    return entry_id


#: The ids this process has put in the queue (a sendmail exits 0 once there is one).
queued_ids: list[str] = []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        return


def _undo(state: str, body: str) -> bool:
    """Take back an entry already in entries/, entry file first, under the message's lock
    (``DiskStore._undo``'s rule); False when a daemon holds it: it stays."""
    import fcntl

    try:
        fd = os.open(body, os.O_RDONLY | OPEN)
    except OSError:
        _unlink(state)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _unlink(state)
        _unlink(body)
        return True
    finally:
        os.close(fd)


def _entry_json(entry_id: str, drop: Drop, uid: int, now: float) -> bytes:
    """The entry file of a fresh entry, as ``entry_to_json`` makes it (format 1)."""
    when = repr(now)
    recipients = ",".join(
        f'{{"address":{_string(r)},"notify":[],"orcpt":null,"state":"pending","attempts":0,'
        f'"next_attempt":{when},"last_attempt":null,"reply":null,"remote":null,"history":[]}}'
        for r in drop.recipients
    )
    body = '"8BITMIME"' if drop.eight_bit else "null"
    return (
        f'{{"format":1,"id":"{entry_id}","arrival":{when},"sender":{_string(drop.sender)},'
        f'"mail":{{"size":{drop.size},"body":{body},"smtputf8":false,"ret":null,'
        f'"envid":null,"requiretls":false,"require_dsn":false}},"held":false,'
        f'"warned":false,"uid":{uid},"recipients":[{recipients}]}}\n'
    ).encode("ascii")


def _string(text: str) -> str:
    """A JSON string of an address this path took: printable ASCII, so only the quote and
    the backslash need escaping (RFC 8259 7)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the daemon's submission socket (mxsend.queue._intake) -----------------------------------


class SubmitRefused(Exception):
    """The daemon answered the submission with ``code`` (451, 550, 554): not queued."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def request_header(drop: Drop) -> bytes:
    """The submission request's envelope for ``drop``."""
    lines = [f"sender {drop.sender}", *(f"rcpt {r}" for r in drop.recipients)]
    lines.append(f"size {len(drop.content)}")
    return ("MXSEND-SUBMIT/1\n" + "".join(f"{line}\n" for line in lines) + "\n").encode()


def send_request(path: str, header: bytes, chunks: Iterable[bytes]) -> str | None:
    """Hand a submission to the daemon listening at ``path``: the queue id it answers, None
    when no daemon listens there, SubmitRefused when it refuses, QueueWriteError when the
    connection fails halfway (then it may or may not be queued: the daemon logs it)."""
    import _socket  # socket's own module, without the enums that socket.py imports

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(120.0)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    try:
        try:
            sock.sendall(header)
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(_socket.SHUT_WR)
        except OSError as exc:  # it may have answered already (a refusal) and closed
            failed: OSError | None = exc
        else:
            failed = None
        reply = b""
        try:
            while b"\n" not in reply and len(reply) < 4096:
                part = sock.recv(4096)
                if not part:
                    break
                reply += part
        except OSError as exc:
            failed = failed or exc
    finally:
        sock.close()
    code, _, text = reply.decode("utf-8", "replace").strip().partition(" ")
    if code == "250" and text:
        return text
    if not code.isdigit():
        why = failed.strerror if failed is not None else "no answer"
        raise QueueWriteError(f"the daemon's submission socket {path} failed: {why}")
    raise SubmitRefused(int(code), text)


# -- the config file's settings for a submission ----------------------------------------------


class Settings:
    """What a submission takes from the config file (``mxsend.config``): plain values, so
    that they can be kept in a cache that the lean path reads with ``marshal``."""

    __slots__ = ("delivery", "hostname", "queue_dir", "rewrite", "sender", "signs")

    def __init__(
        self,
        *,
        hostname: str | None = None,
        sender: str | None = None,
        queue_dir: str | None = None,
        delivery: str | None = None,
        rewrite: Rewrite = NO_REWRITE,
        signs: bool = False,
    ) -> None:
        self.hostname = hostname
        self.sender = sender  #: the envelope sender when -f gives none
        self.queue_dir = queue_dir
        self.delivery = delivery  #: the default for -od
        self.rewrite = rewrite
        self.signs = signs  #: some sender domain has DKIM keys: the full path signs

    def values(self) -> tuple[object, ...]:
        r = self.rewrite
        return (
            self.hostname, self.sender, self.queue_dir, self.delivery, self.signs,
            r.domain, r.force_sender, r.masquerade, r.undisclosed,
        )  # fmt: skip

    @classmethod
    def of(cls, values: tuple[object, ...]) -> Settings:
        """The settings :meth:`values` gave; ValueError for anything else."""
        hostname, sender, queue_dir, delivery, signs, domain, force, masquerade, undisclosed = (
            values
        )
        rewrite = Rewrite(
            domain=_text(domain),
            force_sender=_text(force),
            masquerade=_text(masquerade),
            undisclosed=bool(undisclosed),
        )
        return cls(
            hostname=_text(hostname),
            sender=_text(sender),
            queue_dir=_text(queue_dir),
            delivery=_text(delivery),
            rewrite=rewrite,
            signs=bool(signs),
        )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError("not a settings cache")


DEFAULT_SETTINGS = Settings()
_CACHE_FORMAT = 1


def config_path(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file, as ``mxsend.config.find_config`` finds it: ``explicit`` (-C), else
    $MXSEND_CONFIG, else /etc/mxsend/mxsend.toml for root or the XDG one, when it exists."""
    if explicit:
        return explicit
    if environ.get("MXSEND_CONFIG"):
        return environ["MXSEND_CONFIG"]
    if os.geteuid() == 0:
        default = "/etc/mxsend/mxsend.toml"
    else:
        base = environ.get("XDG_CONFIG_HOME", "")
        if not os.path.isabs(base):
            base = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
        default = os.path.join(base, "mxsend", "mxsend.toml")
    return default if os.path.lexists(default) else None


def _cache_key(path: str) -> tuple[object, ...] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (
        _CACHE_FORMAT, os.path.abspath(path), info.st_dev, info.st_ino, info.st_size,
        info.st_mtime_ns, info.st_ctime_ns,
    )  # fmt: skip


def cache_file(path: str, environ: Mapping[str, str]) -> str | None:
    """Where this user keeps the parsed settings of the config file at ``path``."""
    key = _cache_key(path)
    if key is None:
        return None
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mxsend", f"config.{key[2]}.{key[3]}.marshal")


def cached_settings(path: str, environ: Mapping[str, str]) -> Settings | None:
    """The settings of the config file at ``path`` when this user's cache of them is from
    the file as it is now (same inode, size, change time), else None."""
    import marshal

    cache = cache_file(path, environ)
    if cache is None:
        return None
    try:
        fd = os.open(cache, os.O_RDONLY | OPEN)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077 or info.st_size > 65536:
            return None  # only a cache this user alone could have written is believed
        data = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        key, values = marshal.loads(data)
        if key != _cache_key(path):
            return None
        return Settings.of(values)
    except (ValueError, TypeError, EOFError):
        return None


def keep_settings(path: str, settings: Settings, environ: Mapping[str, str]) -> None:
    """Cache ``settings`` for :func:`cached_settings` (best effort: a cache that cannot be
    written only costs the next submission a parse)."""
    import marshal

    cache = cache_file(path, environ)
    key = _cache_key(path)
    if cache is None or key is None:
        return
    temporary = f"{cache}.{os.getpid()}.tmp"
    folder = os.path.dirname(cache)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if info.st_mode & 0o170000 != 0o040000 or info.st_uid != os.geteuid():
            return  # a symlink, or someone else's (root with a user's HOME): no cache
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN, 0o600)
        try:
            os.write(fd, marshal.dumps((key, settings.values())))  # type: ignore[arg-type]
        finally:
            os.close(fd)
        os.replace(temporary, cache)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            return
