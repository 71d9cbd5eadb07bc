"""The README's quick start, run as it is printed, against a real iex.

The README's "Quick start" section holds three fenced blocks: the Python code, the command that
runs it with the line it prints, and the iex session. The code is saved to a file and run
unmodified (on the test's own EPMD port through ``ERL_EPMD_PORT``, with the default name
``py``); the session is typed into a real ``iex`` and every answer compared, as
``interop_tests/test_examples.py`` does for the examples. The three blocks must also be
exactly ``examples/quickstart.py``'s code and its docstring's walkthrough, so the README and
the example cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

from interop_tests.beam import Epmd
from interop_tests.conftest import require_release
from interop_tests.test_examples import (
    EXAMPLES,
    REPO,
    docstring,
    environment,
    literal_blocks,
    parse_block,
    perform,
    walkthrough,
)

QUICKSTART: Final = EXAMPLES / "quickstart.py"
_FENCE: Final = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def quick_start_blocks() -> dict[str, str]:
    """The fenced blocks of the README's Quick start section, by language."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for language, body in _FENCE.findall(section):
        assert language not in blocks, f"two {language} blocks in the quick start"
        blocks[language] = body.rstrip("\n")
    assert set(blocks) == {"python", "console", "elixir"}, sorted(blocks)
    return blocks


def code_after_docstring(path: Path) -> str:
    """A script's source without its module docstring."""
    source = path.read_text()
    first = ast.parse(source).body[0]
    assert isinstance(first, ast.Expr), f"{path} does not start with its docstring"
    assert first.end_lineno is not None
    return "\n".join(source.splitlines()[first.end_lineno:]).strip("\n")


def test_readme_quick_start_is_examples_quickstart() -> None:
    blocks = quick_start_blocks()
    assert blocks["python"] == code_after_docstring(QUICKSTART)
    walk = literal_blocks(docstring(QUICKSTART))
    assert blocks["console"].splitlines() == walk[0]
    assert blocks["elixir"].splitlines() == walk[1]


def test_readme_quick_start_runs_against_iex(epmd: Epmd, tmp_path: Path) -> None:
    require_release("25")
    blocks = quick_start_blocks()
    script = tmp_path / "quickstart.py"
    script.write_text(blocks["python"] + "\n")
    parsed = [parse_block(blocks[b].splitlines()) for b in ("console", "elixir")]
    steps, final = walkthrough(parsed, "iex")
    assert [s.who for s in steps if s.starts] == ["python", "iex"]
    perform(steps, final, environment(epmd, tmp_path),
            script_path={"examples/quickstart.py": str(script)})
