"""A queued message and the state of each of its recipients, with the entry file's JSON form.

An entry file is one JSON object (UTF-8), version :data:`ENTRY_FORMAT`::

    {"format": 1, "id": "...", "arrival": 1764585600.0, "sender": "a@example.com" or "",
     "mail": {"size": 2048, "body": "8BITMIME", "smtputf8": false, "ret": "HDRS",
              "envid": "...", "requiretls": false},
     "held": false, "warned": false, "bounce": false, "uid": 1000,
     "recipients": [{"address": "b@example.net", "notify": ["FAILURE"], "orcpt": null,
                     "state": "deferred", "attempts": 2, "next_attempt": 1764586200.0,
                     "last_attempt": 1764585900.0, "reply": {"code": 451, "enhanced": "4.7.1",
                     "lines": ["4.7.1 try later"], "local": false}, "remote": "mx.example.net",
                     "history": [{"at": ..., "state": "deferred", "reply": {...},
                                  "remote": "mx.example.net", "address": "192.0.2.1"}]}]}

A journal line is one JSON object per decided recipient, ``{"address": ..., "state": ...,
"attempts": ..., "at": ..., "reply": {...}, "remote": ..., "ip": ...}``: absolute values, so
applying a line twice changes nothing. Pure: no I/O here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mxsend.protocol import (
    Address,
    Body,
    EnhancedStatus,
    Envelope,
    MailOptions,
    MxsendError,
    Notify,
    RcptOptions,
    Recipient,
    Reply,
    Ret,
)

__all__ = [
    "ENTRY_FORMAT",
    "MAX_HISTORY",
    "Attempt",
    "Entry",
    "EntryFormatError",
    "QueuedRecipient",
    "RecipientState",
    "apply_journal",
    "entry_from_json",
    "entry_to_json",
    "journal_line",
    "reply_from_json",
    "reply_to_json",
]

#: Version of the entry file's JSON form; bumped when a field changes meaning.
ENTRY_FORMAT = 1
#: Attempts kept per recipient for ``queue show``; older ones are dropped.
MAX_HISTORY = 20
#: How much of each reply an entry keeps.
MAX_REPLY_LINES = 4
MAX_REPLY_TEXT = 300


def _bounded(reply: Reply) -> Reply:
    lines = tuple(line[:MAX_REPLY_TEXT] for line in reply.lines[:MAX_REPLY_LINES])
    return reply if lines == reply.lines else replace(reply, lines=lines)


class EntryFormatError(MxsendError, ValueError):
    """An entry or journal file that is not what this version writes."""


class RecipientState(enum.Enum):
    PENDING = "pending"  #: not tried yet
    DEFERRED = "deferred"  #: tried, transient failure: tried again later
    DELIVERED = "delivered"  #: a server took it (2xx after the data)
    FAILED = "failed"  #: permanently refused, or given up on after the lifetime

    decided: bool  #: delivered or failed: nothing more to do for it

    def __init__(self, value: str) -> None:
        # An attribute of each member, not a property: it is asked for every recipient
        # in every pass.
        self.decided = value in ("delivered", "failed")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt for one recipient."""

    at: float
    state: RecipientState
    reply: Reply
    remote: str | None = None  #: the server's host name
    address: str | None = None  #: the server's IP address


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    recipient: Recipient
    state: RecipientState = RecipientState.PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float | None = None
    reply: Reply | None = None
    remote: str | None = None
    history: tuple[Attempt, ...] = ()
    #: ``str(recipient.address)``, made once: entries look recipients up by it.
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", str(self.recipient.address))

    def after(self, attempt: Attempt, attempts: int, next_attempt: float) -> QueuedRecipient:
        """This recipient once ``attempt`` (its ``attempts``-th) has been made. The reply is
        kept to :data:`MAX_REPLY_LINES` lines of :data:`MAX_REPLY_TEXT` characters, so an
        entry stays small whatever servers say."""
        bounded = _bounded(attempt.reply)
        if bounded is not attempt.reply:
            attempt = replace(attempt, reply=bounded)
        return QueuedRecipient(
            self.recipient,
            attempt.state,
            attempts,
            next_attempt,
            attempt.at,
            attempt.reply,
            attempt.remote,
            (*self.history, attempt)[-MAX_HISTORY:],
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """A queued message: its envelope, when it arrived, and each recipient's state."""

    id: str
    sender: str | None  #: None: the null sender ``<>`` (a bounce)
    mail: MailOptions
    recipients: tuple[QueuedRecipient, ...]
    arrival: float
    held: bool = False
    warned: bool = False  #: a delay warning was sent
    uid: int | None = None  #: the local user who submitted it, when known
    extra: Mapping[str, Any] = field(default_factory=dict)  #: unknown keys, kept as found

    @property
    def is_bounce(self) -> bool:
        return self.sender is None

    @property
    def done(self) -> bool:
        return all(r.state.decided for r in self.recipients)

    @property
    def due(self) -> float:
        """When the earliest undecided recipient should be tried (inf when none is)."""
        return min((r.next_attempt for r in self.recipients if not r.state.decided), default=inf)

    def envelope(self, *, only: Iterable[str] | None = None) -> Envelope:
        """The envelope to send: the undecided recipients (or those in ``only``)."""
        wanted = None if only is None else set(only)
        recipients = tuple(
            r.recipient
            for r in self.recipients
            if (not r.state.decided if wanted is None else r.address in wanted)
        )
        sender = Address.parse(self.sender) if self.sender else None
        return Envelope(sender, recipients, self.mail)

    def recipient(self, address: str) -> QueuedRecipient | None:
        for r in self.recipients:
            if r.address == address:
                return r
        return None

    def with_recipient(self, updated: QueuedRecipient) -> Entry:
        address = updated.address
        return self.with_recipients(
            tuple(updated if r.address == address else r for r in self.recipients)
        )

    def with_recipients(self, recipients: tuple[QueuedRecipient, ...]) -> Entry:
        """This entry with ``recipients`` instead (a constructor call: ``replace`` costs
        more, and this is done for each delivered recipient)."""
        return Entry(
            self.id, self.sender, self.mail, recipients, self.arrival, self.held, self.warned,
            self.uid, self.extra,
        )  # fmt: skip


inf = float("inf")


def reply_to_json(reply: Reply) -> dict[str, Any]:
    return {
        "code": reply.code,
        "enhanced": str(reply.enhanced) if reply.enhanced else None,
        "lines": list(reply.lines),
        "local": reply.local,
    }


def reply_from_json(data: Any) -> Reply:
    if not isinstance(data, Mapping):
        raise EntryFormatError("a reply must be an object")
    lines = data.get("lines")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise EntryFormatError("reply lines must be a list of strings")
    code = data.get("code")
    if not isinstance(code, int) or not 200 <= code <= 599:
        raise EntryFormatError(f"not a reply code: {code!r}")
    enhanced = data.get("enhanced")
    return Reply(
        code,
        tuple(lines),
        EnhancedStatus.parse(enhanced) if isinstance(enhanced, str) else None,
        bool(data.get("local", False)),
    )


def _attempt_to_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": attempt.at,
        "state": attempt.state.value,
        "reply": reply_to_json(attempt.reply),
        "remote": attempt.remote,
        "address": attempt.address,
    }


