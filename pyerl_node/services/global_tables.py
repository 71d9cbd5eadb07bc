"""The tables of ``global`` on one node: names and locks (docs/protocol/global.md §2, §4.5, §5).

Pure bookkeeping, no I/O: the name server hands in how to monitor and demonitor a pid and
how to tell whether a local pid is alive. Every registered pid and every lock holder is
monitored; the name server passes each DOWN to :meth:`Tables.on_down`, which is how names and
locks of dead processes and lost nodes disappear.

The lock-holder rule (§5): a name inserted by a ``register`` call is kept only if the caller
holds the ``global`` lock here, or nothing holds it and it was last released normally (not by
a holder's death); a name inserted by ``new_nodes`` only if the ``global`` lock here still has
the session's lock id. Otherwise the insertion is undone at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyerl_node.proto.terms import Atom, Pid, Reference, Term, freeze

GLOBAL = Atom("global")
LOCK_KEY = Atom("lock")


@dataclass
class NameEntry:
    name: Term
    pid: Pid
    method: Term
    ref: Reference


@dataclass
class Lock:
    resource: Term
    requester: Term
    holders: dict[Pid, Reference] = field(default_factory=dict)


def name_key(name: Term) -> Term:
    """The table key of a name: a ``str`` is an atom (as for local names; pass ``bytes`` for a
    binary); unhashable terms are frozen."""
    return Atom(name) if isinstance(name, str) else freeze(name)


def is_lock_id(term: Term) -> bool:
    """``{ResourceId, LockRequesterId}``."""
    return type(term) is tuple and len(term) == 2


class Tables:
    """Names (``Name -> {Pid, Method}``) and locks (``ResourceId -> {RequesterId, Holders}``)."""

    def __init__(self, me: Atom, monitor: Callable[[Pid], Reference],
                 demonitor: Callable[[Reference], None],
                 alive: Callable[[Pid], bool]) -> None:
        self.me = me
        self._monitor = monitor
        self._demonitor = demonitor
        self._alive = alive
        self.names: dict[Term, NameEntry] = {}
        self.names_ext: dict[Term, tuple[Pid, Atom]] = {}
        self.pid_names: dict[Pid, set[Term]] = {}
        self._ref_names: dict[Reference, Term] = {}
        self.locks: dict[Term, Lock] = {}
        self._ref_locks: dict[Reference, Term] = {}
        self.global_lock_down = False

    # -- names ----------------------------------------------------------------------------

    def where(self, name: Term) -> Pid | None:
        """OTP ``where/1``: a local pid counts only while its process is alive."""
        entry = self.names.get(name if type(name) is Atom else name_key(name))
        if entry is None:
            return None
        pid = entry.pid
        if pid.node is self.me and not self._alive(pid):
            return None
        return pid

    def lookup(self, name: Term) -> tuple[Term, Pid, Term] | None:
        entry = self.names.get(name_key(name))
        return None if entry is None else (entry.name, entry.pid, entry.method)

    def name_list(self) -> list[Term]:
        """``[{Name, Pid, Method}]`` as sent in ``exchange``."""
        return [(e.name, e.pid, e.method) for e in self.names.values()]

    def names_ext_list(self) -> list[Term]:
        return [(name, pid, reg) for name, (pid, reg) in self.names_ext.items()]

    def registered_names(self) -> list[Term]:
        return [e.name for e in self.names.values()]

    def has_other_name(self, pid: Pid) -> list[Term]:
        """The names ``pid`` is already registered under."""
        return [self.names[k].name for k in self.pid_names.get(pid, ())]

    def insert(self, name: Term, pid: Pid, method: Term, from_: Pid | Atom,
               extra: list[Term], *, reg_node: Atom | None = None) -> None:
        """OTP ``ins_name``: ``from_`` is the calling pid (``register``) or the node whose
        operations these are (``new_nodes``/``resolved``, with ``extra`` = ExtraInfo)."""
        if isinstance(name, str):
            name = Atom(name)
        self.delete(name)
        ref = self._monitor(pid)
        key = freeze(name)
        self.names[key] = NameEntry(name, pid, method, ref)
        self.pid_names.setdefault(pid, set()).add(key)
        self._ref_names[ref] = key
        if reg_node is not None:
            self.names_ext[key] = (pid, reg_node)
        if not self._lock_still_set(from_, extra):
            # the lock that covered this change is gone (its holder died): undo it
            self.delete(name)

    def _lock_still_set(self, from_: Pid | Atom, extra: list[Term]) -> bool:
        lock = self.locks.get(GLOBAL)
        if lock is None:
            return not self.global_lock_down
        if isinstance(from_, Pid):
            return from_ in lock.holders
        info: Term = next((i[1] for i in extra if type(i) is tuple and len(i) == 2
                           and i[0] is LOCK_KEY), None)
        return (type(info) is tuple and len(info) == 2
                and freeze(lock.requester) == freeze(info[1]))

    def delete(self, name: Term) -> None:
        key = name_key(name)
        entry = self.names.pop(key, None)
        if entry is None:
            return
        self._demonitor(entry.ref)
        self._ref_names.pop(entry.ref, None)
        keys = self.pid_names.get(entry.pid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.pid_names[entry.pid]
        self.names_ext.pop(key, None)

    # -- locks ----------------------------------------------------------------------------

    def can_set_lock(self, lock_id: Term) -> bool:
        """Free, or held with the same requester id."""
        if not is_lock_id(lock_id):
            return False
        lock = self.locks.get(freeze(lock_id[0]))
        return lock is None or freeze(lock.requester) == freeze(lock_id[1])

    def is_lock_set(self, resource: Term) -> bool:
        return freeze(resource) in self.locks

    def set_lock(self, lock_id: Term, pid: Pid) -> bool:
        """``{set_lock, Id}`` from ``pid``: True, and ``pid`` becomes a holder; or False."""
        if not self.can_set_lock(lock_id):
            return False
        key = freeze(lock_id[0])
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = Lock(lock_id[0], lock_id[1])
        if pid not in lock.holders:
            ref = self._monitor(pid)
            lock.holders[pid] = ref
            self._ref_locks[ref] = key
        return True

    def del_lock(self, lock_id: Term, pid: Pid) -> None:
        """``{del_lock, Id}`` from ``pid``: it stops holding the lock."""
        key = freeze(lock_id[0])
        lock = self.locks.get(key)
        if lock is not None and freeze(lock.requester) == freeze(lock_id[1]):
            self._remove_holder(key, lock, pid, down=False)

    def _remove_holder(self, key: Term, lock: Lock, pid: Pid, *, down: bool) -> None:
        ref = lock.holders.pop(pid, None)
        if ref is None:
            return
        self._demonitor(ref)
        self._ref_locks.pop(ref, None)
        if not lock.holders:
            del self.locks[key]
            if key is GLOBAL:
                self.global_lock_down = down

    # -- monitors -------------------------------------------------------------------------

    def on_down(self, ref: Reference) -> None:
        """A monitored holder or registered pid is gone (or its node is)."""
        key = self._ref_locks.get(ref)
        if key is not None:
            lock = self.locks[key]
            pid = next(p for p, r in lock.holders.items() if r == ref)
            self._remove_holder(key, lock, pid, down=True)
        name = self._ref_names.get(ref)
        if name is not None:
            entry = self.names.get(name)
            if entry is not None and entry.ref == ref:
                self.delete(entry.name)
