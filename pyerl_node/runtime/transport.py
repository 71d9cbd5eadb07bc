"""The sockets under the channels: listening for peers as ``erl`` does, and dialling them.

Listening follows erl's defaults: every interface (``0.0.0.0``, or ``::`` with ``inet6_tcp``)
unless a listen host narrows it, on a port chosen by the OS or the first free one of a
``dist_port_min..dist_port_max`` range (erl's ``inet_dist_listen_min``/``max``). A node whose
name's host does not resolve to an address it listens on cannot be reached by anyone, which is
worth a warning at start (:func:`unreachable_name_warning`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pyerl_node.proto.errors import ErlNodeError


class ListenError(ErlNodeError):
    """The node cannot listen where it was asked to (address unknown, ports in use)."""


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """Where the node accepts distribution connections."""

    #: an address or host name; None listens on every interface, as erl does
    host: str | None = None
    #: erl's inet_dist_listen_min/max; 0..0 lets the OS pick a port
    port_min: int = 0
    port_max: int = 0
    #: inet6_tcp: IPv6 sockets (and ``::`` as "every interface")
    inet6: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.port_min <= 65535 and 0 <= self.port_max <= 65535):
            raise ListenError(f"distribution port range {self.port_min}..{self.port_max} "
                              "is outside 0..65535")
        if self.port_max and self.port_max < self.port_min:
            raise ListenError(f"distribution port range {self.port_min}..{self.port_max} "
                              "is empty")

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.inet6 else socket.AF_INET

    @property
    def bind_host(self) -> str:
        if self.host is not None:
            return self.host
        return "::" if self.inet6 else "0.0.0.0"

    def ports(self) -> range:
        """The ports to try in order (``range(0, 1)``: let the OS choose)."""
        if not self.port_min:
            return range(0, 1)
        return range(self.port_min, (self.port_max or self.port_min) + 1)


async def listen(factory: Callable[[], asyncio.Protocol], options: ListenOptions) -> asyncio.Server:
    """A server on the first port of ``options`` that is free; ListenError naming what failed."""
    loop = asyncio.get_running_loop()
    host = options.bind_host
    last: OSError | None = None
    for port in options.ports():
        try:
            return await loop.create_server(factory, host, port, family=options.family,
                                            reuse_address=True)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {host!r}: the address does not resolve "
                              f"({exc.strerror})") from exc
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise ListenError(f"cannot listen on {host!r} port {port}: "
                                  f"{exc.strerror or exc}") from exc
            last = exc
    span = options.ports()
    where = f"port {span.start}" if len(span) == 1 else f"ports {span.start}..{span[-1]}"
    raise ListenError(f"cannot listen on {host!r}: {where} in use") from last


def listened_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def unreachable_name_warning(host: str, options: ListenOptions) -> str | None:
    """Why peers will not reach a node named ``...@host`` listening as ``options``, or None.

    Peers connect to what the name's host resolves to; that must be an address of this machine
    (when listening on every interface) or the very address listened on. A host that does not
    resolve at all is an error (ListenError): nobody could ever connect to the node.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=options.family,
                                       type=socket.SOCK_STREAM)
    except OSError as exc:
        family = "IPv6" if options.inet6 else "IPv4"
        raise ListenError(f"the node's host {host!r} does not resolve to an {family} address "
                          f"({getattr(exc, 'strerror', None) or exc})") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    if options.host is None:
        if any(_is_local_address(a, options.family) for a in addresses):
            return None
        return (f"the node's host {host!r} resolves to {', '.join(addresses)}, "
                "which is no address of this machine")
    try:
        listened = {str(info[4][0]) for info in await loop.getaddrinfo(
            options.host, None, family=options.family, type=socket.SOCK_STREAM)}
    except OSError:
        listened = {options.host}
    if listened & set(addresses) or _unspecified(options.host):
        return None
    return (f"the node's host {host!r} resolves to {', '.join(addresses)} but the node "
            f"listens on {options.host} only: peers cannot reach it")


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _is_local_address(address: str, family: socket.AddressFamily) -> bool:
    """Whether ``address`` belongs to this machine (binding to it succeeds)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
