"""The node table of the EPMD server: registrations, creations, remembered names.

Pure bookkeeping, no I/O: the server (``epmd.server``) calls it with already decoded requests
(``pyerl_node.proto.epmd_wire``) and an integer connection id. It follows epmd_srv.c
(docs/protocol/distribution.md section 2):

* ``names()`` and ``active()`` list the most recent registration first.
* A refused registration (name taken, more than 255 characters, empty, extra data over
  ``MAX_SYM_BYTES``) returns ``None``.
* Creation: a name seen for the first time starts from the current Unix time plus one; a name
  that registers again after being unregistered gets the previous value plus one. Values
  below 4 are skipped (0..3 mean "old node" to the BEAM). A node that announces highest
  version 5 gets the small creation ``counter % 3 + 1`` it expects (ALIVE2_RESP).
* Unregistered names are remembered (FIFO, at most ``MAX_UNREG_COUNT``) so that a
  re-registration gets a new creation; DUMP lists them as ``old/unused``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pyerl_node.proto.epmd_wire import (
    MAX_NAME_CHARS,
    MAX_SYM_BYTES,
    Alive2Req,
    DumpEntry,
    NodeAddress,
)

MAX_UNREG_COUNT = 1000
_MIN_CREATION = 4
_U32 = 0xFFFFFFFF


@dataclass
class Registration:
    """One registered node; ``conn`` is the server's id of the registering connection."""

    request: Alive2Req
    conn: int
    fd: int
    counter: int

    @property
    def creation(self) -> int:
        if self.request.highest_version >= 6:
            return self.counter
        return self.counter % 3 + 1

    @property
    def address(self) -> NodeAddress:
        r = self.request
        return NodeAddress(r.port, r.node_type, r.protocol, r.highest_version,
                           r.lowest_version, r.name, r.extra)


def _next_counter(counter: int) -> int:
    counter = (counter + 1) & _U32
    return max(counter, _MIN_CREATION)


class Registry:
    """Registered and remembered nodes. ``clock`` returns Unix time in seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Insertion order = registration order; listings reverse it (newest first).
        self._active: dict[str, Registration] = {}
        self._by_conn: dict[int, str] = {}
        # name -> last Registration, oldest unregistration first.
        self._unused: OrderedDict[str, Registration] = OrderedDict()

    def register(self, req: Alive2Req, conn: int, fd: int = -1) -> Registration | None:
        """Register ``req`` for connection ``conn``; ``None`` if epmd would refuse it."""
        name = req.name
        if (
            not name
            or len(name) > MAX_NAME_CHARS
            or len(req.extra) > MAX_SYM_BYTES
            or name in self._active
        ):
            return None
        old = self._unused.pop(name, None)
        if old is not None:
            counter = _next_counter(old.counter)
        else:
            counter = _next_counter(int(self._clock()))
            if len(self._unused) >= MAX_UNREG_COUNT:
                self._unused.popitem(last=False)  # forget the oldest remembered name
        reg = Registration(req, conn, fd, counter)
        self._active[name] = reg
        self._by_conn[conn] = name
        return reg

    def unregister_conn(self, conn: int) -> Registration | None:
        """Drop the registration made on ``conn`` (its socket closed), if any."""
        name = self._by_conn.get(conn)
        return None if name is None else self.unregister(name)

    def unregister(self, name: str) -> Registration | None:
        """Drop the registration of ``name`` (STOP_REQ), if any, and remember the name."""
        reg = self._active.pop(name, None)
        if reg is None:
            return None
        del self._by_conn[reg.conn]
        self._unused[name] = reg
        return reg

    def lookup(self, name: str) -> Registration | None:
        return self._active.get(name)

    def names(self) -> list[tuple[str, int]]:
        return [(r.request.name, r.request.port) for r in self.active()]

    def active(self) -> list[Registration]:
        return list(reversed(self._active.values()))

    def dump(self) -> tuple[list[DumpEntry], list[DumpEntry]]:
        active = [DumpEntry(r.request.name, r.request.port, r.fd) for r in self.active()]
        unused = [DumpEntry(r.request.name, r.request.port, r.fd) for r in self._unused.values()]
        return active, unused

    def __len__(self) -> int:
        return len(self._active)
