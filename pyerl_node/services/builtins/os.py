"""Built-in ``os``: ``getpid/0``, ``type/0``, ``timestamp/0`` and ``system_time/0,1`` of the
Python process the node runs in. The native time unit is the nanosecond, as on Linux BEAMs."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Final

from pyerl_node.proto.terms import Atom, Term
from pyerl_node.services.builtins.common import ERL_KERNEL_ERRORS, badarg, charlist
from pyerl_node.services.builtins.names import OS

NATIVE_PER_SECOND: Final = 1_000_000_000
#: ``erlang:time_unit()`` atoms, the deprecated plural ones included: parts per second
TIME_UNITS: Final[dict[Atom, int]] = {
    Atom(name): per_second for names, per_second in (
        (("second", "seconds"), 1),
        (("millisecond", "milli_seconds"), 1_000),
        (("microsecond", "micro_seconds"), 1_000_000),
        (("nanosecond", "nano_seconds", "native", "perf_counter"), NATIVE_PER_SECOND),
    ) for name in names}
_UNSET: Any = object()


def os_type() -> tuple[Atom, Atom]:
    """``{unix, linux}``, ``{unix, darwin}``, ``{win32, nt}``..."""
    if sys.platform == "win32":
        return (Atom("win32"), Atom("nt"))
    return (Atom("unix"), Atom("linux" if sys.platform.startswith("linux") else sys.platform))


class OsModule:
    """The functions of built-in ``os``."""

    def getpid(self) -> list[int]:
        return charlist(str(os.getpid()))

    def type(self) -> Term:
        return os_type()

    def timestamp(self) -> Term:
        micro = time.time_ns() // 1000
        seconds, micro = divmod(micro, 1_000_000)
        mega, seconds = divmod(seconds, 1_000_000)
        return (mega, seconds, micro)

    def system_time(self, unit: Term = _UNSET) -> int:
        now = time.time_ns()
        if unit is _UNSET:
            return now
        per_second = TIME_UNITS.get(unit) if isinstance(unit, Atom) else None
        if per_second is None and type(unit) is int and unit > 0:
            per_second = unit
        if per_second is None:
            badarg(OS, "system_time", [unit], ERL_KERNEL_ERRORS)
        return now * per_second // NATIVE_PER_SECOND
