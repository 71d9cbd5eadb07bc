"""TLS for the distribution (``-proto_dist inet_tls``): ``ssl.SSLContext``s and peer checks.

Runtime layer over ``pyerl_node.proto.tls_options`` (docs/protocol/tls.md). ``load_optfile``
reads an ``-ssl_dist_optfile`` file; ``server_context`` and ``client_context`` build the
contexts the listener and the dialler pass to asyncio (``ssl=``), with only Python's ``ssl``
module. ``check_hostname`` is always off: OTP's name rule is not OpenSSL's, so the checks run
on the peer's certificate right after the TLS handshake, before the distribution handshake
sends a byte:

* ``check_server_certificate`` (we dialled): with ``verify_peer``, the server's certificate
  must name the host part of the node name we dialled, or the ``server_name_indication``
  string, as a DNS name (``public_key:pkix_verify_hostname`` with a ``dns_id``). An IP literal
  host is matched against DNS names too: py@127.0.0.1 needs ``DNS:127.0.0.1``.
* ``check_client_certificate`` (we accepted): OTP does not match the client's certificate
  against any name unless the node has an allow list, or the server options hold inet_tls_dist's
  ``verify_client/3`` marker (then the certificate must name the client's IP address or an
  allowed host).

Both also enforce ``depth`` (Python's ssl module has no setting for it) by counting the
verified chain. A failed check raises ``PeerCertificateError``; the caller closes the
connection. ``verify_peer_host`` and ``pkix_verify_hostname`` are the name matching itself,
on ``getpeercert()`` dictionaries.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from pyerl_node.proto.errors import HandshakeError
from pyerl_node.proto.tls_options import (
    TLS13_SUITES,
    DistTlsOptions,
    TlsConfigError,
    TlsOptions,
    TlsVersion,
    Verify,
    parse_optfile,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A reference identity: a DNS name (OTP's ``{dns_id, Name}``) or an address (``{ip, IP}``).
ReferenceId = str | IpAddress
#: What ``SSLObject.getpeercert()`` returns for a verified certificate.
PeerCert = Mapping[str, Any]

_VERSIONS: Final = {TlsVersion.TLS1_2: ssl.TLSVersion.TLSv1_2,
                    TlsVersion.TLS1_3: ssl.TLSVersion.TLSv1_3}
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class PeerCertificateError(HandshakeError):
    """The peer's certificate passed the TLS handshake but not the distribution's rules."""


def load_optfile(path: str | os.PathLike[str]) -> DistTlsOptions:
    """The options of an ``-ssl_dist_optfile`` file; ``TlsConfigError`` if unreadable or wrong."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the file: {exc.strerror or exc}", path=name) from None
    return parse_optfile(data, path=name)


def server_context(options: DistTlsOptions) -> ssl.SSLContext:
    """The context for accepted connections (``loop.create_server(..., ssl=)``)."""
    server = options.server
    if server.certfile is None:
        raise TlsConfigError("the server section has no certfile: a TLS server needs one",
                             path=options.path, option="certfile")
    context = _context(server, options.path, server_side=True)
    if server.verify is Verify.PEER:
        context.verify_mode = (ssl.CERT_REQUIRED if server.fail_if_no_peer_cert
                               else ssl.CERT_OPTIONAL)
    if server.honor_cipher_order:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if not server.reuse_sessions:
        context.num_tickets = 0
    if server.dhfile is not None:
        dhfile = server.dhfile
        _load(options.path, "dhfile", dhfile, lambda: context.load_dh_params(dhfile))
    return context


def client_context(options: DistTlsOptions) -> ssl.SSLContext:
    """The context for connections we dial (``loop.create_connection(..., ssl=)``)."""
    client = options.client
    context = _context(client, options.path, server_side=False)
    context.verify_mode = ssl.CERT_REQUIRED if client.verify is Verify.PEER else ssl.CERT_NONE
    return context


def client_server_hostname(options: DistTlsOptions, node_host: str) -> str:
    """asyncio's ``server_hostname=`` when dialling a node on ``node_host`` ("" sends no SNI)."""
    return options.client.server_name(node_host) or ""


