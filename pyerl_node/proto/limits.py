"""The bounds the sans-I/O core puts on what a peer may make it do (docs/design.md, "Limits").

Every number here caps the memory or the time that bytes from a peer can cost, so that a
hostile or broken peer is refused with a typed error instead of stalling or exhausting the
node. They are the BEAM's own limits where it has one:

* :data:`MAX_FRAME` -- one distribution packet, and what one compressed term may inflate to
  (a term cannot be bigger decompressed than a packet could carry it uncompressed);
* :data:`MAX_ATOMS` -- live atoms, the BEAM's default atom table size (``+t``);
* :data:`MAX_DEPTH` -- nesting of a decoded or encoded term (the decoder and encoder are
  iterative; the bound keeps CPython's own recursive ``hash``/``==``/``repr`` of a term
  clear of the C stack's limits);
* :data:`HASH_CHECKED_KEYS` and :data:`MAX_COLLISION_COST` -- hash flooding of maps (see
  :mod:`pyerl_node.proto.etf`, "Hostile input").
"""

from __future__ import annotations

from typing import Final

#: Bytes in one inbound packet; also the most a compressed term may inflate to.
MAX_FRAME: Final = 1 << 30
#: Atoms alive at once (1,048,576, as the BEAM's default atom table).
MAX_ATOMS: Final = 1 << 20
#: Containers nested in one another in a term.
MAX_DEPTH: Final = 20_000
#: Maps with at least this many keys have their key hashes checked before the dict is built;
#: a smaller map costs at most this many key comparisons per key, however its keys collide.
HASH_CHECKED_KEYS: Final = 32
#: Keys that share a hash cost the dict a comparison per pair of them: a map whose groups of
#: keys with equal hashes add up to more than this many (group size squared) per key is
#: refused. Erlang-distinct keys that Python hashes alike come in groups of at most 4
#: (``0``, ``0.0``, ``-0.0``, ``false``), i.e. 4 per key.
MAX_COLLISION_COST: Final = 4
