"""containerd's filter syntax, for ``List`` (containerd's ``filters`` package).

    filter    := selector ("," selector)*          every selector must match
    selector  := fieldpath [operator value]        no operator: the field is present
    fieldpath := field ("." field)*                field: [A-Za-z0-9_]+ or "quoted"
    operator  := "==" | "!=" | "~="                ~=: a regular expression, searched
    value     := quoted | a run without "," or spaces; ~= also takes /re/ and |re|

Several filters match when any of them does; none matches everything. Quoted strings
take Go's escapes. A snapshot exposes ``kind`` (active, view, committed), ``name``,
``parent`` and ``labels.<key>`` (present only when the label is).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from eventstore.errors import InvalidArgument

#: a field path -> (value, present)
Fields = Callable[[tuple[str, ...]], tuple[str, bool]]

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_OPERATOR = re.compile(r"[=!~]+")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


class Selector(NamedTuple):
    path: tuple[str, ...]
    operator: str  # "" (present), "==", "!=", "~="
    value: str = ""
    pattern: re.Pattern | None = None

    def matches(self, fields: Fields) -> bool:
        value, present = fields(self.path)
        if self.operator == "":
            return present
        if self.operator == "==":
            return present and value == self.value
        if self.operator == "!=":
            return value != self.value
        return self.pattern is not None and self.pattern.search(value) is not None


class _Parser:
    """One filter string, read left to right."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"filter {self.text!r}: {why} at offset {self.pos}")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_spaces()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def selectors(self) -> list[Selector]:
        found = [self.selector()]
        while self.peek() == ",":
            self.pos += 1
            found.append(self.selector())
        if self.peek():
            raise self.fail(f"unexpected {self.peek()!r}")
        return found

    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        if self.peek() in ("", ","):
            return Selector(tuple(path), "")
        operator = _OPERATOR.match(self.text, self.pos)
        if operator is None or operator[0] not in ("==", "!=", "~="):
            raise self.fail('expected an operator ("==", "!=", "~=")')
        self.pos = operator.end()
        value = self.value(regex=operator[0] == "~=")
        if operator[0] != "~=":
            return Selector(tuple(path), operator[0], value)
        try:
            return Selector(tuple(path), "~=", value, re.compile(value))
        except re.error as exc:
            raise self.fail(f"bad regular expression {value!r}: {exc}") from None

    def field(self) -> str:
        if self.peek() == '"':
            return self.quoted('"')
        match = _FIELD.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a field name or a quoted string")
        self.pos = match.end()
        return match[0]

    def value(self, regex: bool) -> str:
        first = self.peek()
        if first == '"' or (regex and first in ("/", "|")):
            return self.quoted(first)
        if first in ("", ",", ".", "/", "|"):
            raise self.fail("expected a value")
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "," and not self.text[self.pos].isspace():
            self.pos += 1
        return self.text[start:self.pos]

    def quoted(self, quote: str) -> str:
        self.pos += 1  # the opening quote
        out = []
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail("quoted string not terminated")
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            out.append(self.escape(quote) if char == "\\" else char)

    def escape(self, quote: str) -> str:
        """The character a backslash sequence stands for (Go's escapes)."""
        code = self.text[self.pos:self.pos + 1]
        self.pos += 1
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if code == quote:
            return quote
        if code in _HEX_DIGITS:
            digits, base = self.text[self.pos:self.pos + _HEX_DIGITS[code]], 16
            wanted = _HEX_DIGITS[code]
        elif code and code in "01234567":
            digits, base, wanted = code + self.text[self.pos:self.pos + 2], 8, 3
        else:
            raise self.fail("illegal escape sequence")
        self.pos += wanted if base == 16 else 2
        try:
            if len(digits) != wanted:
                raise ValueError
            return chr(int(digits, base))
        except (ValueError, OverflowError):
            raise self.fail("illegal escape sequence") from None


def parse(text: str) -> list[Selector]:
    """The selectors of one filter (all must match); [] for "" (matches everything)."""
    if text == "":
        return []
    return _Parser(text).selectors()


def matcher(filters: list[str]) -> Callable[[Fields], bool]:
    """A predicate true for what any of ``filters`` matches (everything when none)."""
    parsed = [parse(f) for f in filters]
    if not parsed or any(not selectors for selectors in parsed):
        return lambda fields: True
    return lambda fields: any(all(s.matches(fields) for s in selectors) for selectors in parsed)
