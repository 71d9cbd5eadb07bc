"""Every script in ``examples/`` run as its docstring says, against a real ``iex`` or ``erl``.

The module docstring of an example is its walkthrough, and this test performs it. Its literal
blocks (lines indented by four spaces) hold steps:

* ``$ iex ...`` / ``$ erl ...`` starts that shell (the command line as written; the harness
  adds only its isolation: the test's EPMD port, ``-start_epmd false`` and a distribution
  listener on 127.0.0.1, through ``ERL_EPMD_PORT`` and ``ERL_AFLAGS``, and its own ``HOME``);
* ``iex> ...`` / ``1> ...`` is a line typed into it (``...> `` lines continue it); the lines
  below it, if any, are what the shell must answer (a line with none is typed and its answer
  not compared);
* ``$ python examples/x.py`` runs the example; the lines below it must appear in its output,
  in that order;
* a block of lines only (no command, no prompt) is output the script must have printed by the
  end, wherever it appeared.

In expected text ``<host>`` is this machine's short host name, ``...`` matches anything, pids
match any pid and runs of white space any white space. An iex-side block belongs to the iex
walkthrough, an erl-side one to the erl walkthrough; a ``$ python`` block belongs to the
walkthrough of the shell block before it, or to every walkthrough when it comes first. The iex
walkthrough runs on Debian's Elixir (OTP 25), the erl one on OTP 28. Every script must end
with status 0 and no traceback: after the SIGINT a Ctrl-C sends when its documented output
says "Ctrl-C stops it", else on its own.

Shells read their input from a pipe, line by line: each line is written once the shell's
prompt is back, as a person would type it. Every process is stopped by its pid.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import pytest

from interop_tests.beam import LOCALHOST, Epmd, OsProcess, clean_env, short_hostname
from interop_tests.conftest import require_release
from interop_tests.runtimes import find_elixir, find_erl

REPO: Final = Path(__file__).resolve().parent.parent
EXAMPLES: Final = REPO / "examples"
SHELLS: Final = ("iex", "erl")
#: the OTP release each shell's walkthrough runs on
RELEASE: Final = {"iex": "25", "erl": "28"}
PROMPT: Final = {
    "iex": re.compile(r"(?:iex|\.\.\.)\([^()\s]*\)\d+> "),
    "erl": re.compile(r"\([^()\s]*\)\d+> "),
}
STEP_TIMEOUT: Final = 30.0
# erl flags for a shell typed into: the test's EPMD only, the distribution on 127.0.0.1 only
ISOLATION: Final = ("-start_epmd false -kernel inet_dist_use_interface "
                    f"{{{LOCALHOST.replace('.', ',')}}}")
_INPUT: Final = {"iex": re.compile(r"iex> (.*)"), "erl": re.compile(r"\d+> (.*)")}
_CONTINUED: Final = re.compile(r"\.\.\.> (.*)")
_TOKEN: Final = re.compile(r"(\.\.\.|<host>|#PID<\d+\.\d+\.\d+>|<\d+\.\d+\.\d+>|\s+)")
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Step:
    """One line of a walkthrough: who acts (python, iex, erl), whether it starts a program or
    types into one, and the lines expected in answer."""

    who: str
    text: str
    starts: bool
    expected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """A literal block: its steps, or (when it has none) output the script prints."""

    steps: tuple[Step, ...]
    output: tuple[str, ...]

    @property
    def shell(self) -> str | None:
        """The shell this block talks to, if any."""
        return next((s.who for s in self.steps if s.who in SHELLS), None)


def parse_step(line: str) -> Step | None:
    """The step a line of a literal block starts, or None for an expected-output line."""
    if line.startswith("$ "):
        program = shlex.split(line[2:])[0]
        who = "python" if program == "python" else program
        if who not in (*SHELLS, "python"):
            raise ValueError(f"unknown program in {line!r}")
        return Step(who, line[2:], starts=True)
    for shell, pattern in _INPUT.items():
        found = pattern.fullmatch(line)
        if found:
            return Step(shell, found.group(1), starts=False)
    return None


def parse_block(lines: list[str]) -> Block:
    """Steps from the (dedented) lines of one literal block."""
    steps: list[Step] = []
    output: list[str] = []
    for line in lines:
        step = parse_step(line)
        continued = _CONTINUED.fullmatch(line)
        if step is not None:
            steps.append(step)
        elif continued and steps and not steps[-1].starts and not steps[-1].expected:
            last = steps[-1]
            steps[-1] = Step(last.who, f"{last.text}\n{continued.group(1)}", starts=False)
        elif steps:
            last = steps[-1]
            steps[-1] = Step(last.who, last.text, last.starts, (*last.expected, line))
        else:
            output.append(line)
    if steps and output:
        raise ValueError(f"output before the first step of a block: {output!r}")
    return Block(tuple(steps), tuple(output))


def literal_blocks(doc: str) -> list[list[str]]:
    """The literal blocks of a docstring: runs of lines indented by four spaces, dedented."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in doc.splitlines():
        if line.startswith("    ") and line.strip():
            current.append(line[4:].rstrip())
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def docstring(path: Path) -> str:
    """The module docstring of a script."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=True)
    if not doc:
        raise ValueError(f"{path} has no module docstring")
    return doc


def example_blocks(path: Path) -> list[Block]:
    """The literal blocks of an example's docstring, parsed."""
    return [parse_block(lines) for lines in literal_blocks(docstring(path))]


