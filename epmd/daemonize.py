"""Detach the EPMD server from the process that started it, as ``epmd -daemon`` does.

``detach()`` forks twice (the classic POSIX daemon): the first child starts a new session
(``setsid``, so no terminal's hangup or Ctrl-C reaches it) and forks the daemon, then exits;
the daemon is thus nobody's child but init's (or the nearest subreaper's) and outlives its
starter. The daemon moves to ``/``, points stdin, stdout and stderr to ``/dev/null`` and
closes every other descriptor it inherited.

Unlike epmd, the starter does not return at once: it waits, bounded, until the daemon reports
over a pipe that it listens (``Readiness.ready``) or why it cannot (``Readiness.failed``),
so that ``python -m epmd --daemon`` exits 0 only with a daemon that accepts connections, and
1 with the reason otherwise. A daemon whose starter gave up waiting finds the pipe closed and
exits: nobody would know its pid.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from pathlib import Path

READY_TIMEOUT = 30.0  # the starter's bound on the daemon's binding of its sockets


class Readiness:
    """The daemon's end of the pipe to its starter: report once, then it is closed."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def ready(self) -> bool:
        """Report ``ready <pid>``; False if the starter is gone (the daemon should exit)."""
        return self._send(f"ready {os.getpid()}\n")

    def failed(self, message: str) -> None:
        self._send(f"error {' '.join(message.split())}\n")

    def _send(self, line: str) -> bool:
        fd, self._fd = self._fd, None
        if fd is None:
            return False
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        except OSError:  # EPIPE: the starter stopped waiting
            return False
        finally:
            os.close(fd)
        return True


def detach(*, print_pid: bool, timeout: float = READY_TIMEOUT) -> Readiness:
    """Become a daemon. Returns only in the daemon; the starter exits with its report."""
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first:
        os.close(write_fd)
        os.waitpid(first, 0)  # the intermediate child exits at once: no zombie left
        status, text = _await_report(read_fd, timeout)
        stream = sys.stdout if status == 0 else sys.stderr
        if status or print_pid:
            print(text, file=stream, flush=True)
        raise SystemExit(status)
    # Intermediate child: own session, then the daemon; exit without Python's cleanup.
    os.close(read_fd)
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
    except OSError:
        os._exit(1)  # the starter then reports that the daemon exited before listening
    os.chdir("/")  # do not keep the starter's working directory busy
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    # Nor any other descriptor the starter inherited (a pipe someone reads to its end).
    os.closerange(3, write_fd)
    os.closerange(write_fd + 1, os.sysconf("SC_OPEN_MAX"))
    return Readiness(write_fd)


def _await_report(fd: int, timeout: float) -> tuple[int, str]:
    """(exit status, text to print) from what the daemon says within ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    with contextlib.closing(os.fdopen(fd, "rb", buffering=0)) as pipe:
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                return 1, f"epmd: the daemon did not start listening within {timeout:g}s"
            chunk = pipe.read(4096)
            if not chunk:
                break
            data += chunk
    kind, _, rest = data.decode("utf-8", "replace").strip().partition(" ")
    if kind == "ready":
        return 0, rest
    if kind == "error":
        return 1, f"epmd: {rest}"
    return 1, "epmd: the daemon exited before it listened"


def write_pidfile(path: Path) -> None:
    path.write_text(f"{os.getpid()}\n", encoding="ascii")


def remove_pidfile(path: Path) -> None:
    """Remove ``path`` if it still names this process (a successor may have replaced it)."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="ascii").strip() == str(os.getpid()):
            path.unlink()
