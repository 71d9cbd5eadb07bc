"""TLS contexts and peer checks (pyerl_node.runtime.tls) on real TLS pairs over 127.0.0.1.

Certificates come from the ``openssl`` command (tests/tls_certs.py); both sides are configured
by option files in the format OTP reads. Each pair is an asyncio TLS server and client that,
after the handshake and the distribution's certificate checks, exchange one 4-byte-framed
packet each way, as the distribution handshake over TLS starts. The host name cases marked
"OTP" were checked against OTP 25's ssl:connect with the same certificates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyerl_node.proto.framing import frame
from pyerl_node.proto.tls_options import DistTlsOptions, TlsConfigError
from pyerl_node.runtime.tls import (
    PeerCertificateError,
    allowed_nodes_for_cert,
    check_client_certificate,
    check_server_certificate,
    client_context,
    client_server_hostname,
    load_optfile,
    pkix_verify_hostname,
    server_context,
    verify_client_cert,
    verify_peer_host,
)
from tests.tls_certs import Leaf, Pki, erl_string, make_pki, optfile_text

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

LOCAL = "127.0.0.1"
LOOPBACK_SANS = ("DNS:127.0.0.1", "IP:127.0.0.1", "DNS:localhost")


@dataclass(frozen=True)
class Certs:
    pki: Pki
    py: Leaf
    beam: Leaf
    rogue: Leaf  # same SANs, signed by the rogue CA
    ip_only: Leaf  # IP:127.0.0.1 and no DNS name
    no_san: Leaf  # CN=no_san, no subjectAltName at all
    deep: Leaf  # under the intermediate CA, the file holds the chain
    locked: Leaf  # key encrypted with "s3cret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    return Certs(
        pki,
        py=pki.issue("py", sans=LOOPBACK_SANS),
        beam=pki.issue("beam", sans=LOOPBACK_SANS[:2]),
        rogue=pki.issue("rogue", sans=LOOPBACK_SANS, issuer="rogue"),
        ip_only=pki.issue("ip_only", sans=["IP:127.0.0.1"]),
        no_san=pki.issue("no_san"),
        deep=pki.issue("deep", sans=LOOPBACK_SANS, issuer="intermediate", chain=True),
        locked=pki.issue("locked", sans=LOOPBACK_SANS, password="s3cret"),
    )


def side(certs: Certs, leaf: Leaf | None, **extra: str) -> dict[str, str]:
    """Erlang option snippets: ``leaf``'s files, our CA, verify_peer, and ``extra``."""
    options = {"cacertfile": erl_string(certs.pki.ca), "verify": "verify_peer"}
    if leaf is not None:
        options |= {"certfile": erl_string(leaf.cert), "keyfile": erl_string(leaf.key)}
    return options | extra


def optfile(tmp_path: Path, server: Mapping[str, str], client: Mapping[str, str]) -> DistTlsOptions:
    path = tmp_path / f"dist{len(list(tmp_path.iterdir()))}.conf"
    path.write_text(optfile_text(server, client))
    return load_optfile(path)


@dataclass
class Outcome:
    client_error: BaseException | None = None
    accepted: bool = False  # the server's checks passed and it answered
    server_error: BaseException | None = None
    version: str | None = None
    cipher: str | None = None
    allowed: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.accepted


async def run_pair(server: DistTlsOptions, client: DistTlsOptions, *, node_host: str = LOCAL,
                   allowed: tuple[str, ...] = ()) -> Outcome:
    """One TLS connection from ``client``'s side to ``server``'s, checked as the node will."""
    outcome = Outcome()
    answered = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            outcome.allowed = check_client_certificate(
                writer.get_extra_info("ssl_object"), server,
                peer_ip=writer.get_extra_info("peername")[0], allowed=allowed)
            size = int.from_bytes(await reader.readexactly(4), "big")
            assert await reader.readexactly(size) == b"ping"
            writer.write(frame(b"pong", 4))
            await writer.drain()
            outcome.accepted = True
        except (PeerCertificateError, OSError, asyncio.IncompleteReadError) as exc:
            outcome.server_error = exc
        finally:
            answered.set()
            writer.close()

    listener = await asyncio.start_server(on_client, LOCAL, 0, ssl=server_context(server),
                                          ssl_handshake_timeout=5)
    port = listener.sockets[0].getsockname()[1]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(10):
            try:
                reader, writer = await asyncio.open_connection(
                    LOCAL, port, ssl=client_context(client), ssl_handshake_timeout=5,
                    server_hostname=client_server_hostname(client, node_host))
                tls = writer.get_extra_info("ssl_object")
                check_server_certificate(tls, client, node_host)
                outcome.version, outcome.cipher = tls.version(), tls.cipher()[0]
                writer.write(frame(b"ping", 4))
                size = int.from_bytes(await reader.readexactly(4), "big")
                assert await reader.readexactly(size) == b"pong"
                await answered.wait()
            except (PeerCertificateError, OSError, asyncio.IncompleteReadError) as exc:
                outcome.client_error = exc
    finally:
        if writer is not None:
            writer.close()
        listener.close()
        await listener.wait_closed()
    return outcome


