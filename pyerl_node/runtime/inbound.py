"""What each control message from a peer does to local processes (docs/protocol/distribution.md §6).

Sends to pids and names are delivered by ``dispatch`` itself; every other message type has
one handler, looked up in one table: delivery to aliases;
links with the UNLINK_ID protocol (always acknowledged); exit signals with Erlang's rules;
monitors, answered at once with ``noproc`` when the target does not exist (a BEAM caller
would otherwise wait forever); distributed spawn (the new process, its SPAWN_REPLY, the
requested monitor or link, then the node's spawn handler decides what the process runs) and
spawn replies. Messages for what does not exist are dropped, as the BEAM drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from pyerl_node.proto import control as c
from pyerl_node.proto.control import AltactFlag
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Reference, Term
from pyerl_node.runtime.channel import Channel
from pyerl_node.runtime.interface import SpawnHandler
from pyerl_node.runtime.process import NOPROC, MonitorEntry, Process
from pyerl_node.runtime.registry import Registry

log = logging.getLogger("pyerl_node")

SPAWN_REPLY_TAG = Atom("spawn_reply")
MONITOR = Atom("monitor")
LINK = Atom("link")
_MONITOR_SET: Final = int(c.SpawnReplyFlag.MONITOR)
_LINK_SET: Final = int(c.SpawnReplyFlag.LINK)


class Node(Protocol):
    """The part of the kernel that inbound control messages act on."""

    registry: Registry
    spawn_handler: SpawnHandler

    def deliver_local(self, target: Term, message: Term) -> None: ...

    def deliver_from(self, target: Term, message: Term, channel: Channel) -> None: ...

    def local_process(self, target: Term) -> Process | None: ...

    def signal_exit(self, proc: Process, sender: Pid, reason: Term, *,
                    from_link: bool) -> None: ...

    def send_down(self, entry: MonitorEntry, ref: Reference, reason: Term) -> None: ...

    def fire_down(self, watcher: Pid, ref: Reference, reason: Term) -> None: ...

    def new_process(self) -> Process: ...

    def terminate(self, proc: Process, reason: Term) -> None: ...


# Messages to pids and to names, nearly all the traffic: delivered by ``dispatch`` itself,
# without a handler call.
_TO_PID: Final = frozenset({c.Send, c.SendSender, c.SendTt, c.SendSenderTt})
_TO_NAME: Final = frozenset({c.RegSend, c.RegSendTt})


def dispatch(node: Node, channel: Channel, events: Sequence[Any]) -> None:
    """Act on the control messages of one read, in order; a handler that fails is logged and
    the messages after it still count."""
    size = channel.current_size
    pids = node.registry.pids
    names = node.registry.names
    for msg in events:
        kind = type(msg)
        try:
            if kind in _TO_PID:
                proc = pids.get(msg.to_pid)
            elif kind in _TO_NAME:
                proc = names.get(msg.to_name)
                if proc is None:
                    log.debug("%s sent to unknown name %s: dropped", channel.peer.name,
                              msg.to_name)
            else:
                handler = _HANDLERS.get(kind)
                if handler is None:
                    log.debug("ignoring %s from %s", safe_repr(msg), channel.peer.name)
                else:
                    handler(node, channel, msg)
                continue
            if proc is not None:
                proc.mailbox.put_from(msg.message, channel, size)
        except Exception:
            # a bug in handling one message must not take the connection down
            log.exception("handling %s from %s failed", safe_repr(msg), channel.peer.name)


def _alias_send(node: Node, channel: Channel, msg: c.AliasSend) -> None:
    node.deliver_from(msg.alias, msg.message, channel)


def _altact(node: Node, channel: Channel, msg: c.AltactSigSend) -> None:
    if msg.flags & AltactFlag.EXIT:  # an exit signal, not a message
        proc = node.registry.get(msg.to) if isinstance(msg.to, Pid) else None
        if proc is not None:
            node.signal_exit(proc, msg.sender, msg.message, from_link=False)
        return
    node.deliver_from(msg.to, msg.message, channel)


def _link(node: Node, channel: Channel, msg: c.Link) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None:
        proc.links.add(msg.from_pid)
    elif channel.exit_payload:
        channel.send(c.PayloadExit(msg.to_pid, msg.from_pid, NOPROC))
    else:
        channel.send(c.Exit(msg.to_pid, msg.from_pid, NOPROC))


def _unlink_id(node: Node, channel: Channel, msg: c.UnlinkId) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None:
        proc.links.discard(msg.from_pid)
    channel.send(c.UnlinkIdAck(msg.id, msg.to_pid, msg.from_pid))


def _unlink(node: Node, channel: Channel, msg: c.Unlink) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None:
        proc.links.discard(msg.from_pid)


def _exit(node: Node, channel: Channel, msg: c.Exit | c.PayloadExit) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None and msg.from_pid in proc.links:
        proc.links.discard(msg.from_pid)
        node.signal_exit(proc, msg.from_pid, msg.reason, from_link=True)


def _exit2(node: Node, channel: Channel, msg: c.Exit2 | c.PayloadExit2) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None:
        node.signal_exit(proc, msg.from_pid, msg.reason, from_link=False)


def _monitor(node: Node, channel: Channel, msg: c.MonitorP) -> None:
    entry = MonitorEntry(msg.from_pid, msg.to_proc)
    proc = node.local_process(msg.to_proc)
    if proc is None:
        node.send_down(entry, msg.ref, NOPROC)
    else:
        proc.monitored_by[msg.ref] = entry


def _demonitor(node: Node, channel: Channel, msg: c.DemonitorP) -> None:
    proc = node.local_process(msg.to_proc)
    if proc is not None:
        proc.monitored_by.pop(msg.ref, None)


def _monitor_exit(
    node: Node, channel: Channel, msg: c.MonitorPExit | c.PayloadMonitorPExit
) -> None:
    node.fire_down(msg.to_pid, msg.ref, msg.reason)


def _group_leader(node: Node, channel: Channel, msg: c.GroupLeader) -> None:
    proc = node.registry.get(msg.to_pid)
    if proc is not None:
        proc.group_leader = msg.from_pid


def _spawn_request(node: Node, channel: Channel, req: c.SpawnRequest) -> None:
    """A distributed spawn: the new process and its SPAWN_REPLY first, then what it runs."""
    proc = node.new_process()
    proc.group_leader = req.group_leader
    flags = 0  # (plain ints: IntFlag arithmetic costs microseconds, on every rpc)
    if MONITOR in req.options:
        proc.monitored_by[req.req_id] = MonitorEntry(req.from_pid, proc.pid)
        flags |= _MONITOR_SET
    if LINK in req.options:
        proc.links.add(req.from_pid)
        flags |= _LINK_SET
    channel.send(c.SpawnReply(req.req_id, req.from_pid, flags, proc.pid))

    def finish(reason: Term) -> None:
        node.terminate(proc, reason)  # (nothing if it was killed meanwhile)
        channel.flush()  # the caller waits for this exit: it need not wait for the loop

    node.spawn_handler(proc, req.module, req.function, req.args, finish)


def _spawn_reply(node: Node, channel: Channel, msg: c.SpawnReply) -> None:
    node.deliver_local(msg.to_pid, (SPAWN_REPLY_TAG, msg.req_id, msg.flags, msg.result))


# The seq-trace (*_TT) variants carry the same fields plus a token, which we do not trace.
_HANDLERS: dict[type, Callable[[Node, Channel, Any], None]] = {
    c.AliasSend: _alias_send,
    c.AliasSendTt: _alias_send,
    c.AltactSigSend: _altact,
    c.Link: _link,
    c.Unlink: _unlink,
    c.UnlinkId: _unlink_id,
    c.Exit: _exit,
    c.ExitTt: _exit,
    c.PayloadExit: _exit,
    c.PayloadExitTt: _exit,
    c.Exit2: _exit2,
    c.Exit2Tt: _exit2,
    c.PayloadExit2: _exit2,
    c.PayloadExit2Tt: _exit2,
    c.MonitorP: _monitor,
    c.DemonitorP: _demonitor,
    c.MonitorPExit: _monitor_exit,
    c.PayloadMonitorPExit: _monitor_exit,
    c.GroupLeader: _group_leader,
    c.SpawnRequest: _spawn_request,
    c.SpawnRequestTt: _spawn_request,
    c.SpawnReply: _spawn_reply,
    c.SpawnReplyTt: _spawn_reply,
}
