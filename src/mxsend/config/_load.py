"""Finding and reading the config file: every key is checked, and every problem is reported
with its file and line, not just the first.

Checked: unknown keys at every level (with a suggestion), types, durations, addresses and
domains, route targets, TLS policy and mechanism names, rates, and that every file named
(``cafile``, ``password_file``, DKIM ``key_file``) can be read and every ``password_command``
found. Relative paths are taken from the config file's folder; ``~`` is the home folder.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mxsend.config._lines import key_lines

if TYPE_CHECKING:
    from mxsend.config._schema import Config

__all__ = [
    "SYSTEM_CONFIG",
    "ConfigError",
    "Problem",
    "default_config_path",
    "find_config",
    "load_config",
]

#: The config file of root (of a system-wide daemon).
SYSTEM_CONFIG = Path("/etc/mxsend/mxsend.toml")
#: A config file is a few KiB; anything past this is a mistake.
MAX_CONFIG_BYTES = 1024 * 1024
#: Arrays and inline tables nest a few levels; past this is a mistake (or an attack).
MAX_DEPTH = 32


class Problem(NamedTuple):
    """One thing wrong with a config file: where, and what was expected."""

    file: str
    line: int | None  #: None: the file as a whole (unreadable, unsafe)
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; :attr:`problems` lists every reason, in line order.
    ``str()`` is one ``FILE:LINE: message`` line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(map(str, self.problems)))


def default_config_path(
    environ: Mapping[str, str] | None = None, *, euid: int | None = None
) -> Path:
    """``/etc/mxsend/mxsend.toml`` for root, else ``$XDG_CONFIG_HOME/mxsend/mxsend.toml``
    (``~/.config`` when unset or relative, as the XDG spec says)."""
    env = os.environ if environ is None else environ
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_CONFIG
    base = env.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base, "mxsend", "mxsend.toml")


def find_config(
    environ: Mapping[str, str] | None = None,
    *,
    explicit: str | None = None,
    euid: int | None = None,
) -> Path | None:
    """The file to read: ``explicit`` (``--config``), else ``$MXSEND_CONFIG``, else the
    default (:func:`default_config_path`) when it exists. None: no file, the built-in
    defaults. A file named explicitly or by the variable must then be readable."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("MXSEND_CONFIG"):
        return Path(env["MXSEND_CONFIG"])
    default = default_config_path(env, euid=euid)
    return default if os.path.lexists(default) else None


def load_config(path: str | os.PathLike[str] | None, *, euid: int | None = None) -> Config:
    """The settings in ``path`` (None: an empty config). Raises :class:`ConfigError` with
    every problem found: unreadable, unsafe (writable by others), not UTF-8, not TOML, or
    any key that is unknown or has a bad value."""
    # The checks need the pure rooms' validators (protocol, routing, queue): imported only
    # when a file is read, so that importing mxsend.config stays cheap.
    from mxsend.config._schema import Config  # noqa: PLC0415
    from mxsend.config._sections import ConfigChecker  # noqa: PLC0415

    if path is None:
        return Config()
    name = os.fspath(path)
    raw = _read(name, os.geteuid() if euid is None else euid)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(name, line, "not UTF-8 text")]) from None
    deep = _too_deep(text)
    if deep is not None:  # tomllib and the line finder recurse per level: RecursionError
        raise ConfigError([Problem(name, deep, f"nested more than {MAX_DEPTH} levels deep")])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(name, str(exc))]) from None
    except RecursionError:  # _too_deep is a heuristic: never a crash
        raise ConfigError([Problem(name, None, "nested too deeply")]) from None
    checker = ConfigChecker(name, key_lines(text), Path(name).parent)
    config = checker.config(data)
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: p.line or 0))
    return config


def _read(name: str, euid: int) -> bytes:
    def fail(why: str) -> ConfigError:
        return ConfigError([Problem(name, None, why)])

    try:
        # Non-blocking: a FIFO named as the config must not hang the command.
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise fail("not a regular file")
        # It names commands to run (password_command): only its owner may change it.
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in (0, euid):
            raise fail(f"owned by uid {info.st_uid}, neither root nor the user running mxsend")
        if mode & stat.S_IWOTH or (euid == 0 and mode & stat.S_IWGRP and info.st_gid != 0):
            raise fail(f"writable by other users (mode {mode:04o}): chmod go-w it")
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise fail(f"larger than {MAX_CONFIG_BYTES} bytes")
    return raw


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
# What the depth scan steps over: strings (all four kinds) and comments, then brackets.
_DEPTH_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]',
    re.DOTALL,
)


def _too_deep(text: str) -> int | None:
    """The line where arrays and inline tables first nest past :data:`MAX_DEPTH`, or None.
    Table headers (``[[a]]``) close on their line, so they count for little."""
    depth = 0
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


def _syntax_problem(name: str, message: str) -> Problem:
    """tomllib's "Invalid value (at line 3, column 7)" as ``FILE:3: ...``."""
    found = _AT.search(message)
    if found is None:
        return Problem(name, None, f"not valid TOML: {message.replace('(at ', '(')}")
    text = message[: found.start()]
    return Problem(name, int(found.group(1)), f"not valid TOML: {text} (column {found.group(2)})")
