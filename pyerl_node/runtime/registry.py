"""Local process table: pids and registered names to processes, and minting of identifiers.

Pids, references and ports are minted with the node's name and creation, as the BEAM does;
their counters wrap within the widths the wire formats allow (V4_NC: 32-bit pid words).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from pyerl_node.proto.terms import Atom, Pid, Reference
from pyerl_node.runtime.process import Process

_WORD = 1 << 32
_PID_ID_LIMIT = 1 << 28  # leave room for the BEAM's own 28-bit pid index conventions


class Registry:
    """Processes of one node by pid and by registered name."""

    def __init__(self, node_name: Atom, creation: int) -> None:
        self.node_name = node_name
        self.creation = creation
        self._by_pid: dict[Pid, Process] = {}
        self._by_name: dict[Atom, Process] = {}
        self._pid_ids = itertools.count(1)
        self._ref_ids = itertools.count(1)

    def new_pid(self) -> Pid:
        n = next(self._pid_ids)
        return Pid(self.node_name, n % _PID_ID_LIMIT, n // _PID_ID_LIMIT % _WORD, self.creation)

    def new_ref(self) -> Reference:
        n = next(self._ref_ids)
        return Reference(
            self.node_name, self.creation, (n % _WORD, (n >> 32) % _WORD, (n >> 64) % _WORD)
        )

    def add(self, proc: Process) -> None:
        self._by_pid[proc.pid] = proc

    def remove(self, proc: Process) -> None:
        self._by_pid.pop(proc.pid, None)
        if proc.name is not None and self._by_name.get(proc.name) is proc:
            del self._by_name[proc.name]

    @property
    def pids(self) -> Mapping[Pid, Process]:
        """The live processes by pid (a live view, for lookups in bulk)."""
        return self._by_pid

    @property
    def names(self) -> Mapping[Atom, Process]:
        """The registered processes by name (a live view, for lookups in bulk)."""
        return self._by_name

    def get(self, pid: Pid) -> Process | None:
        return self._by_pid.get(pid)

    def whereis(self, name: Atom) -> Process | None:
        return self._by_name.get(name)

    def register(self, name: Atom, proc: Process) -> None:
        """Register ``name`` for ``proc``; ValueError if the name or the process has one."""
        if name in self._by_name:
            raise ValueError(f"name {name.name!r} is already registered")
        if proc.name is not None:
            raise ValueError(f"{proc.pid!r} is already registered as {proc.name.name!r}")
        if not proc.alive:
            raise ValueError(f"{proc.pid!r} is not alive")
        self._by_name[name] = proc
        proc.name = name

    def unregister(self, name: Atom) -> None:
        proc = self._by_name.pop(name, None)
        if proc is not None:
            proc.name = None

    def registered(self) -> list[Atom]:
        return list(self._by_name)

    def __iter__(self) -> Iterator[Process]:
        return iter(list(self._by_pid.values()))

    def __len__(self) -> int:
        return len(self._by_pid)
