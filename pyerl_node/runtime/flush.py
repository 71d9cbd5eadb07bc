"""When a queued control message is written to the socket: the flush policy of sends."""

from __future__ import annotations

from enum import Enum


class Flush(Enum):
    """When a queued control message is written to the socket."""

    #: with the other sends of this turn of the event loop, in one write (the default)
    SOON = "soon"
    #: at once: the caller is about to wait for the answer
    NOW = "now"
    #: with the next write, or within ``LATER_DELAY`` (a demonitor: nobody waits for it)
    LATER = "later"


#: The longest a ``Flush.LATER`` message waits for another write to go with.
LATER_DELAY = 0.005
