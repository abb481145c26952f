"""Local submission into a queue that the submitting user cannot write: the request a
sendmail sends over the daemon's Unix socket, and what the daemon does with it.

A user who is not root cannot write the system queue (0700, root's). Their ``mxsend-sendmail``
prepares the message as usual (fix-ups, Bcc removed) and sends it to the daemon's socket::

    MXSEND-SUBMIT/1 LF
    sender ADDRESS LF             ("sender" alone: the null sender <>)
    rcpt ADDRESS LF               (one per recipient)
    [notify NEVER|SUCCESS,FAILURE,DELAY LF] [ret FULL|HDRS LF] [envid TEXT LF]
    size N LF                     (octets of content that follow)
    LF
    N octets: the message

The daemon learns who is asking from the socket itself (SO_PEERCRED, never from the
request), checks everything again (it trusts nothing the client says), checks that this user
may use that envelope sender, queues the message with the user's uid, and answers one line:
``250 ID``, ``451 why`` (try again later), ``550 why`` (this sender is not this user's) or
``554 why`` (the request or the message is refused). No setuid program anywhere.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Collection
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, cast

from mxsend.protocol import (
    AddressError,
    Content,
    ContentError,
    Envelope,
    MailOptions,
    Message,
    Notify,
    ParameterError,
    RcptOptions,
    Ret,
)
from mxsend.queue._store import QueueError, QueueStore, new_entry

__all__ = [
    "MAGIC",
    "MAX_REQUEST_HEADER",
    "IntakeError",
    "Rules",
    "SenderPolicy",
    "SubmitRequest",
    "accept",
    "parse_request",
]

MAGIC = b"MXSEND-SUBMIT/1\n"
#: The request's envelope lines, at most: a thousand recipients fit.
MAX_REQUEST_HEADER = 300 * 1024
_MAX_RECIPIENTS = 1000


class IntakeError(QueueError):
    """A submission not taken; ``code`` is the reply's (451, 550 or 554)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SubmitRequest:
    sender: str  #: "" is the null sender
    recipients: tuple[str, ...]
    size: int
    notify: str | None = None
    ret: str | None = None
    envid: str | None = None


def parse_request(header: bytes) -> SubmitRequest:
    """The request's header (from :data:`MAGIC` to the empty line, both included); an
    IntakeError (554) for anything else."""
    if not header.startswith(MAGIC) or not header.endswith(b"\n\n"):
        raise IntakeError(554, "not an mxsend submission")
    if len(header) > MAX_REQUEST_HEADER:
        raise IntakeError(554, "too many recipients in one submission")
    try:
        lines = header[len(MAGIC) : -2].decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise IntakeError(554, "the submission's envelope is not UTF-8") from None
    sender: str | None = None
    recipients: list[str] = []
    values: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(" ")
        if not value.isprintable():
            raise IntakeError(554, f"bad {key!r} line in the submission")
        if key == "sender" and sender is None:
            sender = value
        elif key == "rcpt" and value:
            recipients.append(value)
        elif key in ("notify", "ret", "envid", "size") and key not in values:
            values[key] = value
        else:
            raise IntakeError(554, f"bad {key!r} line in the submission")
    size = values.get("size", "")
    if sender is None or not recipients or not (size.isascii() and size.isdigit()):
        raise IntakeError(554, "the submission needs a sender, recipients and a size")
    if len(recipients) > _MAX_RECIPIENTS:
        raise IntakeError(554, f"more than {_MAX_RECIPIENTS} recipients in one submission")
    if len(size) > 20:
        raise IntakeError(554, "the submission's size is not a size")
    return SubmitRequest(
        sender,
        tuple(recipients),
        int(size),
        values.get("notify"),
        values.get("ret"),
        values.get("envid"),
    )


class Rules(Protocol):
    """What the config's ``[[submit.allow]]`` rules say (``mxsend.config.Config``)."""

    def sender_allowed(
        self, sender: str, *, user: str, uid: int, groups: Collection[str]
    ) -> bool: ...


@dataclass(frozen=True)
class SenderPolicy:
    """Who may use which envelope sender. Root may use any; every user may use their own
    address at ``host`` and the null sender; the config's rules (``rules``) allow more. With
    no rules, that is all: a local user cannot send as someone else."""

    host: str
    rules: Rules | None = None

    def allows(self, uid: int, user: str, sender: str) -> bool:
        if uid == 0 or not sender:
            return True
        local, _, domain = sender.rpartition("@")
        if local == user and domain.lower() == self.host.lower():
            return True
        return self.rules is not None and self.rules.sender_allowed(
            sender, user=user, uid=uid, groups=_groups(user, uid)
        )


def _groups(user: str, uid: int) -> list[str]:
    """The names of the groups ``user`` (``uid``) is in."""
    try:
        gid = pwd.getpwuid(uid).pw_gid
        return [grp.getgrgid(g).gr_name for g in os.getgrouplist(user, gid)]
    except (KeyError, OSError):
        return []


def accept(
    store: QueueStore,
    request: SubmitRequest,
    content: IO[bytes],
    *,
    uid: int,
    user: str,
    policy: SenderPolicy,
    now: float,
) -> str:
    """Queue the submitted message for the user ``uid`` (``user``): its queue id, or an
    IntakeError with nothing queued."""
    if not policy.allows(uid, user, request.sender):
        raise IntakeError(
            550, f"{user} may not send as <{request.sender}> (see the config's submit rules)"
        )
    try:
        rcpt = RcptOptions()
        if request.notify is not None:
            words = request.notify.upper().split(",")
            rcpt = RcptOptions(notify=frozenset(Notify(w) for w in words))
        ret = Ret(request.ret.upper()) if request.ret else None
        message_content = Content.from_file(cast("BinaryIO", content))
        info = message_content.scan()
        if info.raw_size != request.size:
            raise IntakeError(554, "the submission's size does not match its content")
        if info.long_lines:
            raise IntakeError(554, "the message has a line longer than 998 octets")
        options = MailOptions.for_content(info, ret=ret, envid=request.envid)
        envelope = Envelope.build(request.sender or None, request.recipients, options, rcpt)
    except (AddressError, ParameterError, ValueError) as exc:
        raise IntakeError(554, str(exc)) from None
    except ContentError as exc:
        raise IntakeError(451, str(exc)) from None
    message = Message(envelope, message_content)
    [queue_id] = store.enqueue([(new_entry(message, now=now, uid=uid), message)])
    return queue_id
