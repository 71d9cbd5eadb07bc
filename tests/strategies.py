"""Hypothesis strategies for every Erlang term type in its Python form (docs/design.md term
mapping).

``terms()`` draws terms that survive ``decode(encode(t)) == t``: the mapping is lossless except
where it is deliberately many-to-one, so it leaves out ``str`` (encodes as a binary and comes
back as ``bytes``) and the atoms ``true``/``false``/``nil`` (they come back as ``bool``/``None``;
``True``, ``False`` and ``None`` themselves are drawn). Other suites reuse the leaf strategies,
e.g. ``pids()`` or ``atoms()``.
"""

from __future__ import annotations

from hypothesis import strategies as st

from pyerl_node.proto.terms import (
    Atom,
    BitBinary,
    ExactKey,
    Export,
    FrozenList,
    Fun,
    ImproperList,
    Pid,
    Port,
    Reference,
    Term,
    freeze,
)

_RESERVED = frozenset({"true", "false", "nil"})
U32 = st.integers(min_value=0, max_value=2**32 - 1)


def atoms(max_size: int = 255) -> st.SearchStrategy[Atom]:
    """Atoms with any text (not surrogates: atom text is UTF-8), up to 255 characters."""
    text = st.text(
        st.characters(codec="utf-8"), max_size=max_size
    ) | st.sampled_from(["ok", "error", "a", "undefined", "$gen_call", "hello world"])
    return text.filter(lambda s: s not in _RESERVED).map(Atom)


def node_names() -> st.SearchStrategy[Atom]:
    """Plausible node names (``name@host``), as pids, ports and references carry."""
    part = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
    return st.builds(lambda n, h: Atom(f"{n}@{h}"), part, part)


def integers() -> st.SearchStrategy[int]:
    """Every integer encoding: small, 32-bit, SMALL_BIG and LARGE_BIG (> 255 bytes)."""
    # Big ones are built from a bit length (keeps hypothesis's reprs of the strategy short).
    bigs = st.builds(
        lambda bits, low, negative: (-1 if negative else 1) * ((1 << bits) + low),
        st.integers(min_value=31, max_value=2100),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.booleans(),
    )
    return st.one_of(
        st.integers(min_value=0, max_value=255),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.integers(min_value=-(2**64), max_value=2**64),
        bigs,
    )


def floats() -> st.SearchStrategy[float]:
    return st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def bit_binaries(draw: st.DrawFn) -> BitBinary:
    data = draw(st.binary(min_size=1, max_size=20))
    bits = draw(st.integers(min_value=1, max_value=7))
    mask = (0xFF << (8 - bits)) & 0xFF
    return BitBinary(data[:-1] + bytes((data[-1] & mask,)), bits)


def pids() -> st.SearchStrategy[Pid]:
    return st.builds(Pid, node_names(), U32, U32, U32)


def ports() -> st.SearchStrategy[Port]:
    return st.builds(Port, node_names(), st.integers(min_value=0, max_value=2**64 - 1), U32)


def references() -> st.SearchStrategy[Reference]:
    words = st.lists(U32, min_size=1, max_size=5).map(tuple)
    return st.builds(Reference, node_names(), U32, words)


def exports() -> st.SearchStrategy[Export]:
    return st.builds(Export, atoms(30), atoms(30), st.integers(min_value=0, max_value=255))


def funs(free: st.SearchStrategy[Term]) -> st.SearchStrategy[Fun]:
    return st.builds(
        Fun,
        st.integers(min_value=0, max_value=255),
        st.binary(min_size=16, max_size=16),
        U32,
        atoms(30),
        st.integers(min_value=0, max_value=2**32 - 1),
        st.integers(min_value=0, max_value=2**32 - 1),
        pids(),
        st.lists(free, max_size=3).map(tuple),
    )


def leaves() -> st.SearchStrategy[Term]:
    """Every non-container term."""
    return st.one_of(
        atoms(),
        st.sampled_from([True, False, None]),
        integers(),
        floats(),
        st.binary(max_size=40),
        bit_binaries(),
        pids(),
        ports(),
        references(),
        exports(),
    )


def hashable_keys() -> st.SearchStrategy[Term]:
    """Map keys Python can hash as they decode (no lists, maps, or 1/1.0/true collisions)."""
    scalar = st.one_of(atoms(20), st.integers(), st.binary(max_size=10), pids(), references())
    return st.one_of(scalar, st.tuples(scalar, scalar))


def _improper(children: st.SearchStrategy[Term]) -> st.SearchStrategy[ImproperList]:
    # The tail of an improper list is anything but a list (that would merge into it).
    tail = children.filter(lambda t: not isinstance(t, (list, ImproperList, FrozenList)))
    return st.builds(ImproperList, st.lists(children, min_size=1, max_size=4).map(tuple), tail)


def _unhashable_keys(children: st.SearchStrategy[Term]) -> st.SearchStrategy[Term]:
    """Keys in the hashable form that maps with list or map keys decode into."""
    return st.one_of(
        st.lists(children, max_size=3).map(freeze),
        st.dictionaries(hashable_keys(), children, max_size=3).map(freeze),
    )


def colliding_keys() -> st.SearchStrategy[dict[Term, Term]]:
    """Maps whose keys Erlang tells apart but Python would merge (1, 1.0, true, {1}, -0.0)."""
    confusable = [1, 1.0, True, 0, 0.0, -0.0, False, (1,), (1.0,), (True, 0.0), (True, -0.0)]
    group = st.lists(st.sampled_from(confusable), min_size=2, max_size=4, unique_by=repr)
    return group.map(lambda ks: {ExactKey(k): i for i, k in enumerate(ks)})


def _containers(children: st.SearchStrategy[Term]) -> st.SearchStrategy[Term]:
    return st.one_of(
        st.lists(children, max_size=5).map(tuple),
        st.lists(children, max_size=5),
        st.lists(st.integers(min_value=0, max_value=255), min_size=1, max_size=20),
        _improper(children),
        st.dictionaries(hashable_keys(), children, max_size=4),
        st.dictionaries(_unhashable_keys(children), children, min_size=1, max_size=3),
        colliding_keys(),
        funs(children),
    )


# Defined once, recursively, through st.deferred: its repr stays small (st.recursive's grows
# with every level it unrolls) and leaves are drawn 3 times as often as containers, which
# keeps the expected size of a term finite.
_TERMS: st.SearchStrategy[Term] = st.deferred(
    lambda: st.one_of(leaves(), leaves(), leaves(), _containers(_TERMS))
)


def terms() -> st.SearchStrategy[Term]:
    """Nested terms of every type, including improper lists and unhashable-key maps."""
    return _TERMS
