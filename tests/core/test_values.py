"""The value types made per message: fast_init's quicker __init__ behaves as the dataclass's,
and the bounded caches of parsed addresses and plain recipients change no result."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxsend.model import MessageReport, RecipientReport
from mxsend.protocol import (
    Address,
    AddressError,
    BodyRequested,
    BodySent,
    EnhancedStatus,
    Envelope,
    MailOptions,
    Message,
    ParameterError,
    RcptOptions,
    Recipient,
    RecipientResult,
    Reply,
    TransactionCompleted,
    TransactionResult,
    _address,
    _options,
)
from mxsend.protocol._options import Notify
from mxsend.protocol._values import fast_init

FAST = [
    Address,
    BodyRequested,
    BodySent,
    EnhancedStatus,
    Envelope,
    MailOptions,
    Message,
    MessageReport,
    Recipient,
    RecipientReport,
    RecipientResult,
    Reply,
    TransactionCompleted,
    TransactionResult,
]


def _sample(fast: bool) -> Any:
    def post_init(self: Any) -> None:
        if self.a < 0:
            raise ValueError("negative")
        object.__setattr__(self, "derived", self.a * 2)

    namespace = {
        "__annotations__": {
            "a": int,
            "b": str,
            "c": list,
            "d": int,
            "e": int,
            "f": tuple,
            "derived": int,
        },
        "b": "x",
        "c": field(default_factory=list),
        "d": field(default=3, init=False),
        "e": field(default=5, kw_only=True),
        "f": field(default_factory=tuple, kw_only=True),
        "derived": field(init=False, repr=False, compare=False),
        "__post_init__": post_init,
    }
    cls: Any = dataclass(frozen=True, slots=True)(type("Sample", (), namespace))
    return fast_init(cls) if fast else cls


PLAIN, QUICK = _sample(False), _sample(True)


def _state(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name, "<unset>") for name in obj.__slots__}


@given(
    a=st.integers(-2, 5),
    b=st.none() | st.text(max_size=3),
    c=st.none() | st.lists(st.integers(), max_size=2),
    e=st.none() | st.integers(),
    f=st.none() | st.tuples(st.integers()),
)
def test_same_values_and_errors_as_the_dataclass(
    a: int, b: str | None, c: list[int] | None, e: int | None, f: tuple[int] | None
) -> None:
    kwargs = {k: v for k, v in {"b": b, "c": c, "e": e, "f": f}.items() if v is not None}
    outcomes: list[object] = []
    for cls in (PLAIN, QUICK):
        try:
            outcomes.append(_state(cls(a, **kwargs)))
        except ValueError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def test_same_signature_and_still_frozen() -> None:
    assert str(inspect.signature(QUICK.__init__)) == str(inspect.signature(PLAIN.__init__))
    obj = QUICK(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.a = 2
    assert QUICK(1, c=[1]) == QUICK(1, c=[1]) and QUICK(1).c is not QUICK(1).c
    assert dataclasses.replace(obj, b="y").b == "y"
    with pytest.raises(TypeError):
        QUICK(1, "b", [], 5)  # e is keyword-only
    with pytest.raises(TypeError):
        QUICK(1, d=4)  # d is not an __init__ parameter


@pytest.mark.parametrize("cls", FAST, ids=lambda cls: cls.__name__)
def test_the_value_types_use_it(cls: type) -> None:
    # The module-level guard compared the signatures; this checks the decorator ran.
    names = cls.__init__.__code__.co_freevars  # type: ignore[misc]
    assert any(name.startswith("__mx_set_") for name in names)


def test_the_value_types_keep_their_checks() -> None:
    with pytest.raises(ParameterError):
        MailOptions(size=-1)
    with pytest.raises(ParameterError):
        Envelope(None, ())
    envelope = Envelope.build("a@example.com", ["b@example.net"])
    assert envelope.wants_dsn is False and envelope.options == MailOptions()
    assert Recipient(Address("b", "example.net")) == envelope.recipients[0]


def test_refuses_a_class_it_cannot_serve() -> None:
    @dataclass
    class Mutable:
        a: int

    with pytest.raises(TypeError, match="frozen, slotted"):
        fast_init(Mutable)


def test_parsed_addresses_are_shared_and_bounded() -> None:
    first = Address.parse("bob@example.net")
    assert Address.parse("bob@example.net") is first
    assert Address.parse("Bob@example.net") == Address("Bob", "example.net")  # text is the key
    for _ in range(2):  # refused every time: a failure is never remembered
        with pytest.raises(AddressError):
            Address.parse("bob@@example.net")
    cache = _address._parse_text.cache_info
    assert cache().maxsize == 1024
    for n in range(1034):
        Address.parse(f"user{n}@example.net")
    assert cache().currsize == 1024
    assert Address.parse("bob@example.net") == first


def test_a_subclass_or_a_str_subclass_is_not_served_from_the_cache() -> None:
    class Text(str):
        def rpartition(self, sep: str) -> tuple[str, str, str]:  # what parse splits with
            return ("mallory", "@", "example.org")

    class Mailbox(Address):
        __slots__ = ()

    _address._parse_text.cache_clear()
    _options._shared_recipient.cache_clear()
    plain = Address.parse("carol@example.org")
    assert type(Mailbox.parse("carol@example.org")) is Mailbox  # not the cached Address
    # A str subclass is neither stored nor answered from the cache: its own methods decide.
    assert Address.parse(Text("carol@example.org")) == Address("mallory", "example.org")
    assert Address.parse(Text("dave@example.org")).local_part == "mallory"
    assert _address._parse_text.cache_info().currsize == 1  # carol's alone
    assert Address.parse("carol@example.org") is plain
    assert Envelope.build(None, [Text("erin@example.org")]).recipients[0].address.local_part == (
        "mallory"
    )
    assert _options._shared_recipient.cache_info().currsize == 0


def test_introspection_sees_the_modules_names() -> None:
    import typing

    assert typing.get_type_hints(Envelope.__init__)["sender"] == Address | None
    assert (
        inspect.signature(RecipientReport.__init__, eval_str=True).parameters["reply"].annotation
        is Reply
    )
    assert Envelope.__init__.__module__ == "mxsend.protocol._options"


def test_refuses_an_initvar() -> None:
    namespace = {"__annotations__": {"a": int, "b": dataclasses.InitVar[int]}}
    cls = dataclass(frozen=True, slots=True)(type("WithInitVar", (), namespace))
    with pytest.raises(TypeError, match="InitVar"):
        fast_init(cls)


def test_plain_recipients_are_shared_and_those_with_options_are_not() -> None:
    one = Envelope.build("a@example.com", ["b@example.net", "b@example.net"])
    two = Envelope.build("a@example.com", ["b@example.net"])
    assert one.recipients[0] is one.recipients[1] is two.recipients[0]
    notify = RcptOptions(frozenset({Notify.FAILURE}))
    three = Envelope.build("a@example.com", ["b@example.net"], rcpt_options=notify)
    assert three.recipients[0].options is notify and three.wants_dsn
    assert three.recipients[0] is not two.recipients[0]
    for n in range(1034):
        Envelope.build(None, [f"r{n}@example.net"])
    assert _options._shared_recipient.cache_info().currsize == 1024
    with pytest.raises(AddressError):
        Envelope.build("a@example.com", ["not an address"])
