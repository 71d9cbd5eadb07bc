"""Node names: parsing peers' names, and building ours with erl's -name/-sname rules.

The make_node_name table is what real ``erl`` 25.2.3 and 28.5 did with the same arguments
on a machine whose host name is ``vm`` (no domain); both releases agreed on every case.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyerl_node.proto.errors import LocalProtocolError
from pyerl_node.proto.names import NodeName, NodeNameError, make_node_name, parse_node_name


def test_parse() -> None:
    name = parse_node_name("py@127.0.0.1")
    assert name == NodeName("py", "127.0.0.1")
    assert str(name) == name.full == "py@127.0.0.1"


@pytest.mark.parametrize("bad", ["py", "@host", "py@", "a@b@c", "", "@", "x@" + "h" * 254])
def test_parse_refuses(bad: str) -> None:
    with pytest.raises(NodeNameError) as info:
        parse_node_name(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LocalProtocolError)


@given(st.text(alphabet=st.characters(blacklist_characters="@"), min_size=1, max_size=60),
       st.text(alphabet=st.characters(blacklist_characters="@"), min_size=1, max_size=60))
def test_parse_round_trips(alive: str, host: str) -> None:
    assert parse_node_name(f"{alive}@{host}") == NodeName(alive, host)


@pytest.mark.parametrize(("host", "long"), [
    ("127.0.0.1", True), ("example.org", True), ("::1", True), ("vm", False),
    ("localhost", False),
])
def test_is_long(host: str, long: bool) -> None:
    assert NodeName("a", host).is_long is long


# (argument, long, what erl made of it: the node name, or None when it refused to start)
_ERL_BEHAVIOUR = [
    ("foo@127.0.0.1", True, "foo@127.0.0.1"),
    ("foo@localhost", True, "foo@localhost"),  # -name accepts an undotted explicit host
    ("foo@vm", True, "foo@vm"),
    ("foo@1.2", True, "foo@1.2"),
    ("foo@::1", True, "foo@::1"),
    ("foo", True, None),  # no domain to append to "vm"
    ("foo@", True, None),
    ("fo.o@127.0.0.1", True, None),  # the alive part must match [0-9A-Za-z_-]+
    ("f\u00e9@vm", True, None),
    ("foo@h st", True, None),
    ("f@a@b", True, None),
    ("foo", False, "foo@vm"),
    ("foo@", False, "foo@vm"),
    ("foo@vm", False, "foo@vm"),
    ("foo@LOCALHOST", False, "foo@LOCALHOST"),
    ("a-b_C9@vm", False, "a-b_C9@vm"),
    ("foo@h_st", False, "foo@h_st"),
    ("foo@::1", False, "foo@::1"),
    ("foo@127.0.0.1", False, None),  # -sname refuses a dotted host
    ("foo@a.b", False, None),
    ("@vm", False, None),
    ("f@a@b", False, None),
]


@pytest.mark.parametrize(("arg", "long", "expected"), _ERL_BEHAVIOUR)
def test_make_node_name_follows_erl(arg: str, long: bool, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NodeNameError):
            make_node_name(arg, long=long, hostname="vm")
    else:
        assert make_node_name(arg, long=long, hostname="vm").full == expected


def test_make_node_name_local_host() -> None:
    # erl splits the machine's name at the first dot: head for -sname, all of it for -name.
    assert make_node_name("py", long=False, hostname="box.example.org").full == "py@box"
    assert make_node_name("py", long=True, hostname="box.example.org").full == \
        "py@box.example.org"
    with pytest.raises(NodeNameError, match="no domain"):
        make_node_name("py", long=True, hostname="box")
    with pytest.raises(NodeNameError):
        make_node_name("py", long=False, hostname="10.1.2.3")


def test_make_node_name_defaults_to_this_machine() -> None:
    import platform
    short = platform.node().split(".", 1)[0]
    assert make_node_name("py", long=False).host == short
