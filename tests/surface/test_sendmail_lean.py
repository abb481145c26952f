"""mxsend-sendmail's lean path agrees with the full path on every message it takes, imports
next to nothing, and hands everything else on without losing a byte."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mxsend.cli import _drop, _submit
from mxsend.cli._common import UserError
from mxsend.cli.sendmail import SendmailArgs, _dot_line, _read_input, main
from mxsend.protocol import Address
from mxsend.queue import DiskStore

SENDMAIL = Path(sys.executable).parent / "mxsend-sendmail"
HOST = "host.example"
OWN = "me@host.example"
NOW = 1796000000.25
Queued = tuple[dict[str, Any], bytes]  # an entry's state (less its times and id), its message


def _args(**given: object) -> SendmailArgs:
    args = SendmailArgs()
    for name, value in given.items():
        setattr(args, name, value)
    return args


def _read_queue(root: Path) -> Queued:
    [state] = (root / "entries").glob("*.json")
    entry = json.loads(state.read_text())
    content = state.with_suffix(".msg").read_bytes()
    for key in ("id", "arrival"):
        entry.pop(key)
    for r in entry["recipients"]:
        r.pop("next_attempt")
    return entry, content


def _fix(patch: pytest.MonkeyPatch) -> None:
    """One time and one random number for both paths, so Date and Message-ID agree."""
    patch.setattr(time, "time", lambda: NOW)
    patch.setattr(os, "urandom", lambda n: b"\x5a" * n)
    patch.setattr(random, "getrandbits", lambda k: int.from_bytes(b"\x5a" * (k // 8), "big"))


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _fix(monkeypatch)
    yield


def both(
    tmp_path: Path, data: bytes, rewrite: _drop.Rewrite = _drop.NO_REWRITE, **given: Any
) -> tuple[Queued, Queued] | None:
    """The lean path's queue entry and content for ``data``, and the full path's; None when
    the lean path does not take it."""
    args = _args(**given)
    read, complete = _read_input(io.BytesIO(data), dot_ends=args.dot_ends)
    assert complete
    drop = _drop.prepare(
        read,
        sender=args.sender,
        full_name=args.full_name,
        recipients=args.recipients,
        from_headers=args.from_headers,
        host=HOST,
        own_address=OWN,
        rewrite=rewrite,
    )
    if drop is None:
        return None
    lean, full = tmp_path / "lean", tmp_path / "full"
    for root in (lean, full):
        if root.exists():
            for item in (root / "entries").iterdir():
                item.unlink()
    _drop.write(str(lean), drop, uid=os.getuid())
    args.queue_dir = str(full)
    _submit.submit(args, io.BytesIO(data), host=HOST, own_address=OWN, rewrite=rewrite)
    return _read_queue(lean), _read_queue(full)


CASES = [
    (b"To: b@y.test\nSubject: hi\n\nbody\n", {"from_headers": True, "sender": "a@x.test"}),
    (b"To: b@y.test\r\nSubject: hi\r\n\r\nbody\r\n", {"from_headers": True}),
    (b"body only\n", {"recipients": ["b@y.test"]}),
    (b"", {"recipients": ["b@y.test"]}),
    (b"\nbody after an empty line\n", {"recipients": ["b@y.test"]}),
    (b"Subject: no end", {"recipients": ["b@y.test"]}),
    (b"Subject: x\nnot a field\nTo: c@y.test\n", {"recipients": ["b@y.test"]}),
    (b"From: root (Cron Daemon)\nTo: root\nSubject: Cron\n\nout\n", {"recipients": ["root"]}),
    (b"To: Bob <b@y.test>, c@y.test\nCc: d@Y.TEST\nBcc: e@z.test\n\nx\n", {"from_headers": True}),
    (b"To: b@y.test\nBcc: e@z.test,\n f@z.test\nSubject: s\n\nx\n", {"from_headers": True}),
    (b"Bcc: b@y.test\nSubject: s\n\nx\n", {"from_headers": True}),
    (b"Bcc: b@y.test\nSubject: s\nbody no blank line\n", {"from_headers": True}),
    (b"Resent-To: r@y.test\nTo: b@y.test\n\nx\n", {"from_headers": True}),
    (b"To: b@y.test\n\n8 bit: \xc3\xa9t\xe9\n.\n..\n", {"from_headers": True}),
    (b"To: b@y.test\n\n8 bit: \xc3\xa9t\xe9\n.\n..\n", {"from_headers": True, "dot_ends": False}),
    (b"Subject: x\n\nbody\n", {"recipients": ["b@y.test", "B@y.test", "b@Y.test"]}),
    (b"Subject: x\n\nbody\n", {"recipients": ["b@y.test"], "full_name": "Build Bot"}),
    (b"Subject: x\n\nbody\n", {"recipients": ["b@y.test"], "sender": ""}),
    (b"Date: yesterday\nMessage-ID: <x@y>\nFrom: a@x.test\n\nx\n", {"recipients": ["b@y.test"]}),
    (b"Subject: x\n\n" + b"y" * 998 + b"\n", {"recipients": ["b@y.test"]}),
]


@pytest.mark.parametrize(("data", "given"), CASES)
def test_the_lean_path_queues_what_the_full_path_queues(
    tmp_path: Path, fixed_time: None, data: bytes, given: dict[str, Any]
) -> None:
    found = both(tmp_path, data, **given)
    assert found is not None, "the lean path should take this one"
    lean, full = found
    assert lean == full


@pytest.mark.parametrize(
    ("data", "given"),
    [
        (b'To: "Quoted, Name" <b@y.test>\n\nx\n', {"from_headers": True}),
        (b"To: undisclosed-recipients:;\n\nx\n", {"recipients": ["b@y.test"]}),
        (b"To: b@[192.0.2.1]\n\nx\n", {"from_headers": True}),
        (b"Subject: x\r\rbare CR\n", {"recipients": ["b@y.test"]}),
        (b"Subject: x\n\n" + b"y" * 999 + b"\n", {"recipients": ["b@y.test"]}),
        (b"Subject: caf\xc3\xa9\n\nx\n", {"recipients": ["b@y.test"]}),
        (b"Subject: x\n\nx\n", {"recipients": ["b@y.test"], "full_name": "O'Brien, Pat"}),
        (b"Subject: x\n\nx\n", {"recipients": ["bad address@y.test"]}),
        (b"Subject: x\n\nx\n", {"recipients": []}),
        (b"To: \n\nx\n", {"from_headers": True}),
        (b"To: =?utf-8?q?evil?=@y.test\n\nx\n", {"from_headers": True}),
        (b"To: Bob <=?utf-8?b?ZXZpbA==?=@y.test>\n\nx\n", {"from_headers": True}),
    ],
)
def test_anything_else_goes_to_the_full_path(data: bytes, given: dict[str, object]) -> None:
    args = _args(**given)
    drop = _drop.prepare(
        data,
        sender=args.sender,
        full_name=args.full_name,
        recipients=args.recipients,
        from_headers=args.from_headers,
        host=HOST,
        own_address=OWN,
    )
    assert drop is None


_LOCAL = st.text("abcXYZ019.+-_=?", min_size=1, max_size=12) | st.sampled_from(
    ["=?utf-8?q?evil?=", "=?utf-8?b?ZXZpbA==?="]
)
_DOMAIN = st.sampled_from(["y.test", "Y.Test", "sub.y.test", "x-1.test", "-x.test", "x..test"])
_ADDR = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN) | _LOCAL
_ITEM = st.one_of(
    _ADDR,
    st.builds(lambda name, a: f"{name} <{a}>", st.text("Ab c-", max_size=8), _ADDR),
    st.builds(lambda a, c: f"{a} ({c})", _ADDR, st.text("Cron Dæmon()\\", max_size=8)),
    st.sampled_from(['"q" <a@y.test>', "g: a@y.test;", "a@y.test,", ""]),
)
_FIELD = st.one_of(
    st.builds(
        lambda name, items: f"{name}: {', '.join(items)}".encode(),
        st.sampled_from(["To", "Cc", "Bcc", "From", "Sender", "Reply-To", "Resent-To"]),
        st.lists(_ITEM, min_size=1, max_size=3),
    ),
    st.sampled_from(
        [b"Subject: s", b"Date: now", b"Message-ID: <a@b>", b" continued", b"X-A:b", b"bad"]
    ),
)
_BODY = st.lists(
    st.sampled_from(
        [b"text", b".", b"..", b"", b"\xc3\xa9", b"\xe9"] * 4 + [b"\r", b"y" * 999, b"\0"]
    ),
    max_size=6,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.lists(_FIELD, max_size=6),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    blank=st.booleans(),
    body=_BODY,
    recipients=st.lists(_ADDR, max_size=2),
    from_headers=st.booleans(),
    sender=st.sampled_from([None, "", "a@x.test", "bare"]),
    full_name=st.sampled_from([None, "", "Build Bot", "A, B"]),
    dot_ends=st.booleans(),
)
def test_whatever_the_lean_path_takes_the_full_path_queues_alike(
    tmp_path_factory: pytest.TempPathFactory,
    fields: list[bytes],
    separator: bytes,
    blank: bool,
    body: list[bytes],
    recipients: list[str],
    from_headers: bool,
    sender: str | None,
    full_name: str | None,
    dot_ends: bool,
) -> None:
    head = b"".join(f + separator for f in fields)
    data = head + (separator if blank else b"") + separator.join(body)
    given: dict[str, Any] = {
        "recipients": recipients,
        "from_headers": from_headers,
        "sender": sender,
        "full_name": full_name,
        "dot_ends": dot_ends,
    }
    with pytest.MonkeyPatch.context() as patch:
        _fix(patch)
        try:
            found = both(tmp_path_factory.mktemp("q"), data, **given)
        except Exception as exc:  # the full path refused what the lean path took
            raise AssertionError(f"lean took it, full refused: {exc}") from None
    event("lean" if found is not None else "full path")
    if found is not None:
        lean, full = found
        assert lean == full


REWRITES = [
    _drop.NO_REWRITE,
    _drop.Rewrite(domain="corp.test"),
    _drop.Rewrite(force_sender="bot@corp.test"),
    _drop.Rewrite(masquerade="x.test"),
    _drop.Rewrite(masquerade="HOST.example", undisclosed=True),
]
_GOOD_LOCAL = st.from_regex(r"[a-z0-9+_=-]{1,8}(\.[a-z0-9]{1,4})?", fullmatch=True)
_GOOD_ADDR = st.builds(
    lambda local, domain: f"{local}@{domain}", _GOOD_LOCAL, st.sampled_from(["y.test", "Y.Test"])
)
_GOOD_ITEM = st.one_of(
    _GOOD_ADDR,
    _GOOD_LOCAL,
    st.builds(lambda name, a: f"{name} <{a}>", st.text("Ab c-", max_size=8), _GOOD_ADDR),
    st.builds(lambda a: f"{a} (Cron Daemon)", _GOOD_ADDR),
)
_GOOD_FIELD = st.one_of(
    st.builds(
        lambda name, items: f"{name}: {', '.join(items)}".encode(),
        st.sampled_from(["To", "Cc", "Bcc", "From", "Resent-To", "Resent-Bcc"]),
        st.lists(_GOOD_ITEM, min_size=1, max_size=3),
    ),
    st.sampled_from([b"Subject: s", b"Date: now", b"Message-ID: <a@b>", b"X-A:b"]),
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(_GOOD_FIELD, max_size=5),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    blank=st.booleans(),
    body=st.lists(st.sampled_from([b"text", b".", b"..", b"", b"\xc3\xa9"]), max_size=5),
    recipients=st.lists(_GOOD_ADDR, max_size=2),
    from_headers=st.booleans(),
    sender=st.sampled_from([None, "", "a@x.test", "bare"]),
    full_name=st.sampled_from([None, "", "Build Bot"]),
    dot_ends=st.booleans(),
    rewrite=st.sampled_from(REWRITES),
)
def test_well_formed_messages_take_the_lean_path_and_queue_alike(
    tmp_path_factory: pytest.TempPathFactory,
    fields: list[bytes],
    separator: bytes,
    blank: bool,
    body: list[bytes],
    recipients: list[str],
    from_headers: bool,
    sender: str | None,
    full_name: str | None,
    dot_ends: bool,
    rewrite: _drop.Rewrite,
) -> None:
    head = b"".join(f + separator for f in fields)
    data = head + (separator if blank else b"") + separator.join(body)
    given: dict[str, Any] = {
        "recipients": recipients,
        "from_headers": from_headers,
        "sender": sender,
        "full_name": full_name,
        "dot_ends": dot_ends,
    }
    with pytest.MonkeyPatch.context() as patch:
        _fix(patch)
        found = both(tmp_path_factory.mktemp("q"), data, rewrite, **given)
    event("lean" if found is not None else "full path")
    if found is None:
        # Only a message with no recipient at all is left to the full path (which refuses it).
        headed = (b"To", b"Cc", b"Bcc", b"Resent-To", b"Resent-Bcc")
        assert not recipients and not (from_headers and any(f.startswith(headed) for f in fields))
        return
    lean, full = found
    assert lean == full


@given(st.text(st.characters(codec="utf-8"), max_size=20) | _ADDR)
def test_plain_addresses_are_the_core_s_own(text: str) -> None:
    # What the lean path takes, the core takes unchanged (the core takes more besides).
    if _drop.plain_address(text):
        assert str(Address.parse(text)) == text


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns", "Asia/Kolkata", "Europe/Paris"])
def test_the_date_is_email_utils_own(zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import email.utils

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for when in (0.0, 1796000000.25, 1719792000.0, 1735689599.9):
            monkeypatch.setattr(time, "time", lambda when=when: when)
            assert _drop._date(when) == email.utils.formatdate(localtime=True)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("data", "eof", "cut"),
    [
        (b"a\n.\nb\n", False, 2),
        (b".\n", False, 0),
        (b"a\n.\r\n", False, 2),
        (b"a\n.\r\r\n", False, 2),
        (b"a\n.", False, None),
        (b"a\n.", True, 2),
        (b"a\n..\n. \n", True, None),
        (b"a\r.\rb\n", True, None),
    ],
)
def test_a_lone_dot_line_is_found_as_spool_finds_it(
    data: bytes, eof: bool, cut: int | None
) -> None:
    assert _dot_line(bytearray(data), 0, eof=eof) == cut


def _run(queue: Path, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(queue)}
    return subprocess.run(
        [str(SENDMAIL), "-odq", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_a_plain_submission_imports_next_to_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from mxsend.cli.sendmail import main; "
        "status = main(['sendmail', '-odq', '-t', '-f', 'a@x.test']); "
        "print(status, ' '.join(sorted(sys.modules)))"
    )
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(tmp_path / "q")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=b"To: Bob <b@y.test>\nSubject: s\n\nbody\n",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    status, _, modules = done.stdout.decode().partition(" ")
    assert status == "0", done.stderr
    loaded = set(modules.split())
    # No Twisted, OpenSSL (ssl, hashlib) or event loop; not even re, enum, email or json.
    for heavy in ("twisted", "OpenSSL", "_ssl", "_hashlib", "asyncio", "re", "enum", "email",
                  "json", "mxsend.protocol", "mxsend.queue", "subprocess", "typing"):  # fmt: skip
        assert heavy not in loaded, heavy
    [entry] = DiskStore(tmp_path / "q").scan()
    assert entry


def test_input_over_the_lean_limit_is_spooled_whole_and_the_dot_still_ends_it(
    tmp_path: Path,
) -> None:
    line = b"z" * 99 + b"\n"
    big = line * (_drop.LEAN_LIMIT // len(line) + 100)
    done = _run(tmp_path, "b@y.test", stdin=b"Subject: big\n\n" + big + b".\nafter the dot\n")
    assert done.returncode == 0, done.stderr
    [state] = (tmp_path / "entries").glob("*.json")
    content = state.with_suffix(".msg").read_bytes()
    assert content.endswith(b"Subject: big\n\n" + big)


def test_a_dot_typed_at_a_terminal_ends_the_message_without_end_of_input(tmp_path: Path) -> None:
    env = {**os.environ, "MXSEND_QUEUE_DIR": str(tmp_path)}
    with subprocess.Popen(
        [str(SENDMAIL), "-odq", "b@y.test"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        assert child.stdin is not None
        child.stdin.write(b"Subject: typed\n\nhello\n.\n")
        child.stdin.flush()  # and the pipe stays open, as a terminal does
        try:
            assert child.wait(timeout=30) == 0
        finally:
            child.stdin.close()
    [state] = (tmp_path / "entries").glob("*.json")
    assert state.with_suffix(".msg").read_bytes().endswith(b"Subject: typed\n\nhello\n")


def test_the_lean_path_says_why_it_could_not_queue(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_bytes(b"")
    done = _run(blocked / "queue", "b@y.test", stdin=b"x\n")
    assert done.returncode == 75
    assert done.stderr.decode().count("\n") == 1 and "cannot use the queue" in done.stderr.decode()


def test_main_in_process_takes_the_lean_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MXSEND_QUEUE_DIR", str(tmp_path))
    read, write = os.pipe()
    os.write(write, b"Subject: s\n\nx\n")
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(pipe))
        assert main(["sendmail", "-odq", "b@y.test"]) == 0
    assert len(list((tmp_path / "entries").glob("*.json"))) == 1


@pytest.mark.parametrize(
    ("rewrite", "args", "sender", "recipients", "fields"),
    [
        (_drop.Rewrite(domain="corp.test"), ["root"], "me@host.example", ["root@corp.test"], []),
        (
            _drop.Rewrite(force_sender="bot@corp.test"),
            ["-f", "a@x.test", "b@y.test"],
            "bot@corp.test",
            ["b@y.test"],
            [b"From: bot@corp.test"],
        ),
        (
            _drop.Rewrite(force_sender="bot@corp.test"),
            ["-f", "<>", "b@y.test"],
            "",  # a bounce keeps its null sender
            ["b@y.test"],
            [],
        ),
        (
            _drop.Rewrite(masquerade="x.test"),
            ["-f", "a@mail.x.test", "b@y.test"],
            "a@x.test",
            ["b@y.test"],
            [b"From: a@x.test"],
        ),
        (
            _drop.Rewrite(undisclosed=True),
            ["b@y.test"],
            "me@host.example",
            ["b@y.test"],
            [b"To: undisclosed-recipients:;"],
        ),
    ],
)
def test_the_config_s_rewriting(
    tmp_path: Path,
    fixed_time: None,
    rewrite: _drop.Rewrite,
    args: list[str],
    sender: str,
    recipients: list[str],
    fields: list[bytes],
) -> None:
    from mxsend.cli.sendmail import parse

    parsed = parse(args)
    found = both(
        tmp_path,
        b"Subject: s\n\nx\n",
        rewrite,
        sender=parsed.sender,
        recipients=parsed.recipients,
    )
    assert found is not None
    (lean, content), full = found
    assert (lean, content) == full
    assert isinstance(lean, dict) and lean["sender"] == sender
    assert [r["address"] for r in lean["recipients"]] == recipients
    assert isinstance(content, bytes)
    for field in fields:
        assert field + b"\r\n" in content


@pytest.mark.parametrize(
    "field",
    [
        b"To: =?utf-8?q?evil?=@y.test",
        b"To: Bob <=?utf-8?b?ZXZpbA==?=@y.test>",
        b"To: a@=?utf-8?q?evil.test?=",
        b"Cc: =?utf-8?q?=C3=A9?=@y.test",
    ],
)
def test_an_encoded_word_never_names_a_recipient(tmp_path: Path, field: bytes) -> None:
    # RFC 2047 5: not in an addr-spec. The email package would decode it into another address.
    done = _run(tmp_path, "-t", stdin=field + b"\nSubject: s\n\nx\n")
    assert done.returncode == 65, done.stderr
    assert not (tmp_path / "entries").exists() or not list((tmp_path / "entries").iterdir())


def test_a_user_name_that_makes_no_address_is_refused_not_a_traceback(tmp_path: Path) -> None:
    def lean(own: str) -> _drop.Drop | None:
        return _drop.prepare(
            b"x\n", sender="", full_name=None, recipients=["b@y.test"], from_headers=False,
            host=HOST, own_address=own,
        )  # fmt: skip

    def full(own: str) -> str:
        args = _args(recipients=["b@y.test"], sender="", queue_dir=str(tmp_path))
        return _submit.submit(args, io.BytesIO(b"x\n"), host=HOST, own_address=own)

    # A passwd name (or $USER) that would inject a field: refused, nothing queued.
    injected = "x\r\nBcc: evil@x.test\r\nX: y@host.example"
    assert lean(injected) is None
    with pytest.raises(UserError) as raised:
        full(injected)
    assert raised.value.status == 65
    # A UTF-8 one is an address (RFC 6531): the full path writes its From (RFC 6532).
    assert lean("j\u00f6@host.example") is None
    full("j\u00f6@host.example")
    [state] = (tmp_path / "entries").glob("*.json")
    assert "From: j\u00f6@host.example\r\n".encode() in state.with_suffix(".msg").read_bytes()
