"""A quicker ``__init__`` for the frozen value types made once or more per message.

A frozen dataclass sets each field with ``object.__setattr__(self, name, value)``: on Python
3.11 that is a type lookup, an argument tuple sliced and parsed, and a second type lookup for
the slot, per field. The slot's own descriptor sets it directly, in about half the time. The
class stays a plain frozen, slotted dataclass (fields, equality, hash, ``replace`` and
assignment refused); only how ``__init__`` stores the values changes.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of a frozen, slotted dataclass ``cls`` (apply on top of
    ``@dataclass(frozen=True, slots=True)``) with one of the same signature and effect."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    original = cls.__init__
    given = inspect.signature(original).parameters
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if set(given) - {"self"} - {f.name for f in fields if f.init}:
        raise TypeError(f"{cls.__name__} has an InitVar")  # not needed, so not handled
    closure: dict[str, Any] = {}  # what the generated __init__ refers to, by name
    positional: list[str] = []
    keywords: list[str] = []
    body: list[str] = []
    for f in fields:
        setter, default = f"__mx_set_{f.name}", ""
        closure[setter] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            closure[f"__mx_default_{f.name}"] = f.default
            value, default = f"__mx_default_{f.name}", f"=__mx_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            closure[f"__mx_factory_{f.name}"] = f.default_factory
            value = f"__mx_factory_{f.name}()"
            if f.init:  # the dataclass's own marker for "not given", so help() reads the same
                closure[f"__mx_unset_{f.name}"] = given[f.name].default
                default = f"=__mx_unset_{f.name}"
        else:
            value = default = ""
        if f.init:
            (keywords if f.kw_only else positional).append(f.name + default)
            if f.default_factory is not dataclasses.MISSING:
                value = f"{value} if {f.name} is __mx_unset_{f.name} else {f.name}"
            else:
                value = f.name
        if value:  # a field with init=False and no default is left to __post_init__
            body.append(f"        {setter}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("        self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keywords] if keywords else [])])
    # As dataclasses does: made by a factory run in the class's module, so that the function's
    # globals are the module's (typing.get_type_hints resolves its annotations) and what it
    # refers to are closure cells.
    source = (
        f"def __mx_make({', '.join(closure)}):\n"
        f"    def __init__({signature}):\n" + ("\n".join(body) or "        pass") + "\n"
        "    return __init__\n"
    )
    module = sys.modules.get(cls.__module__)
    scope: dict[str, Any] = {}
    exec(source, module.__dict__ if module is not None else {}, scope)
    init = scope["__mx_make"](**closure)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = original.__doc__
    init.__annotations__ = dict(original.__annotations__)
    if _shape(init) != _shape(original):  # pragma: no cover - a guard against drift
        raise TypeError(f"{cls.__name__}: fast __init__ does not match the dataclass's")
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def _shape(function: Any) -> list[tuple[str, Any, bool]]:
    """Each parameter's name, kind and whether it has a default."""
    parameters = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in parameters]
