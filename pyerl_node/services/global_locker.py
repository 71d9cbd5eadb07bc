"""The locker: takes the cluster-wide ``global`` lock when two partitions join
(docs/protocol/global.md §4.1).

One locker process per node, unregistered; its pid is announced in ``init_connect`` and is
one half of every connect session's lock id ``{global, sort([LockerA, LockerB])}``. It
mirrors OTP's ``the_locker`` loop:

* the name server tells it about a peer in a session (``his_the_locker``), about sessions that
  end (``cancel``) and about nodes joining or leaving the partition (``add_to_known`` /
  ``remove_from_known``); remote lockers' ``lock_set`` messages arrive through the name
  server (vsn >= 6), which checks the session tag first;
* **active** path: after an idle timeout (0 right after a success, 200 ms when it knows no
  nodes, else ``min(1000 + 100 * len(known), 3000)`` ms) and while ``global`` is not locked
  here, it picks a peer, locks the boss, then itself and the peer, then the rest of its
  partition, sends ``lock_set true`` and waits for the peer's ``lock_set``;
* **passive** path: a ``lock_set true`` that arrives first makes it lock its own partition
  with the same lock id and answer ``lock_set``;
* either way it then tells the name server ``lock_is_set`` and holds the lock until the name
  server cancels the session (after ``resolved``), runs the ``new_nodes`` callback it was
  given and releases the lock, the boss last.

All lock calls are made from the locker's own pid: that pid is the lock holder (§5).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pyerl_node.proto.errors import CallTimeout, ErlNodeError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Term
from pyerl_node.runtime.genserver import GEN_CAST
from pyerl_node.runtime.process import Process
from pyerl_node.services.global_calls import (
    GNS,
    NameServer,
    del_lock,
    delete_global_lock,
    locker_lock_id,
    set_lock_on_nodes,
    the_boss,
)

log = logging.getLogger("pyerl_node.global")

HIS_THE_LOCKER = Atom("his_the_locker")
CANCEL = Atom("cancel")
LOCK_SET = Atom("lock_set")
LOCK_IS_SET = Atom("lock_is_set")
ADD_TO_KNOWN = Atom("add_to_known")
REMOVE_FROM_KNOWN = Atom("remove_from_known")

# Run by the locker before it releases the lock (the name server's new_nodes casts).
CancelFun = Callable[[], Awaitable[None]] | None


@dataclass(frozen=True)
class Him:
    """A peer in a connect session, as the locker knows it (OTP's ``#him{}``)."""

    node: Atom
    locker: Pid
    vsn: int
    my_tag: int
    his_tag: int


def _is_lock_set_msg(msg: Term) -> bool:
    return (type(msg) is tuple and len(msg) in (4, 5) and msg[0] is LOCK_SET
            and type(msg[1]) is Pid)


class Locker:
    """OTP's ``the_locker`` for one node; ``run`` is the body of its process."""

    def __init__(self, gns: NameServer) -> None:
        self.gns = gns
        self.others: list[Him] = []
        self.known: list[Atom] = []
        self.boss: Atom | None = None
        self.just_synced = False
        self.proc: Process

    @property
    def me(self) -> Atom:
        return self.proc.host.node_atom

    async def run(self, proc: Process) -> None:
        self.proc = proc
        self._update_known([*self.gns.known], add=True)
        mailbox = proc.mailbox
        while True:
            found, msg = mailbox.receive_nowait()
            if not found:
                timeout = self._timeout()
                self.just_synced = False
                try:
                    msg = await proc.receive(timeout=timeout)
                except CallTimeout:
                    if not self.gns.tables.is_lock_set(Atom("global")):
                        await self._select_node()
                    continue
            try:
                await self._message(msg)
            except (ErlNodeError, ValueError, TypeError, IndexError):
                # a malformed message must not end the locker (and with it global here)
                log.exception("global locker: failed to handle %s", safe_repr(msg))

    def _timeout(self) -> float | None:
        if not self.others:
            return None
        if self.just_synced:
            return 0.0
        if not self.known:
            return 0.2
        return min(1.0 + 0.1 * len(self.known), 3.0)

    # -- known nodes -------------------------------------------------------------------------

    def _update_known(self, nodes: list[Atom], *, add: bool) -> None:
        if add:
            self.known = nodes + self.known
        else:
            for node in nodes:
                if node in self.known:
                    self.known.remove(node)
        self.boss = the_boss([self.me, *self.known])

    def _drain_known_updates(self) -> None:
        """OTP ``update_locker_known/1``: apply queued add/remove messages now."""
        def is_update(msg: Term) -> bool:
            return type(msg) is tuple and len(msg) == 2 and msg[0] in (
                ADD_TO_KNOWN, REMOVE_FROM_KNOWN)

        while True:
            found, msg = self.proc.mailbox.receive_nowait(is_update)
            if not found:
                return
            self._update_known(msg[1] if msg[0] is ADD_TO_KNOWN else [msg[1]],
                               add=msg[0] is ADD_TO_KNOWN)

    # -- messages ------------------------------------------------------------------------------

    async def _message(self, msg: Term) -> None:
        if type(msg) is not tuple or not msg:
            log.warning("global locker: unexpected message %s", safe_repr(msg))
            return
        kind = msg[0]
        if kind is HIS_THE_LOCKER:
            _, his_locker, (vsn, _his_known), his_tag, my_tag = msg
            self.others.insert(0, Him(his_locker.node, his_locker, vsn, my_tag, his_tag))
        elif kind is CANCEL and msg[3] is None:
            _, node, tag, _fun = msg
            if tag is not None:  # an undefined tag may be an old nodedown: ignore it
                self._remove_node(node, tag)
        elif _is_lock_set_msg(msg):
            if msg[2] is True:
                await self._spontaneous(msg[1], msg[4] if len(msg) == 5 else None)
        elif kind is ADD_TO_KNOWN:
            self._update_known(list(msg[1]), add=True)
        elif kind is REMOVE_FROM_KNOWN:
            self._update_known([msg[1]], add=False)
        else:
            log.warning("global locker: unexpected message %s", safe_repr(msg))

    def _find(self, node: Atom) -> Him | None:
        return next((h for h in self.others if h.node is node), None)

    def _remove_node(self, node: Atom, tag: int) -> None:
        for him in self.others:
            if him.node is node and him.my_tag == tag:
                self.others.remove(him)
                return

    async def _send_lock_set(self, is_set: bool, his_locker: Pid, vsn: int,
                             his_tag: int) -> None:
        if vsn < 8:
            msg: Term = (LOCK_SET, self.proc.pid, is_set, list(self.known))
        else:
            msg = (LOCK_SET, self.proc.pid, is_set, list(self.known), his_tag)
        if vsn < 6:
            await self.proc.send(his_locker, msg)
        else:
            await self.proc.send((GNS, his_locker.node), (GEN_CAST, msg))

    async def _tell_gns_lock_is_set(self, node: Atom, my_tag: int, lock_id: Term) -> None:
        await self.proc.send(GNS, (GEN_CAST, (LOCK_IS_SET, node, my_tag, lock_id)))

    async def _spontaneous(self, his_locker: Pid, tag: int | None) -> None:
        """The peer's locker locked first: lock my partition with its lock id and answer."""
        node = his_locker.node
        him = self._find(node)
        if him is None or (tag is not None and him.my_tag != tag):
            await self._send_lock_set(False, his_locker, 5, 0)
            return
        lock_id = locker_lock_id(self.proc.pid, his_locker)
        is_set = await self._lock_nodes_safely(lock_id, [])
        await self._send_lock_set(is_set, his_locker, him.vsn, him.his_tag)
        if not is_set:
            self.just_synced = False
            return
        await self._tell_gns_lock_is_set(node, him.my_tag, lock_id)
        await self._wait_cancel_lock(node, lock_id, him.my_tag, [self.me, *self.known])
        self.just_synced = True
        self._remove_node(node, him.my_tag)

    async def _select_node(self) -> None:
        """Timeout path: lock my partition plus one peer, then wait for its answer."""
        self.others = [h for h in self.others if h.node not in self.known]
        if not self.others:
            return
        him = random.choice(self.others)
        lock_id = locker_lock_id(self.proc.pid, him.locker)
        # locking the peer node too prevents two partitions from deadlocking each other
        if not await self._lock_nodes_safely(lock_id, [him.node]):
            return
        known1 = [self.me, him.node, *self.known]
        await self._send_lock_set(True, him.locker, him.vsn, him.his_tag)
        await self._lock_is_set(him, known1, lock_id)

    async def _lock_is_set(self, him: Him, known1: list[Atom], lock_id: Term) -> None:
        def for_him(msg: Term) -> bool:
            if _is_lock_set_msg(msg):
                return msg[1].node is him.node
            return (type(msg) is tuple and len(msg) == 4 and msg[0] is CANCEL
                    and msg[1] is him.node and msg[2] == him.my_tag)

        while True:
            msg = await self.proc.receive(for_him)
            if msg[0] is CANCEL:
                if msg[3] is not None:
                    await msg[3]()
                await delete_global_lock(self.proc, lock_id, known1, local=self.gns.call_local)
                self._remove_node(him.node, him.my_tag)
                return
            current = len(msg) == 4 or msg[4] == him.my_tag
            if not current:
                continue  # an answer to an older session with that node
            if msg[2] is not True:
                await delete_global_lock(self.proc, lock_id, known1, local=self.gns.call_local)
                return
            await self._tell_gns_lock_is_set(him.node, him.my_tag, lock_id)
            await self._wait_cancel_lock(him.node, lock_id, him.my_tag, known1)
            self.just_synced = True
            if him in self.others:
                self.others.remove(him)
            return

    async def _wait_cancel_lock(self, node: Atom, lock_id: Term, my_tag: int,
                                known: list[Atom]) -> None:
        """Hold the lock until the name server ends the session (it always does: on
        ``resolved``, on a tag mismatch or on nodedown)."""
        def cancel(msg: Term) -> bool:
            return (type(msg) is tuple and len(msg) == 4 and msg[0] is CANCEL
                    and msg[1] is node and msg[2] == my_tag)

        msg = await self.proc.receive(cancel)
        if msg[3] is not None:
            await msg[3]()
        await delete_global_lock(self.proc, lock_id, known, local=self.gns.call_local)

    async def _lock_nodes_safely(self, lock_id: Term, extra: list[Atom]) -> bool:
        """Lock the boss first, then me and ``extra``, then the rest of my partition."""
        me = self.me
        first = [self.boss] if self.boss is not None else []
        if not (first == [me] or self.gns.tables.can_set_lock(lock_id)):
            return False
        if not await self._set_lock(lock_id, first):
            return False
        self._drain_known_updates()
        second = [n for n in [me, *extra] if n not in first]
        if not await self._set_lock(lock_id, second):
            await del_lock(self.proc, lock_id, first, local=self.gns.call_local)
            return False
        if not await self._set_lock(lock_id, [n for n in self.known if n not in first]):
            await del_lock(self.proc, lock_id, first + second, local=self.gns.call_local)
            return False
        return True

    async def _set_lock(self, lock_id: Term, nodes: list[Atom]) -> bool:
        return await set_lock_on_nodes(self.proc, lock_id, nodes,
                                       local_free=self.gns.tables.can_set_lock(lock_id),
                                       local=self.gns.call_local)
