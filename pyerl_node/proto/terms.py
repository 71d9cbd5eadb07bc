"""Python types for the Erlang terms that have no natural Python counterpart.

The mapping (DESIGN.md, "Term mapping") is fixed and lossless:

* integers, floats, tuples, lists and maps are ``int``, ``float``, ``tuple``, ``list``, ``dict``;
* binaries are ``bytes`` (a ``str`` encodes as a UTF-8 binary, as Elixir strings are);
* atoms are :class:`Atom`, except ``true``/``false`` (``bool``) and ``nil`` (``None``);
* everything else has a class here. All of them are immutable and hashable (as far as
  their contents are) and never compare equal to a plain tuple or string.

Map keys that Python cannot hash (lists, maps) decode as :class:`FrozenList` and
:class:`FrozenMap`; keys that are distinct in Erlang but equal in Python (``1``, ``1.0``
and ``true``) decode as :class:`ExactKey`. Each encodes back to the original term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeAlias

# Any decoded or encodable term. Kept loose on purpose: a precise recursive alias
# buys nothing at the codec boundary and costs every caller a cast.
Term: TypeAlias = Any


class Atom:
    """An Erlang atom. Interned: ``Atom("ok") is Atom("ok")``; never equal to a ``str``.

    Identity equality and hashing keep atom comparisons as cheap as they are in the BEAM.
    """

    __slots__ = ("name",)
    name: str
    _table: ClassVar[dict[str, Atom]] = {}

    def __new__(cls, name: str) -> Atom:
        atom = cls._table.get(name)
        if atom is None:
            if type(name) is not str:
                raise TypeError(f"atom name must be str, got {type(name).__name__}")
            atom = object.__new__(cls)
            object.__setattr__(atom, "name", name)
            atom = cls._table.setdefault(name, atom)
        return atom

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Atom is immutable")

    def __reduce__(self) -> tuple[type[Atom], tuple[str]]:
        return (Atom, (self.name,))

    def __copy__(self) -> Atom:
        return self

    def __deepcopy__(self, memo: object) -> Atom:
        return self

    def __repr__(self) -> str:
        return f"Atom({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __lt__(self, other: Atom) -> bool:
        if not isinstance(other, Atom):
            return NotImplemented
        return self.name < other.name


@dataclass(frozen=True, slots=True)
class Pid:
    """A process identifier: ``node``, ``id`` and ``serial`` (32 bits each), ``creation``."""

    node: Atom
    id: int
    serial: int
    creation: int

    def __repr__(self) -> str:
        return f"Pid<{self.node.name}.{self.id}.{self.serial}.{self.creation}>"


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference (also a process alias): ``ids`` holds 1..5 32-bit words in wire order."""

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __repr__(self) -> str:
        words = ".".join(str(i) for i in self.ids)
        return f"Ref<{self.node.name}.{self.creation}.{words}>"


@dataclass(frozen=True, slots=True)
class Port:
    """A port identifier (``id`` up to 64 bits with V4_NC)."""

    node: Atom
    id: int
    creation: int

    def __repr__(self) -> str:
        return f"Port<{self.node.name}.{self.id}.{self.creation}>"


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose length is not a whole number of bytes.

    ``bits`` (1..8) says how many high bits of the last byte of ``data`` belong to it; the
    unused low bits are zero.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not self.data or not 1 <= self.bits <= 8:
            raise ValueError("BitBinary needs data and 1 <= bits <= 8")
        if self.data[-1] & ((1 << (8 - self.bits)) - 1):
            raise ValueError("unused bits of the last byte must be zero")


@dataclass(frozen=True, slots=True)
class ImproperList:
    """A list whose tail is not ``[]``: ``[1, 2 | tail]`` is ``ImproperList((1, 2), tail)``."""

    items: tuple[Term, ...]
    tail: Term

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("an improper list has at least one element")
        if isinstance(self.tail, list):
            raise ValueError("the tail of an improper list cannot be a proper list")