def check_server_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket, options: DistTlsOptions,
                             node_host: str) -> None:
    """After our TLS handshake with the node on ``node_host``: its certificate per OTP's rules."""
    client = options.client
    if client.verify is Verify.NONE:
        return
    cert = ssl_object.getpeercert()
    if not cert:
        raise PeerCertificateError("the server sent no verified certificate", peer=node_host)
    _check_depth(ssl_object, client, node_host)
    name = client.server_name(node_host)
    if name is not None and not verify_peer_host(cert, name):
        raise PeerCertificateError(f"the server's certificate has no DNS name {name!r}",
                                   peer=node_host)


def check_client_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket, options: DistTlsOptions,
                             *, peer_ip: str, allowed: Sequence[str] = ()) -> tuple[str, ...]:
    """After a client's TLS handshake: its certificate per OTP's rules.

    ``allowed`` is the node's allow list (node names or bare hosts; empty: everyone). The
    result is the allow list the distribution handshake must then apply, narrowed to the
    entries the certificate names, as inet_tls_dist narrows it.
    """
    cert = ssl_object.getpeercert()
    if not cert:
        return tuple(allowed)  # no certificate asked for, or none sent (fail_if_no_peer_cert off)
    _check_depth(ssl_object, options.server, peer_ip)
    address = ipaddress.ip_address(peer_ip)
    hosts = sorted({host for host in map(_node_host, allowed) if host is not None})
    if options.server.verify_client and not verify_client_cert(cert, address, hosts):
        raise PeerCertificateError("the client's certificate names neither its address "
                                   "nor an allowed host", peer=peer_ip)
    if not allowed:
        return ()
    nodes = allowed_nodes_for_cert(cert, allowed, address)
    if not nodes:
        raise PeerCertificateError("the client's certificate names no allowed node",
                                   peer=peer_ip)
    return nodes


def verify_peer_host(cert: PeerCert, host: str) -> bool:
    """Does the certificate name ``host`` (matched as a DNS name, even an IP literal)?"""
    return pkix_verify_hostname(cert, [host])


def verify_client_cert(cert: PeerCert, peer_ip: IpAddress, allowed_hosts: Sequence[str]) -> bool:
    """inet_tls_dist:verify_client/3: the client's address or an allowed host (none: any)."""
    return not allowed_hosts or pkix_verify_hostname(cert, [peer_ip, *allowed_hosts])


def allowed_nodes_for_cert(cert: PeerCert, allowed: Sequence[str],
                           peer_ip: IpAddress) -> tuple[str, ...]:
    """The allow-list entries whose host the certificate names, and its IP when named."""
    nodes = [node for node in allowed
             if (host := _node_host(node)) is not None and pkix_verify_hostname(cert, [host])]
    if pkix_verify_hostname(cert, [peer_ip]):
        nodes.append(str(peer_ip))
    return tuple(nodes)


def pkix_verify_hostname(cert: PeerCert, references: Iterable[ReferenceId]) -> bool:
    """public_key:pkix_verify_hostname/2 with its default matching.

    With a subjectAltName extension, a DNS reference equals a DNS name exactly (ASCII case
    folded; a ``*`` in a DNS name is no wildcard) and an address equals an IP address entry.
    Without one, DNS references that are not IP literals are compared with the subject's
    common names, where a ``*`` in the first label is a wildcard.
    """
    refs = list(references)
    sans = cert.get("subjectAltName") or ()
    if sans:
        dns = {_lower(value) for kind, value in sans if kind == "DNS"}
        ips = {_address(value) for kind, value in sans if kind == "IP Address"}
        return any(ref in ips if not isinstance(ref, str) else _lower(ref) in dns
                   for ref in refs)
    names = [_lower(ref) for ref in refs if isinstance(ref, str) and ref and not _is_ip(ref)]
    common_names = [_lower(value) for rdn in cert.get("subject", ()) for key, value in rdn
                    if key == "commonName"]
    return any(_match_common_name(name, cn) for name in names for cn in common_names)


# -- internals -------------------------------------------------------------------------------

