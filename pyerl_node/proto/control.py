"""Distribution control messages as typed values (docs/protocol/distribution.md §6).

On the wire a control message is a tuple whose first element is the operation number, and
some operations carry a second term, the payload (a message, an exit reason, an argument
list). Here every operation is one frozen dataclass that holds the payload as an ordinary
field, so a message is one object: ``SendSender(from_pid, to_pid, message)``.

How it works: one table (``_TABLE``) says, per class, its operation number and the layout of
its tuple -- which field sits in which position and what types it accepts, which positions are
unused (BEAM puts ``''`` there), where the ``{Module, Function, Arity}`` triple of a spawn
request goes and which field is the payload. Each row is compiled once, at import, into a plan
in the dataclass's field order (checking that table and dataclass agree), and
:func:`to_terms` / :func:`from_terms` follow it, so the tuple shapes are written down exactly
once. :func:`from_terms` checks the shape and the type of every element and raises
:class:`RemoteProtocolError` naming the operation and the offending position (the tuple shown
cut short, by :func:`~pyerl_node.proto.safe_repr.safe_repr`); an operation number it does not
know becomes :class:`UnknownControl`, for the caller to judge (the connection fails on it, as
the BEAM disconnects a peer that sends an operation it does not know).

Payload terms can be any term, including ``None`` (the atom ``nil``), so "no payload" is the
sentinel :data:`NO_PAYLOAD`, never ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum, IntFlag
from typing import Final, TypeAlias

from pyerl_node.proto.errors import LocalProtocolError, RemoteProtocolError
from pyerl_node.proto.safe_repr import safe_repr
from pyerl_node.proto.terms import Atom, Pid, Reference, Term


class _NoPayload(Enum):
    NO_PAYLOAD = "NO_PAYLOAD"

    def __repr__(self) -> str:
        return "NO_PAYLOAD"


#: Marks "this control message has no payload term" (``None`` is the atom ``nil``).
NO_PAYLOAD: Final = _NoPayload.NO_PAYLOAD

# The unused slot of SEND / SEND_TT / REG_SEND / REG_SEND_TT; BEAM sends the empty atom.
_UNUSED_ATOM: Final = Atom("")


class AltactFlag(IntFlag):
    """Flags of ALTACT_SIG_SEND (op 37, OTP 28; erts ``dist.h``)."""

    PRIO = 1  # priority signal
    TOKEN = 2  # the tuple carries a seq-trace token (5 elements)
    ALIAS = 4  # ``to`` is an alias reference
    NAME = 8  # ``to`` is a registered name
    EXIT = 16  # the payload is an exit reason: an exit signal, not a message


class SpawnReplyFlag(IntFlag):
    """Flags of SPAWN_REPLY: which of the requested link/monitor were set up."""

    LINK = 1
    MONITOR = 2


# --- the messages, in operation order ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """LINK (1): ``{1, FromPid, ToPid}``."""

    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class Send:
    """SEND (2): ``{2, '', ToPid}`` + Message; used when SEND_SENDER is not negotiated."""

    to_pid: Pid
    message: Term


@dataclass(frozen=True, slots=True)
class Exit:
    """EXIT (3): ``{3, FromPid, ToPid, Reason}``; a link broke (no EXIT_PAYLOAD)."""

    from_pid: Pid
    to_pid: Pid
    reason: Term


@dataclass(frozen=True, slots=True)
class Unlink:
    """UNLINK (4): ``{4, FromPid, ToPid}``; the old link protocol (gone in OTP 26)."""

    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class RegSend:
    """REG_SEND (6): ``{6, FromPid, '', ToName}`` + Message."""

    from_pid: Pid
    to_name: Atom
    message: Term


@dataclass(frozen=True, slots=True)
class GroupLeader:
    """GROUP_LEADER (7): ``{7, FromPid, ToPid}``: FromPid becomes ToPid's group leader."""

    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class Exit2:
    """EXIT2 (8): ``{8, FromPid, ToPid, Reason}``; ``exit/2`` without EXIT_PAYLOAD."""

    from_pid: Pid
    to_pid: Pid
    reason: Term


@dataclass(frozen=True, slots=True)
class SendTt:
    """SEND_TT (12): ``{12, '', ToPid, Token}`` + Message."""

    to_pid: Pid
    token: Term
    message: Term


@dataclass(frozen=True, slots=True)
class ExitTt:
    """EXIT_TT (13): ``{13, FromPid, ToPid, Token, Reason}``."""

    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@dataclass(frozen=True, slots=True)
class RegSendTt:
    """REG_SEND_TT (16): ``{16, FromPid, '', ToName, Token}`` + Message."""

    from_pid: Pid
    to_name: Atom
    token: Term
    message: Term


