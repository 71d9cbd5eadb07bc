"""glibc malloc settings that keep the pages of big message buffers (process-wide, opt-in).

A big binary that arrives in fragments becomes one fresh ``bytes``, and the reads that carried
it are fresh buffers too. With glibc's defaults, allocations from 128 KiB up (a bound it raises
by itself to 32 MiB at most) are mapped afresh, and freed memory above 128 KiB at the top of
the heap goes back to the kernel: each big message is then copied into pages the kernel must
fault in one by one, which is half the CPU a stream of 16 MiB binaries costs on receive
(docs/guide/performance.md has the figures). The BEAM's own allocators keep their carriers
for the same reason.

:func:`tune_malloc` raises both bounds, so a freed buffer's pages serve the next one. The cost
is memory: up to ``TRIM_THRESHOLD`` freed bytes may stay with the process rather than go back
to the kernel. It changes the whole process, which is why nothing calls it unasked except
``pyerl-node run``.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("pyerl_node.malloc")

#: Allocations this big or bigger are mapped (and unmapped when freed) on their own.
MMAP_THRESHOLD = 64 << 20
#: Free memory at the top of the heap beyond this goes back to the kernel.
TRIM_THRESHOLD = 128 << 20

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Environment variables by which a user sets these bounds already; then they are left alone.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


class _Process:
    """Whether this process's thresholds were set by :func:`tune_malloc`."""

    tuned = False


def _user_chose() -> str | None:
    for name in USER_SETTINGS:
        if name in os.environ:
            return name
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "GLIBC_TUNABLES" if any(t in tunables for t in _TUNABLES) else None


def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr (Windows)
        return None
    return ctypes.CDLL(None)


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds to ``MMAP_THRESHOLD`` and ``TRIM_THRESHOLD``.

    True once they are set (by this call or an earlier one). False, and nothing changes, when
    the C library is not glibc or the environment sets either bound (``USER_SETTINGS``,
    ``GLIBC_TUNABLES``): the user's choice wins. Best called once, early.
    """
    if _Process.tuned:
        return True
    chosen = _user_chose()
    if chosen is not None:
        log.debug("malloc left as %s sets it", chosen)
        return False
    libc = _glibc()
    if libc is None:
        log.debug("malloc left alone: the C library is not glibc")
        return False
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        log.warning("glibc refused the malloc thresholds (mallopt failed)")
        return False
    _Process.tuned = True
    log.debug("malloc: mmap threshold %d MiB, trim threshold %d MiB",
              MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    return True
