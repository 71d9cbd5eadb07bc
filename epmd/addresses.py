"""Which addresses the EPMD daemon listens on, decided as OTP's epmd decides it.

* No list (no ``--address``, no ``$ERL_EPMD_ADDRESS``): every interface, IPv4 ``0.0.0.0``
  and IPv6 ``::``. The IPv6 socket is best effort: a host without IPv6 gets IPv4 only.
* A list (addresses separated by commas and/or spaces, numeric IPv4 or IPv6 only, as epmd
  parses them with ``inet_pton``): exactly those, plus the loopback addresses ``127.0.0.1``
  and ``::1``, which epmd always adds so that local nodes can register. The added ``::1``
  is best effort. A loopback is not added when the wildcard of its family is listed: the
  wildcard covers it, and binding both on one port would clash.

``listen_plan`` is pure; the server (``epmd.server``) binds the plan and skips best-effort
entries whose family or address the host does not have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyerl_node.proto.errors import EpmdError

IPV4_ANY = "0.0.0.0"
IPV6_ANY = "::"
IPV4_LOOPBACK = "127.0.0.1"
IPV6_LOOPBACK = "::1"


@dataclass(frozen=True)
class ListenAddress:
    """One address to listen on; ``required`` False means: skip it if the host lacks it."""

    host: str
    required: bool = True

    @property
    def ipv6(self) -> bool:
        return ":" in self.host


def split_address_list(text: str) -> list[str]:
    """The addresses of an ``-address`` / ``$ERL_EPMD_ADDRESS`` value (commas or spaces)."""
    return text.replace(",", " ").split()


def listen_plan(addresses: list[str] | None) -> list[ListenAddress]:
    """What to bind for ``addresses`` (``None`` or empty: all interfaces).

    Raises ``EpmdError`` for an entry that is not a numeric IPv4 or IPv6 address.
    """
    if not addresses:
        return [ListenAddress(IPV4_ANY), ListenAddress(IPV6_ANY, required=False)]
    plan: list[ListenAddress] = []
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in addresses:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise EpmdError(f"cannot parse IP address {text!r}") from None
        if addr not in seen:  # one socket per address, however often it is listed
            seen.add(addr)
            plan.append(ListenAddress(str(addr)))
    for loopback, wildcard in ((IPV4_LOOPBACK, IPV4_ANY), (IPV6_LOOPBACK, IPV6_ANY)):
        addr = ipaddress.ip_address(loopback)
        if addr in seen:
            continue
        covered = ipaddress.ip_address(wildcard) in seen
        if not covered:
            plan.append(ListenAddress(loopback, required=loopback == IPV4_LOOPBACK))
    return plan