@dataclass(frozen=True, slots=True)
class Exit2Tt:
    """EXIT2_TT (18): ``{18, FromPid, ToPid, Token, Reason}``."""

    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@dataclass(frozen=True, slots=True)
class MonitorP:
    """MONITOR_P (19): ``{19, FromPid, ToProc, Ref}``; ToProc is a pid or a registered name."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class DemonitorP:
    """DEMONITOR_P (20): ``{20, FromPid, ToProc, Ref}``."""

    from_pid: Pid
    to_proc: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class MonitorPExit:
    """MONITOR_P_EXIT (21): ``{21, FromProc, ToPid, Ref, Reason}`` (no EXIT_PAYLOAD)."""

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Term


@dataclass(frozen=True, slots=True)
class SendSender:
    """SEND_SENDER (22): ``{22, FromPid, ToPid}`` + Message."""

    from_pid: Pid
    to_pid: Pid
    message: Term


@dataclass(frozen=True, slots=True)
class SendSenderTt:
    """SEND_SENDER_TT (23): ``{23, FromPid, ToPid, Token}`` + Message."""

    from_pid: Pid
    to_pid: Pid
    token: Term
    message: Term


@dataclass(frozen=True, slots=True)
class PayloadExit:
    """PAYLOAD_EXIT (24): ``{24, FromPid, ToPid}`` + Reason; a linked process died."""

    from_pid: Pid
    to_pid: Pid
    reason: Term


@dataclass(frozen=True, slots=True)
class PayloadExitTt:
    """PAYLOAD_EXIT_TT (25): ``{25, FromPid, ToPid, Token}`` + Reason."""

    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@dataclass(frozen=True, slots=True)
class PayloadExit2:
    """PAYLOAD_EXIT2 (26): ``{26, FromPid, ToPid}`` + Reason; ``exit/2``."""

    from_pid: Pid
    to_pid: Pid
    reason: Term


@dataclass(frozen=True, slots=True)
class PayloadExit2Tt:
    """PAYLOAD_EXIT2_TT (27): ``{27, FromPid, ToPid, Token}`` + Reason."""

    from_pid: Pid
    to_pid: Pid
    token: Term
    reason: Term


@dataclass(frozen=True, slots=True)
class PayloadMonitorPExit:
    """PAYLOAD_MONITOR_P_EXIT (28): ``{28, FromProc, ToPid, Ref}`` + Reason.

    FromProc is the name atom when the monitor was set up by name.
    """

    from_proc: Pid | Atom
    to_pid: Pid
    ref: Reference
    reason: Term


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """SPAWN_REQUEST (29): ``{29, ReqId, FromPid, GroupLeader, {M, F, A}, Opts}`` + ArgList."""

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    module: Atom
    function: Atom
    arity: int
    options: list[Term]
    args: list[Term]


@dataclass(frozen=True, slots=True)
class SpawnRequestTt:
    """SPAWN_REQUEST_TT (30): SPAWN_REQUEST with a trailing Token."""

    req_id: Reference
    from_pid: Pid
    group_leader: Pid
    module: Atom
    function: Atom
    arity: int
    options: list[Term]
    token: Term
    args: list[Term]


@dataclass(frozen=True, slots=True)
class SpawnReply:
    """SPAWN_REPLY (31): ``{31, ReqId, ToPid, Flags, Result}``; Result = new pid or error atom.

    ``flags`` is a :class:`SpawnReplyFlag` value (1 link, 2 monitor).
    """

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom


@dataclass(frozen=True, slots=True)
class SpawnReplyTt:
    """SPAWN_REPLY_TT (32): ``{32, ReqId, ToPid, Flags, Result, Token}``."""

    req_id: Reference
    to_pid: Pid
    flags: int
    result: Pid | Atom
    token: Term


@dataclass(frozen=True, slots=True)
class AliasSend:
    """ALIAS_SEND (33): ``{33, FromPid, Alias}`` + Message."""

    from_pid: Pid
    alias: Reference
    message: Term


@dataclass(frozen=True, slots=True)
class AliasSendTt:
    """ALIAS_SEND_TT (34): ``{34, FromPid, Alias, Token}`` + Message."""

    from_pid: Pid
    alias: Reference
    token: Term
    message: Term


@dataclass(frozen=True, slots=True)
class UnlinkId:
    """UNLINK_ID (35): ``{35, Id, FromPid, ToPid}``."""

    id: int
    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class UnlinkIdAck:
    """UNLINK_ID_ACK (36): ``{36, Id, FromPid, ToPid}``; From is the unlinked side."""

    id: int
    from_pid: Pid
    to_pid: Pid


@dataclass(frozen=True, slots=True)
class AltactSigSend:
    """ALTACT_SIG_SEND (37, OTP 28): ``{37, Flags, Sender, To}`` or ``{..., Token}`` + payload.

    ``flags`` is an :class:`AltactFlag` value; ``to`` is a pid, an alias reference or a name
    (see the flags); ``message`` is the message, or the exit reason when EXIT is set. The
    tuple carries ``token`` exactly when it is not ``None``.
    """

    flags: int
    sender: Pid
    to: Pid | Reference | Atom
    message: Term
    token: Term = None


@dataclass(frozen=True, slots=True)
class UnknownControl:
    """A control message with an operation number we do not know (or no longer model)."""

    control: tuple[Term, ...]
    payload: Term  # NO_PAYLOAD when the frame had none


ControlMessage: TypeAlias = (
    Link | Send | Exit | Unlink | RegSend | GroupLeader | Exit2 | SendTt | ExitTt | RegSendTt
    | Exit2Tt | MonitorP | DemonitorP | MonitorPExit | SendSender | SendSenderTt | PayloadExit
    | PayloadExitTt | PayloadExit2 | PayloadExit2Tt | PayloadMonitorPExit | SpawnRequest
    | SpawnRequestTt | SpawnReply | SpawnReplyTt | AliasSend | AliasSendTt | UnlinkId
    | UnlinkIdAck | AltactSigSend
)


# --- the layout table ----------------------------------------------------------------------

# The types a tuple element may have in a slot; None accepts any term.
_Types: TypeAlias = frozenset[type] | None
_PID: Final = frozenset({Pid})
_ATOM: Final = frozenset({Atom})
_REFERENCE: Final = frozenset({Reference})
_PROC: Final = frozenset({Pid, Atom})
_INT: Final = frozenset({int})
_LIST: Final = frozenset({list})
_ALTACT_TARGET: Final = frozenset({Pid, Reference, Atom})

_UNUSED: Final = "unused"  # a slot BEAM fills with '' and receivers ignore
_MFA: Final = "mfa"  # the {Module, Function, Arity} triple of a spawn request
_MFA_FIELDS: Final = (("module", _ATOM), ("function", _ATOM), ("arity", _INT))

# A slot is a (field name, types) pair, or one of the two markers above.
_Slot: TypeAlias = tuple[str, _Types] | str

_FROM = ("from_pid", _PID)
_TO = ("to_pid", _PID)
_TOKEN = ("token", None)
_REASON = ("reason", None)
_REF = ("ref", _REFERENCE)
_REQ_ID = ("req_id", _REFERENCE)
_ID = ("id", _INT)
_SPAWN = (_REQ_ID, _FROM, ("group_leader", _PID), _MFA, ("options", _LIST))
_SPAWN_REPLY = (_REQ_ID, _TO, ("flags", _INT), ("result", _PROC))

# (op, class, slots after the op number, payload field or None)
_TABLE: Final[tuple[tuple[int, type[ControlMessage], tuple[_Slot, ...], str | None], ...]] = (
    (1, Link, (_FROM, _TO), None),
    (2, Send, (_UNUSED, _TO), "message"),
    (3, Exit, (_FROM, _TO, _REASON), None),
    (4, Unlink, (_FROM, _TO), None),
    (6, RegSend, (_FROM, _UNUSED, ("to_name", _ATOM)), "message"),
    (7, GroupLeader, (_FROM, _TO), None),
    (8, Exit2, (_FROM, _TO, _REASON), None),
    (12, SendTt, (_UNUSED, _TO, _TOKEN), "message"),
    (13, ExitTt, (_FROM, _TO, _TOKEN, _REASON), None),
    (16, RegSendTt, (_FROM, _UNUSED, ("to_name", _ATOM), _TOKEN), "message"),
    (18, Exit2Tt, (_FROM, _TO, _TOKEN, _REASON), None),
    (19, MonitorP, (_FROM, ("to_proc", _PROC), _REF), None),
    (20, DemonitorP, (_FROM, ("to_proc", _PROC), _REF), None),
    (21, MonitorPExit, (("from_proc", _PROC), _TO, _REF, _REASON), None),
    (22, SendSender, (_FROM, _TO), "message"),
    (23, SendSenderTt, (_FROM, _TO, _TOKEN), "message"),
    (24, PayloadExit, (_FROM, _TO), "reason"),
    (25, PayloadExitTt, (_FROM, _TO, _TOKEN), "reason"),
    (26, PayloadExit2, (_FROM, _TO), "reason"),
    (27, PayloadExit2Tt, (_FROM, _TO, _TOKEN), "reason"),
    (28, PayloadMonitorPExit, (("from_proc", _PROC), _TO, _REF), "reason"),
    (29, SpawnRequest, _SPAWN, "args"),
    (30, SpawnRequestTt, (*_SPAWN, _TOKEN), "args"),
    (31, SpawnReply, _SPAWN_REPLY, None),
    (32, SpawnReplyTt, (*_SPAWN_REPLY, _TOKEN), None),
    (33, AliasSend, (_FROM, ("alias", _REFERENCE)), "message"),
    (34, AliasSendTt, (_FROM, ("alias", _REFERENCE), _TOKEN), "message"),
    (35, UnlinkId, (_ID, _FROM, _TO), None),
    (36, UnlinkIdAck, (_ID, _FROM, _TO), None),
    # The token is the optional last element (present exactly when the TOKEN flag is set).
    (37, AltactSigSend, (("flags", _INT), ("sender", _PID), ("to", _ALTACT_TARGET), _TOKEN),
     "message"),
)

_OPTIONAL_LAST: Final = frozenset({AltactSigSend})
_PAYLOAD_TYPES: Final[dict[str, _Types]] = {"args": _LIST, "message": None, "reason": None}


@dataclass(frozen=True, slots=True)
class _Spec:
    """One operation, compiled from ``_TABLE`` for both directions."""

    op: int
    cls: type[ControlMessage]
    slots: tuple[_Slot, ...]
    payload: str | None
    size: int  # elements of the control tuple, op included
    mfa_index: int  # where the {M, F, A} triple sits, 0 if nowhere
    # Per dataclass field, in declaration order: (name, tuple index or -1 for the payload,
    # index inside the {M, F, A} triple or -1, allowed types).
    plan: tuple[tuple[str, int, int, _Types], ...]


def _compile(
    op: int, cls: type[ControlMessage], slots: tuple[_Slot, ...], payload: str | None
) -> _Spec:
    where: dict[str, tuple[int, int, _Types]] = {}
    mfa_index = 0
    for index, slot in enumerate(slots, start=1):
        if slot is _MFA:
            mfa_index = index
            for sub, (name, types) in enumerate(_MFA_FIELDS):
                where[name] = (index, sub, types)
        elif isinstance(slot, tuple):
            where[slot[0]] = (index, -1, slot[1])
    if payload is not None:
        where[payload] = (-1, -1, _PAYLOAD_TYPES[payload])
    names = [f.name for f in fields(cls)]
    if sorted(names) != sorted(where):  # the table and the dataclass must agree
        raise AssertionError(f"control layout of {cls.__name__} does not match its fields")
    plan = tuple((name, *where[name]) for name in names)
    return _Spec(op, cls, slots, payload, 1 + len(slots), mfa_index, plan)


_SPECS: Final = tuple(_compile(*row) for row in _TABLE)
_BY_OP: Final[dict[int, _Spec]] = {spec.op: spec for spec in _SPECS}
_BY_CLASS: Final[dict[type, _Spec]] = {spec.cls: spec for spec in _SPECS}


# --- conversion ----------------------------------------------------------------------------


def to_terms(msg: ControlMessage) -> tuple[tuple[Term, ...], Term]:
    """The control tuple of ``msg`` and its payload term (or :data:`NO_PAYLOAD`).

    Raises LocalProtocolError if ``msg`` is not one of the control message classes.
    """
    spec = _BY_CLASS.get(type(msg))
    if spec is None:
        raise LocalProtocolError(f"not a control message: {msg!r}")
    items: list[Term] = [spec.op]
    for slot in spec.slots:
        if slot is _UNUSED:
            items.append(_UNUSED_ATOM)
        elif isinstance(slot, str):  # _MFA
            items.append(tuple(getattr(msg, name) for name, _ in _MFA_FIELDS))
        else:
            items.append(getattr(msg, slot[0]))
    if spec.cls in _OPTIONAL_LAST and items[-1] is None:
        items.pop()
    payload = NO_PAYLOAD if spec.payload is None else getattr(msg, spec.payload)
    return tuple(items), payload


def _malformed(ctrl: Term, why: str) -> RemoteProtocolError:
    # (repr would fail on a deep or huge peer term: safe_repr is bounded)
    return RemoteProtocolError(f"malformed control message ({why}): {safe_repr(ctrl, 120)}")


def from_terms(ctrl: Term, payload: Term = NO_PAYLOAD) -> ControlMessage | UnknownControl:
    """Build the message for a decoded control tuple and payload (:data:`NO_PAYLOAD` if none).

    Raises :class:`RemoteProtocolError` when the tuple does not have the shape its operation
    demands; an operation number we do not know gives :class:`UnknownControl`.
    """
    if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
        raise _malformed(ctrl, "expected a tuple starting with an operation number")
    spec = _BY_OP.get(ctrl[0])
    if spec is None:
        return UnknownControl(ctrl, payload)
    if len(ctrl) != spec.size:
        if not (spec.cls in _OPTIONAL_LAST and len(ctrl) == spec.size - 1):
            raise _malformed(ctrl, f"{spec.cls.__name__} has {spec.size - 1} elements after "
                                   f"the op, got {len(ctrl) - 1}")
        elements = (*ctrl, None)  # the optional last element is absent
    else:
        elements = ctrl
    if (payload is NO_PAYLOAD) is not (spec.payload is None):
        if spec.payload is None:
            raise _malformed(ctrl, f"{spec.cls.__name__} carries no payload, but one followed")
        raise _malformed(ctrl, f"{spec.cls.__name__} needs a payload ({spec.payload}), "
                               "none followed")
    if spec.mfa_index:
        mfa = elements[spec.mfa_index]
        if type(mfa) is not tuple or len(mfa) != 3:
            raise _malformed(ctrl, f"{spec.cls.__name__} element {spec.mfa_index} must be "
                                   "{Module, Fun, Arity}")
    args: list[Term] = []
    for name, index, sub, types in spec.plan:
        value = payload if index < 0 else elements[index] if sub < 0 else elements[index][sub]
        if types is not None and type(value) not in types:
            what = "payload" if index < 0 else f"element {index}"
            raise _malformed(ctrl, f"{spec.cls.__name__} {what} ({name}) has the wrong type")
        args.append(value)
    return spec.cls(*args)


#: Builds the message of one known control tuple around a payload.
PayloadBuilder: TypeAlias = Callable[[Term], ControlMessage]


def payload_builder(ctrl: Term) -> PayloadBuilder | None:
    """For a valid control tuple whose payload may be any term (the message of the send
    operations): a function that builds the message for a given payload without checking
    the tuple again. None for every other tuple.

    Raises :class:`RemoteProtocolError` as :func:`from_terms` does for a malformed tuple.
    """
    if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
        return None
    spec = _BY_OP.get(ctrl[0])
    if spec is None or spec.payload is None or _PAYLOAD_TYPES[spec.payload] is not None:
        return None
    probe = from_terms(ctrl, None)
    at = next(i for i, (_, index, _, _) in enumerate(spec.plan) if index < 0)
    return _refill(spec, probe, at)


#: Builds the message of a known control tuple with another last element.
LastBuilder: TypeAlias = Callable[[Term], ControlMessage]


def last_builder(ctrl: Term) -> LastBuilder | None:
    """For a valid control tuple without payload: a function that builds the message of the
    same tuple with another last element (a gen call's next MONITOR_P differs only in its
    reference), checking only that element. None for a tuple whose last element is not a
    field of its own, or for an operation with a payload.

    Raises :class:`RemoteProtocolError` as :func:`from_terms` does for a malformed tuple.
    """
    if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
        return None
    spec = _BY_OP.get(ctrl[0])
    if spec is None or spec.payload is not None or len(ctrl) != spec.size:
        return None
    probe = from_terms(ctrl)
    last = len(ctrl) - 1
    at = next((i for i, (_, index, sub, _) in enumerate(spec.plan)
               if index == last and sub < 0), None)
    if at is None:
        return None
    fill = _refill(spec, probe, at)
    name, _, _, types = spec.plan[at]
    if types is None:
        return fill

    def build(value: Term) -> ControlMessage:
        if type(value) not in types:
            raise _malformed((*ctrl[:-1], value),
                             f"{spec.cls.__name__} element {last} ({name}) has the wrong type")
        return fill(value)

    return build


def _refill(spec: _Spec, probe: object, at: int) -> Callable[[Term], ControlMessage]:
    """A function that builds a copy of ``probe`` with field ``spec.plan[at]`` set to its
    argument. It fills the slots directly: the values were checked, and the frozen
    dataclass ``__init__`` costs more than the rest of decoding a small message."""
    cls = spec.cls
    fields_of = vars(cls)
    fixed = [(fields_of[name].__set__, getattr(probe, name))
             for i, (name, *_) in enumerate(spec.plan) if i != at]
    set_varying = fields_of[spec.plan[at][0]].__set__
    new = object.__new__

    def build(value: Term) -> ControlMessage:
        msg = new(cls)
        for set_field, field_value in fixed:
            set_field(msg, field_value)
        set_varying(msg, value)
        return msg

    return build
