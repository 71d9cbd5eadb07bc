"""Test hosts as Linux network namespaces: a private LAN of named hosts on one machine.

How a lab is built (``Lab.build(["h1", "h2"])``, root only):

* a namespace ``<prefix>-br`` holding one bridge (``br0``); ``<prefix>`` is ``mh`` plus random
  hex, so concurrent runs never share a name;
* per host a namespace ``<prefix>-<host>`` joined to the bridge by a veth pair: ``p-<host>`` on
  the bridge side, ``eth0`` on the host side. Nothing is created in the machine's own network
  namespace, so the lab cannot disturb (or be reached from) the real network;
* addresses on ``eth0``: ``10.213.X.N/24`` (X random per run, checked against the machine's
  own routes and addresses) and ``<ula>::N/64`` from a random RFC 4193 prefix, added with
  ``nodad`` so it is usable at once; loopback up;
* ``/etc/netns/<ns>/hosts``, which ``ip netns exec`` bind-mounts over ``/etc/hosts``: every
  host's ``<host>.multihost.test`` and ``<host>`` on both its IPv4 and IPv6 address;
* one EPMD per host on 4369, listening on every address of its namespace: the real OTP
  ``epmd`` in the foreground (not ``-daemon``: we keep its pid to stop it) or the Python one
  (``python -m epmd``).

A program runs on a host through :meth:`Lab.command`: ``ip netns exec NS unshare --uts sh -c
'hostname H && exec "$@"'``; every step ``exec``s, so the pid we hold is the program's own and
``erl -sname x`` inside picks ``x@H``. The test process itself stays outside; it opens sockets
inside a namespace with :func:`netns_socket` (a thread that ``setns``'s, since a socket keeps
the namespace it was made in).

A partition takes a host's bridge-side veth down: its packets are dropped silently, as when a
cable is cut (no RST, no route change inside the host), so only the distribution tick notices.

``destroy()`` stops the EPMDs by pid, deletes the namespaces (which takes the veths with them)
and the ``/etc/netns`` entries. It runs from test finalizers and, for labs still alive when the
interpreter exits, from ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import enum
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from interop_tests.beam import BeamStartError, OsProcess
from interop_tests.runtimes import epmd_binary

DOMAIN: Final = "multihost.test"
EPMD_PORT: Final = 4369
_NETNS_RUN: Final = Path("/run/netns")
_NETNS_ETC: Final = Path("/etc/netns")
_CLONE_NEWNET: Final = 0x40000000
_IP_TIMEOUT: Final = 10.0
_EPMD_WAIT: Final = 10.0

_ROUTE_TYPES: Final = frozenset({"unicast", "local", "broadcast", "multicast", "anycast",
                                  "unreachable", "blackhole", "prohibit", "throw", "nat"})

_T = TypeVar("_T")


class EpmdKind(enum.Enum):
    """Which EPMD a lab runs on every host."""

    OTP = "otp"  # the real epmd of OTP 25 (or 28)
    PYTHON = "python"  # this repo's epmd package


class LabUnavailableError(Exception):
    """Namespaces cannot be made here; the message says why (the suite skips with it)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot build a lab (not root, no ``ip``/``unshare``), or None."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs this suite as root)"
    for tool in ("ip", "unshare", "sh", "hostname"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    probe = f"mhprobe{secrets.token_hex(4)}"
    try:
        _ip("netns", "add", probe)
    except LabUnavailableError as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Host:
    """One test host: its host name, namespace and addresses."""

    name: str
    netns: str
    ipv4: str
    ipv6: str
    bridge_port: str  # its veth in the bridge namespace

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"


class Lab:
    """A bridge and hosts in namespaces, one EPMD each; build with :meth:`build`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bridge_ns = f"{prefix}-br"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._etc_dirs: list[Path] = []
        self._made_etc_root = False
        self._epmds: dict[str, OsProcess] = {}
        self._destroyed = False

    @classmethod
    def build(cls, names: Sequence[str], *, epmd: EpmdKind = EpmdKind.OTP) -> Lab:
        """A lab with hosts ``names`` (``[a-z][a-z0-9]*``), all reachable, EPMDs answering."""
        reason = unavailable_reason()
        if reason is not None:
            raise LabUnavailableError(reason)
        lab = cls(f"mh{secrets.token_hex(3)}")
        _live_labs.add(lab)
        try:
            lab._make(names, epmd)
        except BaseException:
            lab.destroy()
            raise
        return lab

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host``: its namespace, its /etc/hosts, its own host name."""
        h = self.hosts[host]
        # "$@" keeps every argument intact, however it is quoted
        return ["ip", "netns", "exec", h.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', h.name, *argv]

    def partition(self, host: str) -> None:
        """Cut ``host`` off the bridge: its traffic is dropped both ways from now on."""
        _ip("-n", self.bridge_ns, "link", "set", self.hosts[host].bridge_port, "down")

    def heal(self, host: str, timeout: float = 10.0) -> float:
        """Put ``host`` back on the bridge; return once traffic flows (the seconds it took).

        The link is up at once, but the kernel may hold the first packets for up to a second
        after the carrier returns; waiting for a TCP handshake to another host's EPMD keeps
        that out of the scenarios' reconnect times.
        """
        start = time.monotonic()
        _ip("-n", self.bridge_ns, "link", "set", self.hosts[host].bridge_port, "up")
        peer = next((h for h in self.hosts.values() if h.name != host), None)
        if peer is None:
            return 0.0
        while not _tcp_reaches(self.hosts[host].netns, (peer.ipv4, EPMD_PORT)):
            if time.monotonic() - start > timeout:
                raise LabUnavailableError(f"{host} is back on the bridge but reaches no one "
                                     f"after {timeout}s")
        return time.monotonic() - start

    def link_up(self, host: str) -> bool:
        """Whether ``host``'s bridge port is administratively up."""
        out = _ip("-n", self.bridge_ns, "-o", "link", "show", self.hosts[host].bridge_port)
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
        return "UP" in flags

    def epmd_pid(self, host: str) -> int:
        return self._epmds[host].pid

    def destroy(self) -> None:
        """Stop the EPMDs, delete namespaces and /etc/netns entries. Idempotent, bounded."""
        if self._destroyed:
            return
        self._destroyed = True
        errors: list[Exception] = []
        for proc in self._epmds.values():
            try:
                proc.terminate()
            except Exception as exc:  # clean up the rest anyway, then report
                errors.append(exc)
        for ns in reversed(self._namespaces):
            try:
                _ip("netns", "del", ns)
            except LabUnavailableError as exc:
                errors.append(exc)
        for etc in self._etc_dirs:
            shutil.rmtree(etc, ignore_errors=True)
        if self._made_etc_root:
            with contextlib.suppress(OSError):  # another lab may be using it: keep it then
                _NETNS_ETC.rmdir()
        _live_labs.discard(self)
        if errors:
            raise errors[0]

    # -- building -----------------------------------------------------------------------------

    def _make(self, names: Sequence[str], epmd: EpmdKind) -> None:
        net4, net6 = _pick_networks()
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            if not name.isalnum() or not name[0].isalpha() or name != name.lower():
                raise ValueError(f"host name {name!r}: use [a-z][a-z0-9]*")
            self.hosts[name] = Host(name, f"{self.prefix}-{name}", str(net4[index]),
                                    str(net6[index]), f"p-{name}")
        for host in self.hosts.values():
            self._add_host(host)
        hosts_file = _hosts_file(self.hosts.values())
        self._made_etc_root = not _NETNS_ETC.exists()
        for host in self.hosts.values():
            etc = _NETNS_ETC / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            self._etc_dirs.append(etc)
            (etc / "hosts").write_text(hosts_file)
        for host in self.hosts.values():
            self._epmds[host.name] = self._start_epmd(host, epmd)

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _add_host(self, host: Host) -> None:
        self._add_ns(host.netns)
        _ip("-n", self.bridge_ns, "link", "add", host.bridge_port, "type", "veth",
            "peer", "name", "eth0", "netns", host.netns)
        _ip("-n", self.bridge_ns, "link", "set", host.bridge_port, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.ipv4}/24", "dev", "eth0")
        _ip("-n", host.netns, "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")
        _ip("-n", host.netns, "link", "set", "eth0", "up")

    def _start_epmd(self, host: Host, kind: EpmdKind) -> OsProcess:
        if kind is EpmdKind.OTP:
            binary = epmd_binary("25") or epmd_binary("28")
            if binary is None:
                raise BeamStartError("no OTP epmd binary (neither OTP 25 nor 28 is installed)")
            argv = [str(binary), "-port", str(EPMD_PORT)]  # every address: peers ask it
        else:
            argv = [sys.executable, "-m", "epmd", "--port", str(EPMD_PORT),
                    "--address", "0.0.0.0,::"]
        env = {k: v for k, v in os.environ.items() if k != "ERL_EPMD_PORT"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        proc = OsProcess(self.command(host.name, argv), env, pipes=False)
        deadline = time.monotonic() + _EPMD_WAIT
        while time.monotonic() < deadline and proc.alive():
            if _epmd_answers(host.netns):
                return proc
            time.sleep(0.02)
        proc.terminate()
        raise BeamStartError(f"{kind.value} epmd did not come up on {host.name}")


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True,
                              timeout=_IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabUnavailableError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise LabUnavailableError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _hosts_file(hosts: Iterable[Host]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host in hosts:
        lines.append(f"{host.ipv4}\t{host.fqdn} {host.name}")
        lines.append(f"{host.ipv6}\t{host.fqdn} {host.name}")
    return "\n".join(lines) + "\n"


def _machine_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network the machine routes or has an address in, default routes excepted."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for family in ("-4", "-6"):
        for line in _ip(family, "route", "show", "table", "all").splitlines():
            words = [w for w in line.split() if w not in _ROUTE_TYPES]
            with contextlib.suppress(ValueError, IndexError):
                if words[0] != "default":
                    nets.append(ipaddress.ip_network(words[0], strict=False))
        for line in _ip(family, "-o", "addr", "show").splitlines():
            with contextlib.suppress(ValueError, IndexError):
                nets.append(ipaddress.ip_interface(line.split()[3]).network)
    return nets


def _pick_networks() -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """A 10.213.X.0/24 and an fdXX:...::/64 that the machine itself does not use."""
    taken = _machine_networks()
    for _attempt in range(50):
        net4 = ipaddress.IPv4Network(f"10.213.{secrets.randbelow(254) + 1}.0/24")
        # RFC 4193: fd00::/8 plus a random 40-bit global ID, subnet 0
        net6 = ipaddress.IPv6Network(((0xFD << 120) | (secrets.randbits(40) << 80), 64))
        if not any(net.version == n.version and net.overlaps(n)
                   for net in (net4, net6) for n in taken):
            return net4, net6
    raise LabUnavailableError("every 10.213.X.0/24 tried is in use on this machine")


def in_netns(netns: str, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
    """``fn()`` run by a thread that joined namespace ``netns`` (sockets it makes stay there)."""
    box: list[_T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(_NETNS_RUN / netns, "rb") as ns_file:
                if libc.setns(ns_file.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            box.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    worker.start()
    worker.join(timeout)
    if failure:
        raise failure[0]
    if not box:
        raise TimeoutError(f"in_netns({netns}) did not finish in {timeout}s")
    return box[0]


def netns_socket(netns: str, address: tuple[str, int], timeout: float = 2.0) -> socket.socket:
    """A TCP connection made from inside ``netns`` (the caller closes it)."""
    return in_netns(netns, lambda: socket.create_connection(address, timeout=timeout),
                    timeout + 1.0)


def _tcp_reaches(netns: str, address: tuple[str, int]) -> bool:
    # a short timeout: a lost SYN would otherwise cost the kernel's 1 s retransmission delay
    try:
        netns_socket(netns, address, timeout=0.2).close()
    except OSError:
        return False
    return True


def _epmd_answers(netns: str) -> bool:
    """Whether EPMD on 127.0.0.1:4369 inside ``netns`` answers a NAMES request."""
    try:
        with netns_socket(netns, ("127.0.0.1", EPMD_PORT), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01n")  # NAMES_REQ; the reply starts with EPMD's port
            return sock.recv(4) == EPMD_PORT.to_bytes(4, "big")
    except OSError:
        return False


_live_labs: set[Lab] = set()


@atexit.register
def _destroy_leftovers() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):  # best effort while the interpreter exits
            lab.destroy()
