"""Node names: ``alive@host`` (docs/protocol/distribution.md §3.4, §3.7; erl's ``-name`` /
``-sname`` rules).

Two functions, two strictness levels, both following OTP:

* ``parse_node_name`` accepts what ``dist_util:is_node_name/1`` accepts from a peer: exactly
  one ``@`` with a non-empty part on each side.
* ``make_node_name`` builds our own name the way ``net_kernel:create_name`` does for
  ``erl -name``/``-sname`` (checked against real erl 25 and 28): the alive part must match
  ``[0-9A-Za-z_-]+``; a bare name gets this machine's host (the short host name for
  ``-sname``, a dotted one for ``-name``); ``-sname`` refuses a dotted host. ``-name`` takes
  an explicit host as given, dotted or not (``erl -name a@localhost`` starts) -- but other
  long-name nodes only dial dotted hosts or IP addresses (``inet_tcp_dist:splitnode``), which
  is what ``NodeName.is_long`` reports.
"""

from __future__ import annotations

import ipaddress
import platform
import re
from dataclasses import dataclass

from pyerl_node.proto.errors import LocalProtocolError

# An atom holds at most 255 characters, and a node name is an atom.
_MAX_NAME = 255
_ALIVE_RE = re.compile(r"[0-9A-Za-z_\-]+")
# net_kernel:validate_hostname/1: every character in '!'..'\xff' (no space, no control).
_HOST_RE = re.compile(r"[!-\xff]+")


class NodeNameError(LocalProtocolError, ValueError):
    """A node name that OTP would refuse; the message says which rule it breaks."""


@dataclass(frozen=True)
class NodeName:
    """A node name split at its ``@``."""

    alive: str
    host: str

    @property
    def full(self) -> str:
        return f"{self.alive}@{self.host}"

    @property
    def is_long(self) -> bool:
        """Whether a long-name (``-name``) node can dial it: a dotted host or an IP address."""
        if "." in self.host:
            return True
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return self.full


def parse_node_name(name: str) -> NodeName:
    """Split ``"alive@host"``; NodeNameError unless it has one ``@`` and both parts."""
    parts = name.split("@")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise NodeNameError(f"node name {name!r} is not of the form name@host")
    if len(name) > _MAX_NAME:
        raise NodeNameError(f"node name {name[:40]!r}... is longer than {_MAX_NAME} characters")
    return NodeName(parts[0], parts[1])


def make_node_name(name: str, *, long: bool, hostname: str | None = None) -> NodeName:
    """Our node name from an ``erl -name`` (``long``) or ``-sname`` argument.

    ``hostname`` is this machine's host name, used only when ``name`` has no host part;
    by default the operating system's (``platform.node()``).
    """
    option = "-name" if long else "-sname"
    alive, _, host = name.partition("@")
    if "@" in host:
        raise NodeNameError(f"invalid node name {name!r}: more than one '@'")
    if not _ALIVE_RE.fullmatch(alive):
        raise NodeNameError(
            f"invalid node name {name!r}: the part before '@' must match [0-9A-Za-z_-]+"
        )
    if not host:
        host = _local_host(hostname if hostname is not None else platform.node(), long=long)
    elif not _HOST_RE.fullmatch(host):
        raise NodeNameError(f"invalid host {host!r} in {name!r}: spaces or non-Latin-1")
    elif not long and "." in host:
        raise NodeNameError(f"{option} {name!r}: a short name cannot have a dotted host")
    return parse_node_name(f"{alive}@{host}")


def _local_host(hostname: str, *, long: bool) -> str:
    # erl splits the host name at its first dot: the head is the short name, head.domain
    # the long one (and erl -name fails on a machine whose host name has no domain).
    if long:
        if "." not in hostname:
            raise NodeNameError(
                f"-name: host name {hostname!r} has no domain; give name@host explicitly"
            )
        return hostname
    short = hostname.split(".", 1)[0]
    if not short or _is_ipv4(hostname):
        raise NodeNameError(f"-sname: cannot derive a short host name from {hostname!r}")
    return short


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False
