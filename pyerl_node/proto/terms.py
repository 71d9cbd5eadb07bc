"""Python types for the Erlang terms that have no natural Python counterpart.

The mapping (docs/design.md, "Term mapping") is fixed and lossless:

* integers, floats, tuples, lists and maps are ``int``, ``float``, ``tuple``, ``list``, ``dict``;
* binaries are ``bytes`` (a ``str`` encodes as a UTF-8 binary, as Elixir strings are);
* atoms are :class:`Atom`, except ``true``/``false`` (``bool``) and ``nil`` (``None``);
* everything else has a class here. All of them are immutable and hashable (as far as
  their contents are) and never compare equal to a plain tuple or string.

Map keys that Python cannot hash (lists, maps) decode as :class:`FrozenList` and
:class:`FrozenMap`; keys that are distinct in Erlang but equal in Python (``1``, ``1.0``
and ``true``) decode as :class:`ExactKey`. Each encodes back to the original term.

Atoms are interned *weakly*, so that a peer sending endless fresh atoms costs memory only while
they are in use: the intern table maps each name to a weak reference to its atom, and an atom
that nothing holds any more is freed and leaves the table (a callback removes its entry). While
an atom is alive, the same name gives the same object, so atoms compare by identity. The table
holds at most :func:`atom_limit` live atoms (the BEAM's atom table size by default); a new one
beyond that raises :class:`~pyerl_node.proto.errors.AtomTableFull`. Every step of interning is
a single dict operation, so it is safe from several threads.
"""

from __future__ import annotations

import math

# _remove_dead_weakref: the C helper WeakValueDictionary uses. It deletes d[key] only if that
# is a dead weak reference, in one step (a check-then-delete in Python could delete a live
# atom that another thread just put there). Not in typeshed's stub of the module.
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeAlias
from weakref import KeyedRef

from pyerl_node.proto.errors import AtomTableFull
from pyerl_node.proto.limits import MAX_ATOMS

# Any decoded or encodable term. Kept loose on purpose: a precise recursive alias
# buys nothing at the codec boundary and costs every caller a cast.
Term: TypeAlias = Any


class Atom:
    """An Erlang atom. Interned: ``Atom("ok") is Atom("ok")``; never equal to a ``str``.

    Identity equality and hashing keep atom comparisons as cheap as they are in the BEAM.
    Raises AtomTableFull for a new name when :func:`atom_limit` atoms are alive.
    """

    __slots__ = ("__weakref__", "name")
    name: str

    def __new__(cls, name: str) -> Atom:
        ref = _ATOMS.get(name)
        if ref is not None:
            atom = ref()
            if atom is not None:
                return atom
        return _intern(name)

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


# name -> weak reference to the live atom of that name (see the module docstring)
_ATOMS: dict[str, KeyedRef[str, Atom]] = {}
_limit = MAX_ATOMS


def _intern(name: str) -> Atom:
    """Make the atom ``name``, unless another thread just did (then return that one)."""
    if type(name) is not str:
        raise TypeError(f"atom name must be str, got {type(name).__name__}")
    atom = object.__new__(Atom)
    object.__setattr__(atom, "name", name)
    ref = KeyedRef(atom, _forget, name)
    while True:
        if len(_ATOMS) >= _limit:
            raise AtomTableFull(_limit)
        known = _ATOMS.setdefault(name, ref)
        if known is ref:
            return atom
        alive = known()
        if alive is not None:
            return alive
        # a freed atom whose callback has not run yet: clear its entry and try again
        _remove_dead_weakref(_ATOMS, name)


def _forget(ref: KeyedRef[str, Atom], table: dict[str, KeyedRef[str, Atom]] = _ATOMS) -> None:
    # (the table is bound as a default: module globals may be gone at interpreter exit)
    _remove_dead_weakref(table, ref.key)


def atom_count() -> int:
    """How many atoms are alive (in the intern table)."""
    return len(_ATOMS)


def atom_limit() -> int:
    """The most atoms that may be alive at once."""
    return _limit


def set_atom_limit(limit: int) -> int:
    """Set the most atoms that may be alive at once (the BEAM's ``+t``); return the old one.

    Atoms alive beyond a lowered limit stay; only new ones are refused.
    """
    global _limit
    if type(limit) is not int or limit < 1:
        raise ValueError(f"the atom limit must be a positive int, got {limit!r}")
    old, _limit = _limit, limit
    return old


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
        # Order-free, from the entries' hash values: a frozenset of the entries themselves
        # would compare entries whose hashes collide pairwise (a peer can craft those).
        object.__setattr__(self, "_hash", hash((FrozenMap, frozenset(map(hash, data.items())))))

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
        # Each key of a has at most one Python-equal key in b (keys that Python confuses are
        # ExactKeys, which compare exactly): find it through a dict, not by a scan of b.
        twins = {key: key for key in b}
        for key, value in a.items():
            twin = twins.get(key, _ABSENT)
            if twin is _ABSENT or not _exactly_equal(key, twin) or not _exactly_equal(
                    value, b[twin]):
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
