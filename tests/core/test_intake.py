"""The submission socket's request and the sender rules (mxsend.queue._intake)."""

from __future__ import annotations

import io

import pytest

from mxsend.cli import _drop
from mxsend.config import Config, SubmitRule
from mxsend.queue import MemoryStore
from mxsend.queue._intake import IntakeError, SenderPolicy, accept, parse_request


def _drop_of(sender: str, recipients: list[str], content: bytes) -> _drop.Drop:
    return _drop.Drop(sender, recipients, content, len(content), False)


def test_the_lean_client_s_request_parses_back() -> None:
    header = _drop.request_header(_drop_of("", ["b@y.test", "c@y.test"], b"x\r\n"))
    request = parse_request(header)
    assert (request.sender, request.recipients, request.size) == ("", ("b@y.test", "c@y.test"), 3)


@pytest.mark.parametrize(
    "header",
    [
        b"HELO\n\n",
        b"MXSEND-SUBMIT/1\nrcpt b@y.test\nsize 1\n\n",  # no sender line
        b"MXSEND-SUBMIT/1\nsender \nsize 1\n\n",  # no recipient
        b"MXSEND-SUBMIT/1\nsender \nrcpt b@y.test\n\n",  # no size
        b"MXSEND-SUBMIT/1\nsender \nrcpt b@y.test\nsize -1\n\n",
        b"MXSEND-SUBMIT/1\nsender \nsender a@x.test\nrcpt b@y.test\nsize 1\n\n",
        b"MXSEND-SUBMIT/1\nsender \nrcpt b@y.test\nuid 0\nsize 1\n\n",  # the uid is the socket's
        b"MXSEND-SUBMIT/1\nsender a\x01b\nrcpt b@y.test\nsize 1\n\n",
        b"MXSEND-SUBMIT/1\nsender \xff\nrcpt b@y.test\nsize 1\n\n",
    ],
)
def test_a_bad_request_is_refused(header: bytes) -> None:
    with pytest.raises(IntakeError) as raised:
        parse_request(header)
    assert raised.value.code == 554


@pytest.mark.parametrize(
    ("uid", "user", "sender", "allowed"),
    [
        (0, "root", "anyone@anywhere.test", True),
        (1000, "alice", "alice@host.test", True),
        (1000, "alice", "alice@HOST.test", True),
        (1000, "alice", "", True),  # the null sender
        (1000, "alice", "bob@host.test", False),
        (1000, "alice", "alice@other.test", False),
        (1000, "alice", "news@lists.test", True),  # alice's rule
        (1000, "alice", "x@any.test", True),  # everyone's rule
        (1001, "bob", "news@lists.test", False),
        (1001, "bob", "x@ANY.test", True),
    ],
)
def test_sender_rules(uid: int, user: str, sender: str, allowed: bool) -> None:
    rules = Config(
        submit=(SubmitRule(("*@lists.test",), user="alice"), SubmitRule(("x@any.test",), user="*"))
    )
    policy = SenderPolicy("host.test", rules)
    assert policy.allows(uid, user, sender) is allowed


def test_accept_checks_everything_again_and_queues_with_the_uid() -> None:
    store = MemoryStore()
    policy = SenderPolicy("host.test")
    content = b"Subject: s\r\n\r\nbody\r\n"
    request = parse_request(_drop.request_header(_drop_of("", ["b@y.test"], content)))
    queue_id = accept(
        store, request, io.BytesIO(content), uid=1000, user="alice", policy=policy, now=1.0
    )
    entry = store.get(queue_id)
    assert entry.uid == 1000 and entry.sender is None
    bad = parse_request(_drop.request_header(_drop_of("", ["not an address"], content)))
    with pytest.raises(IntakeError) as raised:
        accept(store, bad, io.BytesIO(content), uid=1000, user="alice", policy=policy, now=1.0)
    assert raised.value.code == 554
    lying = parse_request(_drop.request_header(_drop_of("", ["b@y.test"], content + b"x")))
    with pytest.raises(IntakeError, match="size"):
        accept(store, lying, io.BytesIO(content), uid=1000, user="alice", policy=policy, now=1.0)
    long = b"Subject: s\r\n\r\n" + b"y" * 1000 + b"\r\n"
    request = parse_request(_drop.request_header(_drop_of("", ["b@y.test"], long)))
    with pytest.raises(IntakeError, match="998"):
        accept(store, request, io.BytesIO(long), uid=1000, user="alice", policy=policy, now=1.0)
    assert len(store.scan()) == 1
