"""The build of pyerl-node beyond ``pyproject.toml``: its optional compiled codec core.

``pyerl_node/proto/_cetf.c`` becomes the extension ``pyerl_node.proto._cetf`` when the machine
has a C compiler and Python's headers. Without them (or with ``PYERL_NODE_PURE=1`` set for
the install) the package installs as pure Python, complete and only slower, and the build
says so; ``python -c "import pyerl_node; print(pyerl_node.compiled)"`` tells which one an
installation runs (:mod:`pyerl_node.proto.native`).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PURE = os.environ.get("PYERL_NODE_PURE", "").strip() not in ("", "0")

FALLBACK = """
==========================================================================================
pyerl-node: the compiled codec core (pyerl_node.proto._cetf) could not be built:
    {error}
The package is installed as pure Python: it works the same, its term codec is slower.
To compile it, install a C compiler and the Python headers (Debian/Ubuntu: apt-get install
gcc python3-dev) and reinstall. pyerl_node.compiled says which one runs.
==========================================================================================
"""


class OptionalBuildExt(build_ext):
    """``build_ext`` that lets the package install without its extension when it cannot be
    compiled: no compiler at all (``run``) or a failing compile (``build_extension``)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _fall_back(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _fall_back(exc)


def _fall_back(exc: Exception) -> None:
    print(FALLBACK.format(error=f"{type(exc).__name__}: {exc}".strip()), file=sys.stderr)


if PURE:
    print("pyerl-node: PYERL_NODE_PURE is set: installing the pure-Python package only",
          file=sys.stderr)

setup(
    ext_modules=[] if PURE else [
        Extension("pyerl_node.proto._cetf", ["pyerl_node/proto/_cetf.c"]),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
