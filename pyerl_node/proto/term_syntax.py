"""Erlang term syntax for the command line: ``parse("[1, {ok, <<\\"x\\">>}]")`` and ``format``.

Parses literal terms as ``erl`` reads them: integers (``16#ff``, ``$a``), floats, atoms (bare
and ``'quoted'``), strings (charlists), binaries ``<<"text">>`` / ``<<1,2>>``, tuples, lists with
``|`` tails and maps ``#{K => V}``. ``true``/``false``/``nil`` follow the term mapping. Output
is Erlang-like (``~p`` without line breaks). A hand-written recursive-descent parser: the
command line has no need for more.
"""

from __future__ import annotations

import re

from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.terms import Atom, BitBinary, ImproperList, Pid, Port, Reference, Term

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<float>-?\d+\.\d+(?:[eE][+-]?\d+)?)
    | (?P<based>-?\d+\#[0-9a-zA-Z]+)
    | (?P<int>-?\d+)
    | (?P<char>\$(?:\\.|.))
    | (?P<atom>[a-z][A-Za-z0-9_@]*)
    | (?P<qatom>'(?:[^'\\]|\\.)*')
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<punct><<|>>|=>|\#\{|[{}\[\],|])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "0": "\0"}


class TermSyntaxError(LocalProtocolError, ValueError):
    """The text is not an Erlang term literal."""


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.S)


def _atom(name: str) -> Term:
    return {"true": True, "false": False, "nil": None}.get(name, Atom(name))


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip().removesuffix(".")
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                raise TermSyntaxError(f"unexpected text at {pos}: {text[pos:pos + 20]!r}")
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise TermSyntaxError(f"expected {value or 'a term'}, found {tok[1] or 'the end'}")
        self.i += 1
        return tok

    def sequence(self, close: str) -> list[Term]:
        items: list[Term] = []
        if self.peek()[1] == close:
            return items
        items.append(self.term())
        while self.peek()[1] == ",":
            self.take(",")
            items.append(self.term())
        return items

    def term(self) -> Term:
        kind, text = self.take()
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
        if kind == "based":
            base, digits = text.split("#")
            sign = -1 if base.startswith("-") else 1
            return sign * int(digits, int(base.lstrip("-")))
        if kind == "char":
            return ord(_unescape(text[1:]))
        if kind == "atom":
            return _atom(text)
        if kind == "qatom":
            return Atom(_unescape(text[1:-1]))
        if kind == "string":
            return [ord(ch) for ch in _unescape(text[1:-1])]
        if text == "{":
            items = self.sequence("}")
            self.take("}")
            return tuple(items)
        if text == "[":
            items = self.sequence("]")
            tail: Term = []
            if self.peek()[1] == "|" and items:
                self.take("|")
                tail = self.term()
            self.take("]")
            if isinstance(tail, list):
                return items + tail
            return ImproperList(tuple(items), tail)
        if text == "#{":
            result: dict[Term, Term] = {}
            while self.peek()[1] != "}":
                key = self.term()
                self.take("=>")
                result[key] = self.term()
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return result
        if text == "<<":
            return self.binary()
        raise TermSyntaxError(f"unexpected {text!r}")

    def binary(self) -> bytes:
        out = bytearray()
        while self.peek()[1] != ">>":
            kind, text = self.take()
            if kind == "string":
                out += _unescape(text[1:-1]).encode()
            elif kind in ("int", "char"):
                out.append((int(text) if kind == "int" else ord(_unescape(text[1:]))) & 0xFF)
            else:
                raise TermSyntaxError(f"unsupported binary segment {text!r}")
            if self.peek()[1] == ",":
                self.take(",")
        self.take(">>")
        return bytes(out)


def parse(text: str) -> Term:
    """One Erlang term literal (a trailing ``.`` is allowed)."""
    parser = _Parser(text)
    term = parser.term()
    if parser.peek()[0] != "end":
        raise TermSyntaxError(f"unexpected {parser.peek()[1]!r} after the term")
    return term


def _format_atom(name: str) -> str:
    if re.fullmatch(r"[a-z][A-Za-z0-9_@]*", name):
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_term(term: Term) -> str:
    """Erlang-like text for a term (``~p`` style, one line)."""
    if term is True or term is False:
        return "true" if term else "false"
    if term is None:
        return "nil"
    if isinstance(term, Atom):
        return _format_atom(term.name)
    if isinstance(term, int | float):
        return repr(term)
    if isinstance(term, bytes):
        try:
            text = term.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and text.isprintable():
            return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '">>'
        return "<<" + ",".join(str(b) for b in term) + ">>"
    if isinstance(term, str):
        return format_term(term.encode())
    if isinstance(term, tuple):
        return "{" + ",".join(format_term(t) for t in term) + "}"
    if isinstance(term, list):
        if term and all(isinstance(c, int) and 32 <= c < 0x110000 for c in term):
            text = "".join(chr(c) for c in term)
            if text.isprintable():
                return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return "[" + ",".join(format_term(t) for t in term) + "]"
    if isinstance(term, ImproperList):
        return "[" + ",".join(format_term(t) for t in term.items) + "|" + format_term(
            term.tail
        ) + "]"
    if isinstance(term, dict):
        return "#{" + ",".join(f"{format_term(k)} => {format_term(v)}" for k, v in
                               term.items()) + "}"
    if isinstance(term, Pid | Reference | Port | BitBinary):
        return repr(term)
    return repr(term)
