"""The lab itself: host names, hosts files, per-host EPMD, partitions, cleanup.

These pin what every scenario relies on: inside a host ``hostname`` is the host's name and
``erl -sname x`` becomes ``x@<host>``; every host name resolves (IPv4 and IPv6) from every host;
a partition drops packets silently and a heal restores them; destroying a lab leaves nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from interop_tests.multihost.conftest import HOSTS, Cluster, LabFactory
from interop_tests.multihost.netns import EPMD_PORT, EpmdKind, Lab, netns_socket
from interop_tests.multihost.probes import visible_nodes


def run_on(lab: Lab, host: str, *argv: str) -> str:
    done = subprocess.run(lab.command(host, argv), capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_hosts_have_their_names_and_resolve_each_other(lab: Lab) -> None:
    for name in HOSTS:
        assert run_on(lab, name, "hostname").strip() == name
        for other in lab.hosts.values():
            resolved = run_on(lab, name, "getent", "ahosts", other.name).split()
            assert other.ipv4 in resolved and other.ipv6 in resolved
    assert subprocess.run(["hostname"], capture_output=True, text=True,
                          check=True).stdout.strip() not in HOSTS  # the machine's is untouched


def test_erl_sname_takes_the_host_name(cluster: Cluster) -> None:
    node = cluster.beam("h3", "28", "x")
    assert node.name.endswith("@h3")  # checked against node() when it booted
    assert node.eval("inet:gethostname()") == '{ok,"h3"}'
    h1 = cluster.lab.host("h1")
    assert node.eval("{ok, A} = inet:getaddr(h1, inet), inet:ntoa(A)") == f'"{h1.ipv4}"'
    assert node.eval("{ok, A} = inet:getaddr(h1, inet6), inet:ntoa(A)") == f'"{h1.ipv6}"'


def epmd_reachable(lab: Lab, src: str, dst: str, timeout: float = 1.0) -> bool:
    try:
        with netns_socket(lab.host(src).netns, (lab.host(dst).ipv4, EPMD_PORT), timeout):
            return True
    except TimeoutError:
        return False


def test_partition_drops_packets_and_heal_restores_them(lab: Lab) -> None:
    assert epmd_reachable(lab, "h1", "h2")
    lab.partition("h1")
    assert not lab.link_up("h1")
    # a cut cable: SYNs vanish, no RST or unreachable comes back (a timeout, not an error)
    assert not epmd_reachable(lab, "h1", "h2", timeout=0.5)
    assert not epmd_reachable(lab, "h3", "h1", timeout=0.5)
    assert epmd_reachable(lab, "h3", "h2")  # the others still see each other
    assert lab.heal("h1") < 3.0
    assert epmd_reachable(lab, "h1", "h2") and epmd_reachable(lab, "h3", "h1")


def test_destroy_leaves_nothing_behind(make_lab: LabFactory) -> None:
    lab = make_lab(["a1", "a2"])
    namespaces = [lab.bridge_ns, *(h.netns for h in lab.hosts.values())]
    epmds = [lab.epmd_pid(h) for h in lab.hosts]
    assert all(pid_exists(pid) for pid in epmds)
    lab.destroy()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert not any(ns in listed for ns in namespaces)
    assert not any((Path("/etc/netns") / ns).exists() for ns in namespaces)
    assert not any(pid_exists(pid) for pid in epmds)
    lab.destroy()  # idempotent


@pytest.mark.parametrize("kind", [EpmdKind.OTP, EpmdKind.PYTHON], ids=["otp_epmd", "py_epmd"])
def test_beam_nodes_meet_through_either_epmd(kind: EpmdKind, cookie: str,
                                            make_lab: LabFactory) -> None:
    lab = make_lab(["h1", "h2"], epmd=kind)
    cluster = Cluster(lab, cookie)
    try:
        a = cluster.beam("h1", "28", "a")
        b = cluster.beam("h2", "25", "b")
        assert a.eval(f"net_adm:ping('{b.name}')") == "pong"
        assert visible_nodes(b) == [a.name]
        with netns_socket(lab.host("h1").netns, ("127.0.0.1", EPMD_PORT)) as sock:
            sock.sendall(b"\x00\x01n")
            sock.settimeout(2)
            names = b"".join(iter(lambda: sock.recv(4096), b""))[4:].decode()
        assert f"name {a.name.split('@')[0]} at port" in names
    finally:
        cluster.stop_all()