def walkthrough(blocks: list[Block], shell: str) -> tuple[list[Step], list[str]]:
    """The steps of the ``shell`` walkthrough, and the output expected by its end."""
    steps: list[Step] = []
    final: list[str] = []
    last_shell: str | None = None
    for block in blocks:
        if not block.steps:
            final.extend(block.output)
        elif block.shell is not None:
            last_shell = block.shell
            if block.shell == shell:
                steps.extend(block.steps)
        elif last_shell in (None, shell):
            steps.extend(block.steps)
    return steps, final


def shells_of(blocks: list[Block]) -> list[str]:
    """The shells an example has a walkthrough for."""
    return [s for s in SHELLS if any(b.shell == s for b in blocks)]


def expected_pattern(lines: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """A regex for expected text: ``<host>``, ``...``, pids and white space as described."""
    parts: list[str] = []
    for token in _TOKEN.split("\n".join(lines).strip()):
        if token == "...":
            parts.append(".*?")
        elif token == "<host>":
            parts.append(re.escape(short_hostname()))
        elif token.startswith("#PID<"):
            parts.append(r"#PID<\d+\.\d+\.\d+>")
        elif re.fullmatch(r"<\d+\.\d+\.\d+>", token):
            parts.append(r"<\d+\.\d+\.\d+>")
        elif token.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts), re.DOTALL)


class Output:
    """What a child prints, gathered by a thread; waits are bounded."""

    def __init__(self, proc: OsProcess) -> None:
        self.text = ""
        self._changed = threading.Condition()
        stream = proc.proc.stdout
        assert stream is not None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                with self._changed:
                    self.text += _ANSI.sub("", chunk.decode("utf-8", "replace")).replace("\r", "")
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], start: int, timeout: float,
                 what: str) -> re.Match[str]:
        """The first match of ``pattern`` at or after ``start``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = pattern.search(self.text, start)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"{what} not seen within {timeout} s; output:\n"
                                         f"{self.text[-3000:]}")
                self._changed.wait(left)

    def close(self) -> None:
        self._thread.join(5)


def close_stdin(proc: OsProcess) -> None:
    """End a child's input (both shells halt on it)."""
    stdin = proc.proc.stdin
    if stdin is not None:
        with contextlib.suppress(OSError):
            stdin.close()


class Shell:
    """A real iex or erl, typed into line by line through a pipe."""

    def __init__(self, kind: str, command: str, env: dict[str, str]) -> None:
        args = shlex.split(command)
        args[0] = str(program(kind))
        self.kind = kind
        self.proc = OsProcess(args, env, pipes=True)
        self.out = Output(self.proc)
        self.at = self.out.wait_for(PROMPT[kind], 0, STEP_TIMEOUT, f"{kind} prompt").end()

    def type(self, text: str) -> str:
        """Type ``text`` line by line, each once the prompt is back; what the shell answered
        after the last line, before its next prompt."""
        stdin = self.proc.proc.stdin
        assert stdin is not None
        answer = ""
        for line in text.split("\n"):
            stdin.write(line.encode() + b"\n")
            stdin.flush()
            prompt = self.out.wait_for(PROMPT[self.kind], self.at, STEP_TIMEOUT,
                                       f"{self.kind} prompt after {line!r}")
            answer = self.out.text[self.at:prompt.start()]
            self.at = prompt.end()
        return answer.strip()

    def stop(self) -> None:
        close_stdin(self.proc)
        if not self.proc.wait(10):
            self.proc.terminate()
        self.out.close()


class Script:
    """An example run as ``python examples/x.py``, its output gathered."""

    def __init__(self, command: str, env: dict[str, str], *, runs_until_stopped: bool) -> None:
        self.runs_until_stopped = runs_until_stopped
        _python, script, *args = shlex.split(command)
        path = Path(script) if Path(script).is_absolute() else REPO / script
        self.proc = OsProcess([sys.executable, "-u", str(path), *args], env, pipes=True)
        self.out = Output(self.proc)
        self.at = 0

    def expect(self, lines: tuple[str, ...] | list[str], *, in_order: bool = True) -> None:
        """Wait until each of ``lines`` is printed (a whole line), in order."""
        start = self.at
        for line in lines:
            pattern = re.compile(r"^" + expected_pattern([line]).pattern + r"$", re.MULTILINE)
            found = self.out.wait_for(pattern, start, STEP_TIMEOUT, f"script line {line!r}")
            start = found.end()
        if in_order:
            self.at = start

    def finish(self) -> int | None:
        """Its exit status once it ended: after a SIGINT (Ctrl-C) if it runs until stopped, on
        its own otherwise (None if it had to be killed)."""
        close_stdin(self.proc)
        if self.runs_until_stopped:
            self.proc.signal(signal.SIGINT)
        if not self.proc.wait(20):
            self.proc.kill()
            self.out.close()
            return None
        self.out.close()
        return self.proc.proc.returncode


