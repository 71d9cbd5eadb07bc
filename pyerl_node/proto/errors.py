"""The exception hierarchy of pyerl_node (docs/design.md, "Errors").

Errors split by fault, as h11 does: ``LocalProtocolError`` when our caller misused the API,
``RemoteProtocolError`` when the peer sent something wrong. Exceptions carry fields and say
what was expected and what arrived; they never log themselves. Peer terms they show are cut
by :func:`~pyerl_node.proto.safe_repr.safe_repr`, so that making or printing one never fails
nor costs more than a short line.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pyerl_node.proto.safe_repr import safe_repr


class ErlNodeError(Exception):
    """Root of every error raised by pyerl_node."""


class ProtocolError(ErlNodeError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """The API was used in a way the protocol does not allow (our side's fault)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (the peer's fault)."""


class HandshakeError(RemoteProtocolError):
    """The distribution handshake failed."""

    def __init__(self, message: str, *, peer: str | None = None) -> None:
        super().__init__(message if peer is None else f"{peer}: {message}")
        self.peer = peer


class AuthenticationError(HandshakeError):
    """The peer's cookie digest did not match ours (or ours did not match theirs)."""


class MissingFlags(HandshakeError):
    """The peer lacks distribution flags we require (or we lack flags it requires)."""

    def __init__(self, message: str, *, peer: str | None = None, missing: int = 0) -> None:
        super().__init__(message, peer=peer)
        self.missing = missing


class NetTickTimeout(RemoteProtocolError):
    """Nothing was received from the peer within net_ticktime."""


class DecodeError(RemoteProtocolError, ValueError):
    """Bytes that are not a valid external term.

    ``offset`` is where decoding stopped in the input (inside a compressed term: in its
    inflated bytes) and ``tag`` the ETF tag being decoded there (``None`` when the problem is
    not tied to one tag).
    """

    def __init__(self, message: str, *, offset: int = 0, tag: int | None = None) -> None:
        where = f" at offset {offset}" + ("" if tag is None else f" (tag {tag})")
        super().__init__(message + where)
        self.offset = offset
        self.tag = tag


class AtomTableFull(DecodeError):
    """A new atom would pass the limit on live atoms (the BEAM's atom table is full).

    Raised by ``Atom(name)`` for a name no live atom has, and by the decoder for such an atom
    in a term (then ``offset`` and ``tag`` say where); ``limit`` is the limit in force.
    """

    def __init__(self, limit: int, *, offset: int = 0, tag: int | None = None) -> None:
        super().__init__(f"atom table full ({limit} live atoms)", offset=offset, tag=tag)
        self.limit = limit


class FrameError(RemoteProtocolError):
    """A packet after the handshake broke the protocol: the connection is over.

    The BEAM disconnects a peer for any packet it cannot decode or does not understand, and
    so does :class:`~pyerl_node.proto.connection.Connection`. ``description`` says what was
    wrong in one short line, ``error`` is the error that found it (without its traceback,
    which would keep the received bytes alive), and ``events`` holds what the same
    ``receive_data`` call decoded before the bad packet, to be delivered first.
    """

    def __init__(self, description: str, *, peer: str | None = None,
                 error: BaseException | None = None, events: tuple[Any, ...] = ()) -> None:
        self.description = description
        super().__init__(description if peer is None else f"{peer}: {description}")
        self.peer = peer
        self.error = error
        self.events = events


class EncodeError(LocalProtocolError, ValueError):
    """A Python value that has no external term representation."""

    def __init__(self, message: str, *, value: Any = None) -> None:
        super().__init__(message)
        self.value = value


class ConnectionLost(ErlNodeError):
    """The connection to a peer closed or failed."""


class NodeDown(ErlNodeError):
    """A node could not be reached, or went down while we waited on it."""


class EpmdError(ErlNodeError):
    """EPMD could not be reached or answered with an error."""


class NameInUse(EpmdError):
    """EPMD refused a registration because the name is taken."""


class NodeNotFound(EpmdError):
    """EPMD does not know the node."""


class NoProc(ErlNodeError):
    """The process does not exist (or no longer does)."""


class ProcessExit(ErlNodeError):
    """A process received an exit signal; ``reason`` holds the Erlang exit reason."""

    def __init__(self, reason: Any, *, sender: Any = None) -> None:
        # The text is made when shown: every process exit creates one of these.
        super().__init__(reason)
        self.reason = reason
        self.sender = sender

    def __str__(self) -> str:
        return f"exit: {safe_repr(self.reason)}"


class RpcError(ErlNodeError):
    """A remote call failed; ``reason`` holds the Erlang reason term."""

    def __init__(self, reason: Any, *, kind: str = "badrpc") -> None:
        super().__init__(f"{kind}: {safe_repr(reason)}")
        self.reason = reason
        self.kind = kind


class CallTimeout(ErlNodeError, TimeoutError):
    """A call did not get its reply in time."""


E = TypeVar("E", bound=BaseException)


def without_frames(error: E) -> E:
    """``error`` without its traceback and the errors it came from: their frames would keep
    what a failed decode read and built alive (a million atoms: half a second to free)."""
    error.__context__ = error.__cause__ = None
    return error.with_traceback(None)