def _context(side: TlsOptions, path: str, *, server_side: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the distribution's own rule runs after the handshake
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = _VERSIONS[side.versions[0]]
    context.maximum_version = _VERSIONS[side.versions[-1]]
    context.options |= ssl.OP_NO_RENEGOTIATION
    if not side.reuse_sessions:
        context.options |= ssl.OP_NO_TICKET
    certfile, keyfile, cacertfile = side.certfile, side.keyfile, side.cacertfile
    if certfile is not None:
        # A password is always passed: OpenSSL would otherwise ask for one on the terminal.
        _load(path, "certfile" if keyfile is None else "keyfile",
              certfile if keyfile is None else f"{certfile} and {keyfile}",
              lambda: context.load_cert_chain(certfile, keyfile, side.password or b""))
    if cacertfile is not None:
        _load(path, "cacertfile", cacertfile, lambda: context.load_verify_locations(cacertfile))
    _set_ciphers(context, side, path)
    return context


def _load(path: str, option: str, files: str, load: Callable[[], object]) -> None:
    try:
        load()
    except OSError as exc:  # ssl.SSLError included
        raise TlsConfigError(f"cannot load {files}: {exc.strerror or exc.args[-1]}",
                             path=path, option=option) from None


def _set_ciphers(context: ssl.SSLContext, side: TlsOptions, path: str) -> None:
    """OTP's rule: the listed suites of the enabled versions, or the defaults if none apply.

    TLS 1.3 suites cannot be chosen in Python's ssl module, so a list naming some must name all
    that OpenSSL enables; a version left without suites is switched off.
    """
    tls13 = {name for name in side.ciphers if name in TLS13_SUITES}
    older = [name for name in side.ciphers if name not in TLS13_SUITES]
    use13 = bool(tls13) and TlsVersion.TLS1_3 in side.versions
    use12 = bool(older) and TlsVersion.TLS1_2 in side.versions
    if not (use13 or use12):
        return
    if use12:
        for name in older:  # OpenSSL skips unknown names of a list silently; OTP refuses them
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(name)
            except ssl.SSLError:
                raise TlsConfigError(f"unknown cipher {name!r}", path=path,
                                     option="ciphers") from None
        context.set_ciphers(":".join(older))
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    if not use13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return
    enabled = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"}
    if not enabled <= tls13:
        raise TlsConfigError(
            "TLS 1.3 suites cannot be narrowed with Python's ssl module: list all of "
            f"{', '.join(sorted(enabled))} or none", path=path, option="ciphers")


def _check_depth(ssl_object: ssl.SSLObject | ssl.SSLSocket, side: TlsOptions, peer: str) -> None:
    # The verified chain runs from the peer's certificate to the trusted root.
    intermediates = max(len(_verified_chain(ssl_object)) - 2, 0)
    if intermediates > side.depth:
        raise PeerCertificateError(
            f"the certificate chain has {intermediates} intermediate CAs; depth allows "
            f"{side.depth}", peer=peer)


def _verified_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[Any]:
    # Public from Python 3.13; the same method of the _ssl object before that.
    method = getattr(ssl_object, "get_verified_chain", None)
    if method is None:
        method = ssl_object._sslobj.get_verified_chain  # type: ignore[union-attr]
    chain: list[Any] = method()
    return chain


def _node_host(node: str) -> str | None:
    """dist_util:split_node's host of ``name@host`` or a bare ``host``; None otherwise."""
    parts = node.split("@")
    if len(parts) == 1:
        return parts[0] or None
    if len(parts) == 2 and all(parts):
        return parts[1]
    return None


def _lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _match_common_name(name: str, common_name: str) -> bool:
    if name == common_name:
        return "*" not in name
    labels = [label for label in name.split(".") if label]
    pattern = [label for label in common_name.split(".") if label]
    if not labels or not pattern:
        return False
    return _match_wild(labels[0], pattern[0]) and labels[1:] == pattern[1:]


def _match_wild(label: str, pattern: str) -> bool:
    """One label against a pattern label with at most one ``*`` (public_key's match_wild)."""
    i = 0
    while True:
        if pattern[i:i + 1] == "*":
            return _match_suffix(label[i:][::-1], pattern[i + 1:][::-1])
        if i == len(label) and i == len(pattern):
            return True
        if i < len(label) and i < len(pattern) and label[i] == pattern[i]:
            i += 1
            continue
        return False


def _match_suffix(rest: str, suffix: str) -> bool:
    """Reversed: what the ``*`` left of the label ends with the pattern's reversed rest."""
    i = 0
    while True:
        if rest[i:i + 1] == "*" or suffix[i:i + 1] == "*":
            return False  # no wildcard in the name, no second wildcard in the pattern
        if i == len(suffix):
            return "*" not in rest[i:]
        if i == len(rest) or rest[i] != suffix[i]:
            return False
        i += 1