def program(kind: str) -> Path:
    """The executable of a shell: Debian's iex (OTP 25), or OTP 28's erl."""
    if kind == "iex":
        elixir = find_elixir()
        iex = shutil.which("iex") if elixir is None else elixir.parent / "iex"
        if iex is None or not Path(iex).exists():
            pytest.skip("iex is not installed")
        return Path(iex)
    erl = find_erl(RELEASE[kind])
    if erl is None:
        pytest.skip(f"OTP {RELEASE[kind]} is not installed")
    return erl


def environment(epmd: Epmd, home: Path) -> dict[str, str]:
    """The environment of every program a walkthrough starts: the test's EPMD and home."""
    env = {k: v for k, v in clean_env().items() if k not in ("PYERL_NAME", "PYERL_COOKIE")}
    return env | {"ERL_EPMD_PORT": str(epmd.port), "HOME": str(home), "ERL_AFLAGS": ISOLATION}


def perform(steps: list[Step], final: list[str], env: dict[str, str],
            script_path: dict[str, str] | None = None) -> None:
    """Carry out a walkthrough and check every documented answer. ``script_path`` maps a
    script named in a ``$ python`` line to the file to run instead (the README's code)."""
    shells: dict[str, Shell] = {}
    scripts: list[Script] = []
    try:
        for step in steps:
            if step.who == "python":
                command = step.text
                for name, path in (script_path or {}).items():
                    command = command.replace(name, path)
                stoppable = any("Ctrl-C stops it" in line for line in step.expected)
                scripts.append(Script(command, env, runs_until_stopped=stoppable))
                scripts[-1].expect(step.expected)
            elif step.starts:
                shells[step.who] = Shell(step.who, step.text, env)
            else:
                answer = shells[step.who].type(step.text)
                if step.expected:
                    assert expected_pattern(step.expected).fullmatch(answer), (
                        f"{step.who}> {step.text}\nexpected: {chr(10).join(step.expected)}\n"
                        f"got:      {answer}")
                else:
                    assert "** " not in answer, f"{step.who}> {step.text} failed: {answer}"
        assert scripts, "the walkthrough never runs the example"
        scripts[-1].expect(final, in_order=False)
    finally:
        for shell in shells.values():
            shell.stop()
        statuses = [(script.finish(), script.out.text) for script in scripts]
    for status, text in statuses:
        assert "Traceback" not in text, text
        assert status == 0, f"exit status {status}; output:\n{text}"


def walkthroughs() -> Iterator[object]:
    for path in sorted(EXAMPLES.glob("*.py")):
        for shell in shells_of(example_blocks(path)):
            yield pytest.param(path, shell, id=f"{path.stem}-{shell}")


def test_every_example_has_a_walkthrough() -> None:
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert {"quickstart", "messaging", "genserver_counter", "rpc_into_beam", "global_name",
            "mesh", "sync_script"} <= set(names)
    for path in EXAMPLES.glob("*.py"):
        blocks = example_blocks(path)
        assert shells_of(blocks), f"{path.name}: no iex or erl walkthrough in its docstring"
        for shell in shells_of(blocks):
            steps, _ = walkthrough(blocks, shell)
            assert any(s.who == "python" for s in steps), f"{path.name} ({shell}): no $ python"


def test_the_parser_reads_a_walkthrough() -> None:
    doc = ("Run::\n\n    $ python examples/x.py\n    ready on py@<host>\n\nthen::\n\n"
           "    $ iex --sname me\n    iex> 1 +\n    ...> 1\n    2\n    iex> :ok\n\nor::\n\n"
           "    $ erl -sname me\n    1> self().\n    <0.90.0>\n\nPrints::\n\n    done\n")
    blocks = [parse_block(lines) for lines in literal_blocks(doc)]
    iex_steps, final = walkthrough(blocks, "iex")
    assert [(s.who, s.text, s.expected) for s in iex_steps] == [
        ("python", "python examples/x.py", ("ready on py@<host>",)),
        ("iex", "iex --sname me", ()), ("iex", "1 +\n1", ("2",)), ("iex", ":ok", ())]
    assert final == ["done"]
    erl_steps, _ = walkthrough(blocks, "erl")
    assert [s.text for s in erl_steps] == ["python examples/x.py", "erl -sname me", "self()."]
    assert expected_pattern(["<0.90.0>"]).fullmatch("<12345.7.0>")
    assert expected_pattern(["{#PID<0.1.0>, :hi}"]).fullmatch("{#PID<9.9.9>,\n :hi}")
    assert not expected_pattern(["2"]).fullmatch("3")
    assert expected_pattern(["OTP ..."]).fullmatch("OTP 28")


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("path", "shell"), list(walkthroughs()))
def test_example_walkthrough(path: Path, shell: str, epmd: Epmd, tmp_path: Path) -> None:
    require_release(RELEASE[shell])
    steps, final = walkthrough(example_blocks(path), shell)
    perform(steps, final, environment(epmd, tmp_path))