def _recipient_to_json(r: QueuedRecipient) -> dict[str, Any]:
    options = r.recipient.options
    return {
        "address": r.address,
        "notify": sorted(n.value for n in options.notify),
        "orcpt": options.orcpt,
        "state": r.state.value,
        "attempts": r.attempts,
        "next_attempt": r.next_attempt,
        "last_attempt": r.last_attempt,
        "reply": None if r.reply is None else reply_to_json(r.reply),
        "remote": r.remote,
        "history": [_attempt_to_json(a) for a in r.history],
    }


def entry_to_json(entry: Entry) -> dict[str, Any]:
    """The entry file's object (see the module docstring)."""
    mail = entry.mail
    return {
        **entry.extra,
        "format": ENTRY_FORMAT,
        "id": entry.id,
        "arrival": entry.arrival,
        "sender": entry.sender or "",
        "mail": {
            "size": mail.size,
            "body": mail.body.value if mail.body else None,
            "smtputf8": mail.smtputf8,
            "ret": mail.ret.value if mail.ret else None,
            "envid": mail.envid,
            "requiretls": mail.requiretls,
            "require_dsn": mail.require_dsn,
        },
        "held": entry.held,
        "warned": entry.warned,
        "uid": entry.uid,
        "recipients": [_recipient_to_json(r) for r in entry.recipients],
    }


