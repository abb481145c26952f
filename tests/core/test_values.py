"""fast_init: the quicker __init__ of the frozen value types behaves as the dataclass's."""

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
    BodyRequested,
    BodySent,
    EnhancedStatus,
    Envelope,
    MailOptions,
    Message,
    ParameterError,
    Recipient,
    RecipientResult,
    Reply,
    TransactionCompleted,
    TransactionResult,
)
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
    names = cls.__init__.__code__.co_names  # type: ignore[misc]
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
