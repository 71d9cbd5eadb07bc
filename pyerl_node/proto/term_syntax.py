"""Erlang term syntax for the command line: ``parse("[1, {ok, <<\\"x\\">>}]")`` and ``format``.

Parses literal terms as ``erl`` reads them: integers (``16#ff``, ``$a``), floats, atoms (bare
and ``'quoted'``), strings (charlists), binaries ``<<"text">>`` / ``<<1,2>>``, tuples, lists with
``|`` tails, maps ``#{K => V}`` and external funs ``fun M:F/A`` (``Export``). ``true``/``false``/
``nil`` follow the term mapping. ``%`` comments are skipped. Output is Erlang-like (``~p``
without line breaks). A hand-written recursive-descent parser: the command line has no need for
more.

``parse_form`` reads one term ended by a dot, as a configuration file holds it (the TLS
distribution option file, docs/protocol/tls.md), and keeps where each term starts: errors there
must point at a line and column. ``TermSyntaxError.offset`` is the text offset of the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    Export,
    ImproperList,
    Pid,
    Port,
    Reference,
    Term,
)

_BLANK = re.compile(r"(?:\s|%[^\n]*)*")
_TOKEN = re.compile(
    r"""
    (?:
      (?P<float>-?\d+\.\d+(?:[eE][+-]?\d+)?)
    | (?P<based>-?\d+\#[0-9a-zA-Z]+)
    | (?P<int>-?\d+)
    | (?P<char>\$(?:\\.|.))
    | (?P<atom>[a-z][A-Za-z0-9_@]*)
    | (?P<qatom>'(?:[^'\\]|\\.)*')
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<dot>\.(?=\s|%|$))
    | (?P<punct><<|>>|=>|\#\{|[{}\[\],|:/])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "s": " ", "e": "\x1b", "0": "\0"}


class TermSyntaxError(LocalProtocolError, ValueError):
    """The text is not an Erlang term literal: ``problem`` at text offset ``offset``."""

    def __init__(self, problem: str, *, offset: int) -> None:
        super().__init__(f"{problem} (at offset {offset})")
        self.problem = problem
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Located:
    """A parsed term and the text offset where it starts.

    ``items`` locates the elements of a tuple or proper list (empty for other terms).
    """

    term: Term
    offset: int
    items: tuple[Located, ...] = ()


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.S)


def _skip_blanks(text: str, pos: int) -> int:
    """Where the next token starts: after white space and ``%`` comments."""
    m = _BLANK.match(text, pos)
    return pos if m is None else m.end()


def _atom(name: str) -> Term:
    return {"true": True, "false": False, "nil": None}.get(name, Atom(name))


class _Parser:
    def __init__(self, text: str) -> None:
        # (kind, text, offset) per token; the offset is where the token itself starts
        self.tokens: list[tuple[str, str, int]] = []
        self.end = len(text)
        pos = _skip_blanks(text, 0)
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.lastgroup is None:
                raise TermSyntaxError(f"unexpected text {text[pos:pos + 20]!r}", offset=pos)
            self.tokens.append((m.lastgroup, m.group(), pos))
            pos = _skip_blanks(text, m.end())
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", self.end)

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] in ("end", "dot") or (value is not None and tok[1] != value):
            raise TermSyntaxError(
                f"expected {value or 'a term'}, found {tok[1] or 'the end'}", offset=tok[2]
            )
        self.i += 1
        return tok

    def sequence(self, close: str) -> list[Located]:
        items: list[Located] = []
        if self.peek()[1] == close:
            return items
        items.append(self.located())
        while self.peek()[1] == ",":
            self.take(",")
            items.append(self.located())
        return items

    def located(self) -> Located:
        kind, text, offset = self.take()
        if text == "{":
            items = self.sequence("}")
            self.take("}")
            return Located(tuple(item.term for item in items), offset, tuple(items))
        if text == "[":
            items = self.sequence("]")
            tail = Located([], offset)
            if self.peek()[1] == "|" and items:
                self.take("|")
                tail = self.located()
            self.take("]")
            if isinstance(tail.term, list):
                items += tail.items
                return Located([item.term for item in items], offset, tuple(items))
            return Located(ImproperList(tuple(item.term for item in items), tail.term), offset)
        return Located(self.scalar(kind, text, offset), offset)

    def scalar(self, kind: str, text: str, offset: int) -> Term:
        if kind == "float":
            return float(text)
        if kind == "int":
            return int(text)
        if kind == "based":
            base, digits = text.split("#")
            sign = -1 if base.startswith("-") else 1
            try:
                return sign * int(digits, int(base.lstrip("-")))
            except ValueError:  # a base outside 2..36, or digits the base lacks
                raise TermSyntaxError(f"bad based integer {text}", offset=offset) from None
        if kind == "char":
            return ord(_unescape(text[1:]))
        if kind == "atom" and text == "fun":
            return self.export()
        if kind == "atom":
            return _atom(text)
        if kind == "qatom":
            return Atom(_unescape(text[1:-1]))
        if kind == "string":
            return [ord(ch) for ch in _unescape(text[1:-1])]
        if text == "#{":
            result: dict[Term, Term] = {}
            while self.peek()[1] != "}":
                key = self.located().term
                self.take("=>")
                result[key] = self.located().term
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return result
        if text == "<<":
            return self.binary()
        raise TermSyntaxError(f"unexpected {text!r}", offset=offset)

    def export(self) -> Export:
        # ``fun M:F/A`` with literal parts: the one fun a term literal can hold
        module = self.atom_name()
        self.take(":")
        function = self.atom_name()
        self.take("/")
        kind, text, offset = self.take()
        if kind != "int":
            raise TermSyntaxError(f"expected an arity, found {text}", offset=offset)
        return Export(module, function, int(text))

    def atom_name(self) -> Atom:
        kind, text, offset = self.take()
        if kind == "qatom":
            return Atom(_unescape(text[1:-1]))
        if kind != "atom":
            raise TermSyntaxError(f"expected an atom, found {text}", offset=offset)
        return Atom(text)

    def binary(self) -> bytes:
        out = bytearray()
        while self.peek()[1] != ">>":
            kind, text, offset = self.take()
            if kind == "string":
                out += _unescape(text[1:-1]).encode()
            elif kind in ("int", "char"):
                out.append((int(text) if kind == "int" else ord(_unescape(text[1:]))) & 0xFF)
            else:
                raise TermSyntaxError(f"unsupported binary segment {text!r}", offset=offset)
            if self.peek()[1] == ",":
                self.take(",")
        self.take(">>")
        return bytes(out)

    def finish(self, *, dot: bool) -> None:
        kind, text, offset = self.peek()
        if kind == "dot":
            self.i += 1
            kind, text, offset = self.peek()
        elif dot:
            raise TermSyntaxError(
                f"expected a dot after the term, found {text or 'the end'}", offset=offset
            )
        if kind != "end":
            raise TermSyntaxError(f"unexpected {text!r} after the term", offset=offset)


def parse(text: str) -> Term:
    """One Erlang term literal (a trailing ``.`` is allowed)."""
    parser = _Parser(text)
    term = parser.located().term
    parser.finish(dot=False)
    return term


def parse_form(text: str) -> Located:
    """One term literal that a dot ends, with the offsets where its parts start."""
    parser = _Parser(text)
    located = parser.located()
    parser.finish(dot=True)
    return located


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
    if isinstance(term, Export):
        return f"fun {format_term(term.module)}:{format_term(term.function)}/{term.arity}"
    if isinstance(term, Pid | Reference | Port | BitBinary):
        return repr(term)
    return repr(term)
