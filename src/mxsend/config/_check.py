"""The checks every config value goes through, collecting every problem with its line
instead of stopping at the first: each returns the checked value, or None when it is bad
(and then a problem was recorded)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mxsend.config._lines import KeyPath, dotted
from mxsend.config._load import Problem
from mxsend.protocol import Address, AddressError, validate_domain
from mxsend.queue._schedule import MAX_DURATION, parse_duration
from mxsend.routing import TLSPolicy

__all__ = ["Checker"]

_T = TypeVar("_T")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for kind, word in ((str, "a string"), (int, "an integer"), (float, "a float"),
                       (list, "an array"), (dict, "a table")):  # fmt: skip
        if isinstance(value, kind):
            return word
    return "a date or time"


def _shown(value: object) -> str:
    """A value as the error shows it: in TOML's spelling for scalars, its kind otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return _kind(value)


class Checker:
    """Checks a parsed document, collecting every problem; each method returns the checked
    value, or None when it is bad (and then a problem was recorded)."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int], base: Path) -> None:
        self.file = file
        self.lines = lines
        self.base = base
        self.problems: list[Problem] = []

    # -- reporting ------------------------------------------------------------------------

    def line(self, path: KeyPath) -> int | None:
        """The key's own line; else the first line inside it (a table made by its
        subtables' headers); else its nearest parent's."""
        if path in self.lines:
            return self.lines[path]
        inside = [n for p, n in self.lines.items() if p[: len(path)] == path]
        if inside:
            return min(inside)
        return self.line(path[:-1]) if path else None

    def error(self, path: KeyPath, message: str) -> None:
        where = dotted(path)
        self.problems.append(
            Problem(self.file, self.line(path), f"{where}: {message}" if where else message)
        )

    def expected(self, path: KeyPath, what: str, value: object) -> None:
        self.error(path, f"expected {what}, got {_shown(value)}")

    # -- shapes ---------------------------------------------------------------------------

    def table(self, path: KeyPath, value: object, known: Sequence[str]) -> dict[str, Any]:
        """The known keys of a table; each unknown one is a problem."""
        if not isinstance(value, dict):
            self.expected(path, "a table", value)
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in known:
                out[key] = item
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            self.error((*path, key), f"unknown key{hint}")
        return out

    def mapping(self, path: KeyPath, value: object) -> dict[str, Any]:
        """A table whose keys are names the user chooses (domains)."""
        if not isinstance(value, dict):
            self.expected(path, "a table", value)
            return {}
        return value

    def each(
        self, path: KeyPath, table: Mapping[str, Any], key: str, check: Callable[[KeyPath, Any], _T]
    ) -> _T | None:
        return check((*path, key), table[key]) if key in table else None

    # -- scalars --------------------------------------------------------------------------

    def text(self, path: KeyPath, value: object) -> str | None:
        if isinstance(value, str) and value and not any(c < " " or c == "\x7f" for c in value):
            return value
        self.expected(path, "a non-empty string without control characters", value)
        return None

    def boolean(self, path: KeyPath, value: object) -> bool | None:
        if isinstance(value, bool):
            return value
        self.expected(path, "true or false", value)
        return None

    def integer(self, path: KeyPath, value: object, low: int, high: int) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.expected(path, f"an integer from {low} to {high}", value)
        return None

    def one_of(self, choices: Sequence[str]) -> Callable[[KeyPath, Any], str | None]:
        return lambda path, value: self.choice(path, value, choices)

    def between(self, low: int, high: int) -> Callable[[KeyPath, Any], int | None]:
        return lambda path, value: self.integer(path, value, low, high)

    def choice(self, path: KeyPath, value: object, choices: Sequence[str]) -> str | None:
        if isinstance(value, str) and value.lower() in [c.lower() for c in choices]:
            return next(c for c in choices if c.lower() == value.lower())
        self.expected(path, f"one of {', '.join(repr(c) for c in choices)}", value)
        return None

    def policy(self, path: KeyPath, value: object) -> TLSPolicy | None:
        name = self.choice(path, value, [p.value for p in TLSPolicy])
        return None if name is None else TLSPolicy(name)

    def duration(self, path: KeyPath, value: object, *, most: float | None = None,
                 allow_zero: bool = False) -> float | None:  # fmt: skip
        """A duration: a string such as "30s", "5m", "1h30m", "5d", or a number of seconds."""
        highest = MAX_DURATION if most is None else most
        what = 'a duration such as "30s", "5m", "1h" or "5d"'
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value, allow_zero=allow_zero)
            except ValueError as exc:
                self.error(path, f"expected {what}: {exc}")
                return None
        else:
            self.expected(path, what, value)
            return None
        if not (math.isfinite(seconds) and (seconds > 0 or (allow_zero and seconds == 0))):
            self.expected(path, f"{what}, more than 0", value)
            return None
        if seconds > highest:
            self.expected(path, f"{what}, at most {highest:g} seconds", value)
            return None
        return seconds

    def domain(self, path: KeyPath, value: object) -> str | None:
        text = self.text(path, value)
        if text is None:
            return None
        try:
            return validate_domain(text).lower()
        except AddressError as exc:
            self.error(path, f"expected a domain name: {exc}")
            return None

    def address(self, path: KeyPath, value: object) -> str | None:
        text = self.text(path, value)
        if text is None:
            return None
        try:
            return str(Address.parse(text))
        except AddressError as exc:
            self.error(path, f"expected an address like user@example.com: {exc}")
            return None

    def location(self, path: KeyPath, value: object) -> str | None:
        """A path, absolute once the config file's folder and ``~`` are applied."""
        text = self.text(path, value)
        if text is None:
            return None
        return os.path.normpath(self.base.absolute() / os.path.expanduser(text))

    def readable(self, path: KeyPath, value: object) -> str | None:
        """A file that exists and can be read now."""
        where = self.location(path, value)
        if where is None:
            return None
        if not os.path.isfile(where):
            why = "no such file" if not os.path.lexists(where) else "not a regular file"
            self.error(path, f"cannot read {where}: {why}")
            return None
        if not os.access(where, os.R_OK):
            self.error(path, f"cannot read {where}: permission denied")
            return None
        return where

    def host_port(self, path: KeyPath, value: object, default_port: int,
                  what: str) -> tuple[str, int] | None:  # fmt: skip
        """``host``, ``host:port``, ``[host]:port`` or ``[v6]:port``; the host a domain
        name or an IP address."""
        if not isinstance(value, str):
            self.expected(path, what, value)
            return None
        host, port = _split_host_port(value, default_port)
        if host is not None and port is not None:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                name = self.domain(path, host)
                if name is None:
                    return None
                host = name
            return host, port
        self.expected(path, what, value)
        return None


def _split_host_port(text: str, default_port: int) -> tuple[str | None, int | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            return None, None
        port = rest[1:] if rest.startswith(":") else str(default_port) if not rest else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None, None
    return host, int(port)
