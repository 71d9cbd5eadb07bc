"""A griffe extension for the docs build: Sphinx roles in docstrings become inline code.

The docstrings of pyerl_node name other objects the Sphinx way (:class:`Node`,
:func:`~pyerl_node.proto.safe_repr.safe_repr`); mkdocstrings renders docstrings as Markdown,
where such a role would show as literal text. This turns each into a code span (``~`` keeps
only the last dotted part, as Sphinx shows it). Loaded by ``mkdocs.yml``; not part of the
package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`(~?)([^`]+)`")


def _code(found: re.Match[str]) -> str:
    short, target = found.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