@dataclass(frozen=True, slots=True)
class Export:
    """An external fun, ``fun Module:Function/Arity``."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class Fun:
    """A local fun (closure), carried opaquely so that it can be sent back unchanged."""

    arity: int
    uniq: bytes  # 16 bytes: MD5 of the module's significant parts
    index: int
    module: Atom
    old_index: int
    old_uniq: int
    pid: Pid
    free_vars: tuple[Term, ...]


class FrozenList:
    """A list used as a map key: hashable, equal only to another ``FrozenList``."""

    __slots__ = ("items",)
    items: tuple[Term, ...]

    def __init__(self, items: Iterable[Term]) -> None:
        object.__setattr__(self, "items", tuple(items))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("FrozenList is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenList and self.items == other.items

    def __hash__(self) -> int:
        return hash((FrozenList, self.items))

    def __iter__(self) -> Iterator[Term]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"FrozenList({list(self.items)!r})"


class FrozenMap(Mapping[Term, Term]):
    """A map used as a map key: hashable, equal only to another ``FrozenMap``."""

    __slots__ = ("_hash", "_items")
    _items: dict[Term, Term]
    _hash: int

    def __init__(self, items: Mapping[Term, Term] | Iterable[tuple[Term, Term]]) -> None:
        data = dict(items)
        object.__setattr__(self, "_items", data)
        object.__setattr__(self, "_hash", hash((FrozenMap, frozenset(data.items()))))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __getitem__(self, key: Term) -> Term:
        return self._items[key]

    def __iter__(self) -> Iterator[Term]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenMap and self._items == other._items

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


class ExactKey:
    """A map key that Python would confuse with another key of the same map.

    Erlang keeps ``1``, ``1.0`` and ``true`` apart; Python's ``dict`` does not. Such keys are
    wrapped so that no entry is lost. An ``ExactKey`` equals a value only when Erlang's ``=:=``
    would: same types all the way down (so ``{1}`` is not ``{1.0}``) and ``0.0`` is not
    ``-0.0`` (OTP 27+). ``d[1]`` still finds ``ExactKey(1)``.
    """

    __slots__ = ("value",)
    value: Term

    def __init__(self, value: Term) -> None:
        object.__setattr__(self, "value", value)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("ExactKey is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is ExactKey:
            other = other.value
        return _exactly_equal(self.value, other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"ExactKey({self.value!r})"


def _exactly_equal(a: Term, b: Term) -> bool:
    """``a == b`` where Erlang's ``=:=`` also holds (types and the sign of zero match)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) in (tuple, list, FrozenList):
        return len(a) == len(b) and all(map(_exactly_equal, a, b))
    if type(a) in (dict, FrozenMap):
        if len(a) != len(b):
            return False
        for key, value in a.items():
            # b[key] may have been found under a key that is only Python-equal to ours.
            twin = next((k for k in b if _exactly_equal(k, key)), _ABSENT)
            if twin is _ABSENT or not _exactly_equal(value, b[twin]):
                return False
        return True
    if type(a) is ImproperList:
        return _exactly_equal(a.items, b.items) and _exactly_equal(a.tail, b.tail)
    if type(a) is ExactKey:
        return _exactly_equal(a.value, b.value)
    if type(a) is Fun:
        return a == b and _exactly_equal(a.free_vars, b.free_vars)
    return bool(a == b)


_ABSENT: Any = object()


def freeze(term: Term) -> Term:
    """Return ``term`` in a hashable form that encodes to the same Erlang term."""
    if isinstance(term, list):
        return FrozenList(freeze(item) for item in term)
    if isinstance(term, dict):
        return FrozenMap((freeze(k), freeze(v)) for k, v in term.items())
    if type(term) is tuple:
        return tuple(freeze(item) for item in term)
    if isinstance(term, ImproperList):
        return ImproperList(tuple(freeze(i) for i in term.items), freeze(term.tail))
    if isinstance(term, Fun):
        return replace(term, free_vars=tuple(freeze(v) for v in term.free_vars))
    return term
