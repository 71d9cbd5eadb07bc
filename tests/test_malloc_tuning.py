"""tune_malloc: a freed big buffer's pages serve the next one; the user's own settings and other
C libraries are left alone. Each case runs in a child process, as the settings are
process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyerl_node.runtime import malloc_tuning

# The minor page faults a 16 MiB buffer costs when it is made, filled and freed, made after
# one such buffer was freed: about 4096 (one per page) when its pages are fresh.
_CHILD = """
import json, resource, sys
from pyerl_node.runtime.malloc_tuning import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else None
def faults_of_one():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    data = b"\\x01" * (16 << 20)
    del data
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one()
print(json.dumps({"tuned": tuned, "again": tune_malloc() if tuned else None,
                  "faults": faults_of_one()}))
"""

glibc_only = pytest.mark.skipif(malloc_tuning._glibc() is None, reason="the C library is not glibc")


def _child(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items()
             if k not in malloc_tuning.USER_SETTINGS and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env={**clean, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


@glibc_only
def test_a_freed_big_buffer_is_reused_once_tuned() -> None:
    untuned = _child("default")
    tuned = _child("tune")
    assert tuned["tuned"] is True and tuned["again"] is True
    assert isinstance(untuned["faults"], int) and untuned["faults"] > 2048
    assert isinstance(tuned["faults"], int) and tuned["faults"] < 512


@glibc_only
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_the_users_own_settings_win(env: dict[str, str]) -> None:
    result = _child("tune", **env)
    assert result["tuned"] is False
    assert isinstance(result["faults"], int) and result["faults"] > 2048


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_glibc(name: str) -> str:
        raise ValueError(name)

    for name in (*malloc_tuning.USER_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(malloc_tuning._Process, "tuned", False)
    monkeypatch.setattr(os, "confstr", not_glibc)
    assert malloc_tuning.tune_malloc() is False