# -- pairs -----------------------------------------------------------------------------------

async def test_mutual_verification_passes(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.py, fail_if_no_peer_cert="true"),
                     side(certs, certs.py))
    client = optfile(tmp_path, side(certs, certs.beam), side(certs, certs.beam))
    outcome = await run_pair(server, client)
    assert outcome.ok, outcome
    assert outcome.version == "TLSv1.2"  # inet_tls_dist's default versions
    assert outcome.allowed == ()  # no allow list: everyone


async def test_tls13_when_both_allow_it(certs: Certs, tmp_path: Path) -> None:
    both = "['tlsv1.2', 'tlsv1.3']"
    server = optfile(tmp_path, side(certs, certs.py, versions=both), {})
    client = optfile(tmp_path, {}, side(certs, certs.beam, versions=both))
    assert (await run_pair(server, client)).version == "TLSv1.3"
    only13 = optfile(tmp_path, side(certs, certs.py, versions="['tlsv1.3']"), {})
    only12 = optfile(tmp_path, {}, side(certs, certs.beam, versions="['tlsv1.2']"))
    outcome = await run_pair(only13, only12)
    assert outcome.client_error is not None and not outcome.accepted


async def test_server_from_a_rogue_ca_is_refused(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.rogue), {})
    client = optfile(tmp_path, {}, side(certs, certs.py))
    outcome = await run_pair(server, client)
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert not outcome.accepted


async def test_client_from_a_rogue_ca_is_refused(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.py, fail_if_no_peer_cert="true"), {})
    client = optfile(tmp_path, {}, side(certs, certs.rogue))
    outcome = await run_pair(server, client)
    assert outcome.client_error is not None and not outcome.accepted


async def test_missing_client_cert_refused_with_fail_if_no_peer_cert(
    certs: Certs, tmp_path: Path
) -> None:
    strict = optfile(tmp_path, side(certs, certs.py, fail_if_no_peer_cert="true"), {})
    lenient = optfile(tmp_path, side(certs, certs.py), {})
    anonymous = optfile(tmp_path, {}, side(certs, None))
    outcome = await run_pair(strict, anonymous)
    assert outcome.client_error is not None and not outcome.accepted
    # verify_peer alone asks for a certificate but takes a client without one (CERT_OPTIONAL)
    outcome = await run_pair(lenient, anonymous, allowed=("a@h",))
    assert outcome.ok and outcome.allowed == ("a@h",)


async def test_verify_none_client_takes_any_server(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.rogue, verify="verify_none"), {})
    client = optfile(tmp_path, {}, {"verify": "verify_none"})
    assert (await run_pair(server, client, node_host="elsewhere")).ok


@pytest.mark.parametrize(
    ("leaf", "node_host", "sni", "ok"),
    [
        ("py", LOCAL, None, True),  # OTP: DNS:127.0.0.1 names the host 127.0.0.1
        ("ip_only", LOCAL, None, False),  # OTP: an IP SAN does not count for the node host
        ("no_san", LOCAL, None, False),  # OTP
        ("no_san", "no_san", None, True),  # OTP: without SANs the CN is compared
        ("py", "localhost", None, True),
        ("py", "otherhost", None, False),
        ("py", "otherhost", '"localhost"', True),  # the SNI string is the name checked
        ("ip_only", LOCAL, "disable", True),  # disable: no host name check
    ],
)
async def test_host_name_rule(certs: Certs, tmp_path: Path, leaf: str, node_host: str,
                              sni: str | None, ok: bool) -> None:
    server = optfile(tmp_path, side(certs, getattr(certs, leaf)), {})
    extra = {} if sni is None else {"server_name_indication": sni}
    client = optfile(tmp_path, {}, side(certs, certs.beam, **extra))
    outcome = await run_pair(server, client, node_host=node_host)
    assert outcome.ok is ok, outcome
    if not ok:
        assert isinstance(outcome.client_error, PeerCertificateError)
        assert node_host in str(outcome.client_error)


