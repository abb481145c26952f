"""Where each key and array element of a TOML document starts: ``tomllib`` gives values, not
positions, and every config error names its line.

Run only on text ``tomllib`` has accepted, so it can be lenient: it follows table headers
(``[a.b]``, ``[[a]]``, with each array of tables' index), dotted and quoted keys, inline
tables, arrays and the four kinds of strings, and skips everything else.
"""

from __future__ import annotations

import bisect
import re

__all__ = ["KeyPath", "dotted", "key_lines"]

#: A key's place in the document: table and key names, and indices into arrays.
KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "uU":
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.arrays: dict[KeyPath, int] = {}  # array of tables -> index of its last table

    def line(self) -> int:
        return bisect.bisect_left(self.newlines, self.pos) + 1

    def peek(self, count: int = 1) -> str:
        return self.text[self.pos : self.pos + count]

    def blank(self, *, newlines: bool = False) -> None:
        """Skip spaces and tabs; with ``newlines`` also line ends and comments."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif newlines and char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def record(self, path: KeyPath) -> None:
        self.lines.setdefault(path, self.line())

    def key(self) -> list[str]:
        parts = [self.simple_key()]
        self.blank()
        while self.peek() == ".":
            self.pos += 1
            self.blank()
            parts.append(self.simple_key())
            self.blank()
        return parts

    def simple_key(self) -> str:
        char = self.peek()
        if char == '"':
            return _unescape(self.string('"', escapes=True))
        if char == "'":
            return self.string("'", escapes=False)
        match = _BARE.match(self.text, self.pos)
        if match is None:  # not TOML: tomllib refused it first
            raise ValueError(f"no key at offset {self.pos}")
        self.pos = match.end()
        return match.group()

    def string(self, quote: str, *, escapes: bool) -> str:
        """A one-line string starting here; its raw content."""
        self.pos += 1
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] != quote:
            self.pos += 2 if escapes and text[self.pos] == "\\" else 1
        self.pos += 1
        return text[start : self.pos - 1]

    def multiline(self, quote: str) -> None:
        self.pos += 3
        text = self.text
        while self.pos < len(text):
            if quote == '"' and text[self.pos] == "\\":
                self.pos += 2
            elif text.startswith(quote * 3, self.pos):
                self.pos += 3
                while self.peek() == quote:  # up to two quotes of content before the end
                    self.pos += 1
                return
            else:
                self.pos += 1

    def value(self, path: KeyPath) -> None:
        char = self.peek()
        if char in "\"'":
            if self.peek(3) == char * 3:
                self.multiline(char)
            else:
                self.string(char, escapes=char == '"')
        elif char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        else:
            text = self.text
            while self.pos < len(text) and text[self.pos] not in ",]}\r\n#":
                self.pos += 1

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self.blank(newlines=True)
            if self.peek() in ("]", ""):
                self.pos += 1
                return
            self.record((*path, index))
            self.value((*path, index))
            index += 1
            self.blank(newlines=True)
            if self.peek() == ",":
                self.pos += 1

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self.blank()
            if self.peek() in ("}", ""):
                self.pos += 1
                return
            inner = (*path, *self.key())
            self.blank()
            self.pos += 1  # "="
            self.blank()
            self.record(inner)
            self.value(inner)
            self.blank()
            if self.peek() == ",":
                self.pos += 1

    def header(self) -> KeyPath:
        """A ``[table]`` or ``[[array]]`` header; the path of the table it opens."""
        double = self.peek(2) == "[["
        self.pos += 2 if double else 1
        self.blank()
        names = self.key()
        self.pos += 2 if double else 1
        path: KeyPath = ()
        for number, name in enumerate(names):
            path = (*path, name)
            last = number == len(names) - 1
            if double and last:
                self.arrays[path] = self.arrays.get(path, -1) + 1
                self.record(path)
            if path in self.arrays:
                path = (*path, self.arrays[path])
        self.record(path)
        return path

    def document(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self.blank(newlines=True)
            if self.pos >= len(self.text):
                return self.lines
            if self.peek() == "[":
                table = self.header()
                continue
            path = (*table, *self.key())
            self.blank()
            self.pos += 1  # "="
            self.blank()
            self.record(path)
            self.value(path)


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (from 1) where each key, table and array element of ``text`` starts. The
    text must be TOML that :func:`tomllib.loads` accepts."""
    return _Scanner(text).document()


def dotted(path: KeyPath) -> str:
    """A key's path as it would be written: ``routes."example.com".tls``, ``submit.allow[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE.fullmatch(part) else _quoted(part)
            out += f".{name}" if out else name
    return out


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
