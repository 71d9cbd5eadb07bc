"""The public API: what ``import pyerl_node`` offers, what it hides, and that the blocking
facade has every verb of the asyncio one with the same arguments."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator

import pytest

import pyerl_node
from pyerl_node import sync
from pyerl_node.node import Node
from pyerl_node.runtime.process import Process

# Callbacks between the kernel and its channels and services: never part of the public Node.
INTERNAL = ("channel_up", "channel_down", "channel_failed", "dispatch", "fire_down",
            "send_down", "accept_decision", "connect_channel", "deliver_local", "signal_exit",
            "local_process", "connected_channel", "registry", "terminate", "run_process")


def public_members(cls: type) -> Iterator[tuple[str, object]]:
    for name, member in inspect.getmembers(cls):
        if not name.startswith("_"):
            yield name, member


def test_the_top_level_names() -> None:
    for name in ("Node", "GenServer", "Atom", "Pid", "Reference", "ErlNodeError", "NodeDown",
                 "NoProc", "ProcessExit", "CallTimeout", "RpcError", "DecodeError",
                 "AuthenticationError", "EpmdError", "ConnectionLost", "__version__"):
        assert hasattr(pyerl_node, name), name
    assert set(pyerl_node.__all__) <= set(dir(pyerl_node))
    assert pyerl_node.__version__[0].isdigit()


@pytest.mark.parametrize("name", INTERNAL)
def test_internal_callbacks_are_not_public(name: str) -> None:
    assert not hasattr(Node, name)


@pytest.mark.parametrize("cls", [Node, sync.Node, sync.Mailbox, Process, pyerl_node.GenServer])
def test_every_public_method_has_a_docstring(cls: type) -> None:
    missing = [name for name, member in public_members(cls)
               if (inspect.isfunction(member) or isinstance(member, property))
               and not (member.__doc__ or "").strip()]
    assert missing == []


def _verbs(cls: type) -> dict[str, inspect.Signature | str]:
    verbs: dict[str, inspect.Signature | str] = {}
    for name, member in public_members(cls):
        if isinstance(member, property):
            verbs[name] = "property"
        elif inspect.isfunction(member):
            verbs[name] = inspect.signature(member)
    return verbs


def _same_arguments(a: inspect.Signature, b: inspect.Signature) -> bool:
    def shape(sig: inspect.Signature) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]
    return shape(a) == shape(b)


# The blocking Node returns itself from start() and wraps mailboxes; the lifecycle differs only
# in being synchronous. Everything else has the same name and the same parameters.
def test_the_sync_node_has_every_verb_of_the_asyncio_node() -> None:
    asyncio_verbs, sync_verbs = _verbs(Node), _verbs(sync.Node)
    assert sorted(set(asyncio_verbs) - set(sync_verbs)) == []
    assert sorted(set(sync_verbs) - set(asyncio_verbs)) == []
    different = [name for name, sig in asyncio_verbs.items()
                 if not (sig == "property" == sync_verbs[name]
                         or (isinstance(sig, inspect.Signature)
                             and isinstance(sync_verbs[name], inspect.Signature)
                             and _same_arguments(sig, sync_verbs[name])))]  # type: ignore[arg-type]
    assert different == []


def test_the_sync_mailbox_has_every_verb_of_a_process() -> None:
    wanted = {name: sig for name, sig in _verbs(Process).items()
              if isinstance(sig, inspect.Signature) or name == "alive"}
    have = _verbs(sync.Mailbox)
    assert sorted(set(wanted) - set(have)) == []
    different = [name for name, sig in wanted.items()
                 if isinstance(sig, inspect.Signature)
                 and not _same_arguments(sig, have[name])]  # type: ignore[arg-type]
    assert different == []


def test_the_parity_check_sees_a_difference() -> None:
    class A:
        def verb(self, x: int, *, y: int = 1) -> None:
            """A verb."""

    class B:
        def verb(self, x: int, *, y: int = 2) -> None:
            """A verb."""

    assert not _same_arguments(_verbs(A)["verb"], _verbs(B)["verb"])  # type: ignore[arg-type]


def test_version_on_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "pyerl_node", "--version"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == f"pyerl-node {pyerl_node.__version__}"