async def test_depth_counts_intermediate_cas(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.deep), {})
    shallow = optfile(tmp_path, {}, side(certs, certs.beam, depth="0"))
    enough = optfile(tmp_path, {}, side(certs, certs.beam, depth="1"))
    outcome = await run_pair(server, shallow)
    assert isinstance(outcome.client_error, PeerCertificateError)
    assert "1 intermediate" in str(outcome.client_error)
    assert (await run_pair(server, enough)).ok
    direct = optfile(tmp_path, side(certs, certs.py), {})
    assert (await run_pair(direct, shallow)).ok  # signed by the root itself: depth 0 is enough


async def test_verify_client_marker_and_allow_list(certs: Certs, tmp_path: Path) -> None:
    marker = {"verify_fun": "{fun inet_tls_dist:verify_client/3, []}"}
    server = optfile(tmp_path, side(certs, certs.py, **marker), {})
    named = optfile(tmp_path, {}, side(certs, certs.beam))  # DNS and IP SANs of 127.0.0.1
    unnamed = optfile(tmp_path, {}, side(certs, certs.no_san))
    outcome = await run_pair(server, named, allowed=("x@127.0.0.1", "y@otherhost"))
    assert outcome.ok and outcome.allowed == ("x@127.0.0.1", "127.0.0.1")
    # without an allow list verify_client/3 lets every verified client in, as in OTP
    assert (await run_pair(server, unnamed)).ok
    outcome = await run_pair(server, unnamed, allowed=("y@otherhost",))
    assert isinstance(outcome.server_error, PeerCertificateError) and not outcome.accepted
    # without the marker, the allow list alone still narrows by the certificate's names
    plain = optfile(tmp_path, side(certs, certs.py), {})
    outcome = await run_pair(plain, unnamed, allowed=("y@otherhost",))
    assert isinstance(outcome.server_error, PeerCertificateError)


async def test_ciphers_are_applied(certs: Certs, tmp_path: Path) -> None:
    suite = "ECDHE-ECDSA-AES128-GCM-SHA256"
    server = optfile(tmp_path, side(certs, certs.py, ciphers=erl_string(suite)), {})
    client = optfile(tmp_path, {}, side(certs, certs.beam))
    assert (await run_pair(server, client)).cipher == suite


async def test_password_unlocks_the_key(certs: Certs, tmp_path: Path) -> None:
    server = optfile(tmp_path, side(certs, certs.locked, password='"s3cret"'), {})
    client = optfile(tmp_path, {}, side(certs, certs.beam))
    assert (await run_pair(server, client)).ok


# -- contexts --------------------------------------------------------------------------------

def test_context_settings(certs: Certs, tmp_path: Path) -> None:
    options = optfile(
        tmp_path,
        side(certs, certs.py, fail_if_no_peer_cert="true", honor_cipher_order="true",
             versions="['tlsv1.2', 'tlsv1.3']"),
        side(certs, certs.py, versions="['tlsv1.3']"),
    )
    server, client = server_context(options), client_context(options)
    assert server.verify_mode == ssl.CERT_REQUIRED and not server.check_hostname
    assert (server.minimum_version, server.maximum_version) == (
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert server.options & ssl.OP_NO_RENEGOTIATION
    assert client.verify_mode == ssl.CERT_REQUIRED and not client.check_hostname
    assert client.minimum_version == client.maximum_version == ssl.TLSVersion.TLSv1_3
    lenient = optfile(tmp_path, side(certs, certs.py), {"verify": "verify_none"})
    assert server_context(lenient).verify_mode == ssl.CERT_OPTIONAL
    assert client_context(lenient).verify_mode == ssl.CERT_NONE
    assert client_server_hostname(lenient, "h") == "h"


def test_tls13_ciphers_must_name_every_enabled_suite(certs: Certs, tmp_path: Path) -> None:
    versions = "['tlsv1.3']"
    one = optfile(tmp_path, side(certs, certs.py, versions=versions,
                                 ciphers='"TLS_AES_256_GCM_SHA384"'), {})
    with pytest.raises(TlsConfigError, match="cannot be narrowed") as info:
        server_context(one)
    assert info.value.option == "ciphers"
    every = ":".join(c["name"] for c in ssl.create_default_context().get_ciphers()
                     if c["protocol"] == "TLSv1.3")
    assert server_context(optfile(tmp_path, side(certs, certs.py, versions=versions,
                                                 ciphers=erl_string(every)), {}))
    # only TLS 1.3 suites listed while 1.2 is on too: 1.2 is left without suites, so off
    mixed = optfile(tmp_path, side(certs, certs.py, versions="['tlsv1.2', 'tlsv1.3']",
                                   ciphers=erl_string(every)), {})
    assert server_context(mixed).minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("server", "option", "fragment"),
    [
        ({"verify": "verify_none"}, "certfile", "no certfile"),
        ({"certfile": '"/nonexistent/cert.pem"'}, "certfile", "/nonexistent/cert.pem"),
        ({"ciphers": '"NOT-A-CIPHER"'}, "ciphers", "unknown cipher"),
        ({"dhfile": '"/nonexistent/dh.pem"'}, "dhfile", "/nonexistent/dh.pem"),
    ],
)
def test_context_errors_name_the_option(certs: Certs, tmp_path: Path, server: dict[str, str],
                                        option: str, fragment: str) -> None:
    base = side(certs, certs.py) if option != "certfile" else {}
    options = optfile(tmp_path, base | server, {})
    with pytest.raises(TlsConfigError) as info:
        server_context(options)
    assert info.value.option == option and fragment in str(info.value)
    assert info.value.path == options.path