def _number(data: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if value.__class__ is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntryFormatError(f"{key}: expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise EntryFormatError(f"{key}: out of range") from None


def _optional_number(data: Mapping[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _number(data, key)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise EntryFormatError(f"{key}: expected a string, got {value!r}")
    return value


def _is_object(data: Any) -> bool:
    # A JSON object is a dict; the ABC check (slow) only for other mappings.
    return data.__class__ is dict or isinstance(data, Mapping)


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not _is_object(data):
        raise EntryFormatError(f"{what} must be an object")
    return data  # type: ignore[no-any-return]


_STATES = {state.value: state for state in RecipientState}


def _state(value: Any) -> RecipientState:
    state = _STATES.get(value) if isinstance(value, str) else None
    if state is None:
        raise EntryFormatError(f"not a recipient state: {value!r}")
    return state


def _attempt_from_json(data: Any) -> Attempt:
    data = _object(data, "an attempt")
    return Attempt(
        _number(data, "at"),
        _state(data.get("state")),
        reply_from_json(data.get("reply")),
        _optional_str(data, "remote"),
        _optional_str(data, "address"),
    )


def _recipient_from_json(data: Any) -> QueuedRecipient:
    data = _object(data, "a recipient")
    get = data.get
    notify = get("notify", [])
    if notify.__class__ is not list:
        raise EntryFormatError("notify: expected a list")
    address = get("address")
    if not isinstance(address, str):
        raise EntryFormatError("address: expected a string")
    orcpt = _optional_str(data, "orcpt")
    history = get("history", [])
    if history.__class__ is not list:
        raise EntryFormatError("history: expected a list")
    attempts = get("attempts", 0)
    if attempts.__class__ is not int or attempts < 0:
        raise EntryFormatError(f"attempts: expected a count, got {attempts!r}")
    reply = get("reply")
    recipient = (
        Recipient(Address.parse(address), RcptOptions(frozenset(Notify(n) for n in notify), orcpt))
        if notify or orcpt is not None
        else Recipient(Address.parse(address))
    )
    return QueuedRecipient(
        recipient,
        _state(get("state", "pending")),
        attempts,
        _number(data, "next_attempt", 0.0),
        _optional_number(data, "last_attempt"),
        None if reply is None else reply_from_json(reply),
        _optional_str(data, "remote"),
        tuple([_attempt_from_json(a) for a in history[-MAX_HISTORY:]]) if history else (),
    )


_KNOWN = frozenset(
    {"format", "id", "arrival", "sender", "mail", "held", "warned", "uid", "recipients"}
)
_PLAIN_MAIL = MailOptions()


def entry_from_json(data: Any) -> Entry:
    """The entry in ``data`` (a parsed entry file); raises :class:`EntryFormatError`, or a
    core error for an address or option that is not valid."""
    data = _object(data, "an entry")
    get = data.get
    if get("format") != ENTRY_FORMAT:
        raise EntryFormatError(f"unknown entry format {get('format')!r}")
    mail = get("mail", {})
    recipients = get("recipients")
    if not _is_object(mail) or recipients.__class__ is not list or not recipients:
        raise EntryFormatError("an entry needs mail options and at least one recipient")
    size, body, ret, envid = mail.get("size"), mail.get("body"), mail.get("ret"), mail.get("envid")
    smtputf8, requiretls = mail.get("smtputf8", False), mail.get("requiretls", False)
    require_dsn = mail.get("require_dsn", False)
    if size is envid is None and not (body or smtputf8 or ret or requiretls or require_dsn):
        options = _PLAIN_MAIL  # the common case: no option at all
    else:
        options = MailOptions(
            size=size if size.__class__ is int else None,
            body=Body(body) if body else None,
            smtputf8=bool(smtputf8),
            ret=Ret(ret) if ret else None,
            envid=_optional_str(mail, "envid"),
            requiretls=bool(requiretls),
            require_dsn=bool(require_dsn),
        )
    entry_id, sender = get("id"), get("sender", "")
    if entry_id.__class__ is not str or not isinstance(sender, str):
        raise EntryFormatError("id and sender must be strings")
    uid = get("uid")
    if sender:
        Address.parse(sender)
    return Entry(
        entry_id,
        sender or None,
        options,
        tuple([_recipient_from_json(r) for r in recipients]),
        _number(data, "arrival"),
        bool(get("held", False)),
        bool(get("warned", False)),
        uid if uid.__class__ is int else None,
        {} if data.keys() <= _KNOWN else {k: v for k, v in data.items() if k not in _KNOWN},
    )


def journal_line(recipient: QueuedRecipient) -> dict[str, Any]:
    """The journal's record of a decided recipient: everything that decision changed."""
    assert recipient.reply is not None and recipient.last_attempt is not None
    return {
        "address": recipient.address,
        "state": recipient.state.value,
        "attempts": recipient.attempts,
        "at": recipient.last_attempt,
        "reply": reply_to_json(recipient.reply),
        "remote": recipient.remote,
        "ip": recipient.history[-1].address if recipient.history else None,
    }


def apply_journal(entry: Entry, lines: Iterable[Mapping[str, Any]]) -> Entry:
    """``entry`` with the journal's decisions applied (each line is absolute: idempotent)."""
    for line in lines:
        current = entry.recipient(str(line.get("address")))
        if current is None:
            continue  # not one of this entry's recipients: nothing to apply
        state = _state(line.get("state"))
        attempts = line.get("attempts")
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise EntryFormatError("journal: attempts must be a count")
        if current.state.decided and current.attempts >= attempts:
            continue  # already in the entry (the journal outlived a rewrite)
        attempt = Attempt(
            _number(line, "at"),
            state,
            reply_from_json(line.get("reply")),
            _optional_str(line, "remote"),
            _optional_str(line, "ip"),
        )
        entry = entry.with_recipient(current.after(attempt, attempts, 0.0))
    return entry