def test_an_encrypted_key_without_its_password_fails_at_once(certs: Certs,
                                                              tmp_path: Path) -> None:
    # OpenSSL would ask on the terminal; the context must fail instead (pytest-timeout guards)
    for password in ({}, {"password": '"wrong"'}):
        options = optfile(tmp_path, side(certs, certs.locked, **password), {})
        with pytest.raises(TlsConfigError, match="cannot load") as info:
            server_context(options)
        assert info.value.option == "keyfile"


def test_an_unreadable_optfile(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="cannot read") as info:
        load_optfile(tmp_path / "missing.conf")
    assert info.value.path == str(tmp_path / "missing.conf")


# -- host name matching on getpeercert() dictionaries ---------------------------------------

def cert(*sans: tuple[str, str], cn: str = "node") -> dict[str, Any]:
    result: dict[str, Any] = {"subject": ((("commonName", cn),),)}
    if sans:
        result["subjectAltName"] = sans
    return result


@pytest.mark.parametrize(
    ("peer", "host", "ok"),
    [
        (cert(("DNS", "127.0.0.1")), "127.0.0.1", True),
        (cert(("IP Address", "127.0.0.1")), "127.0.0.1", False),
        (cert(("DNS", "Node.Example")), "node.EXAMPLE", True),  # ASCII case folded
        (cert(("DNS", "*.example")), "a.example", False),  # no wildcard in DNS SANs
        (cert(("DNS", "a.example")), "a.example.", False),  # exact, even a trailing dot
        (cert(("email", "x@y")), "node", False),  # a SAN extension: the CN is not used
        (cert(cn="node"), "node", True),
        (cert(cn="NODE"), "node", True),
        (cert(cn="127.0.0.1"), "127.0.0.1", False),  # IP literals never match a CN
        (cert(cn="*.example"), "a.example", True),  # a CN wildcard covers one label
        (cert(cn="*.example"), "a.b.example", False),
        (cert(cn="*.example"), "example", False),
        (cert(cn="n*.example"), "node.example", True),
        (cert(cn="n*e.example"), "node.example", True),
        (cert(cn="n*x.example"), "node.example", False),
        (cert(cn="*"), "node", True),
        (cert(cn="a*b*.example"), "axbyc.example", False),  # one wildcard at most
        (cert(cn="*.example"), "*.example", False),  # the name may not hold a *
        (cert(cn="."), "node", False),
        (cert(cn="node"), "", False),
    ],
)
def test_verify_peer_host(peer: dict[str, Any], host: str, ok: bool) -> None:
    assert verify_peer_host(peer, host) is ok


def test_address_references_match_ip_sans_only() -> None:
    v4, v6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    peer = cert(("DNS", "127.0.0.1"), ("IP Address", "0:0:0:0:0:0:0:1\n"))
    assert pkix_verify_hostname(peer, [v6])
    assert not pkix_verify_hostname(peer, [v4])
    assert pkix_verify_hostname(peer, [v4, "127.0.0.1"])
    assert not pkix_verify_hostname(cert(cn="127.0.0.1"), [v4])  # no CN fallback for IPs


def test_allow_list_rules() -> None:
    v4 = ipaddress.ip_address("10.1.2.3")
    peer = cert(("DNS", "good.example"), ("IP Address", "10.1.2.3"))
    assert verify_client_cert(peer, v4, [])  # no allowed hosts: valid
    assert verify_client_cert(cert(("DNS", "x")), v4, ["good.example"]) is False
    assert verify_client_cert(cert(("DNS", "good.example")), v4, ["good.example"])
    assert allowed_nodes_for_cert(peer, ["a@good.example", "b@bad.example", "good.example",
                                         "@good.example", "a@b@good.example"], v4) == (
        "a@good.example", "good.example", "10.1.2.3")
