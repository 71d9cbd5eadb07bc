"""Test certificates made with the ``openssl`` command, and option files that use them.

``make_pki(directory)`` writes a CA, a rogue CA (same subject, other key) and an intermediate
CA under the CA into ``directory/ca``, and returns a ``Pki`` whose ``issue`` makes leaf
certificates (EC P-256 keys, usable by both sides: serverAuth and clientAuth) with the
subjectAltNames asked for. A minimal
OpenSSL configuration file is written next to them, so the system's one plays no part.
``optfile_text`` writes an ``-ssl_dist_optfile`` term from Erlang snippets; the same file
configures a BEAM node and a Python node.
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
"""
_TIMEOUT = 30


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate and its key (``key`` encrypted when issued with a password)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The CAs in ``directory``; ``issue`` adds leaves."""

    directory: Path
    ca: Path
    rogue_ca: Path
    intermediate: Path

    def issue(self, name: str, *, sans: Sequence[str] = (), issuer: str = "root",
              password: str | None = None, chain: bool = False) -> Leaf:
        """A leaf named ``name`` (its CN) with ``sans`` such as ``DNS:x``, ``IP:127.0.0.1``.

        ``issuer`` is ``root``, ``rogue`` or ``intermediate``; ``chain`` appends the
        intermediate's certificate to the leaf's file, as a server sends its chain.
        """
        d = self.directory
        key, cert = d / f"{name}.key", d / f"{name}.pem"
        _new_key(key)
        extensions = d / f"{name}.ext"
        extensions.write_text(_CONFIG + (f"subjectAltName = {', '.join(sans)}\n" if sans else ""))
        csr = d / f"{name}.csr"
        _openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr,
                 "-config", d / "openssl.cnf")
        _openssl("x509", "-req", "-in", csr, "-CA", d / "ca" / f"{issuer}.pem", "-CAkey",
                 d / "ca" / f"{issuer}.key", "-set_serial", str(zlib.crc32(name.encode())),
                 "-days", "3", "-extfile", extensions, "-extensions", "leaf", "-out", cert)
        if chain:
            cert.write_bytes(cert.read_bytes() + self.intermediate.read_bytes())
        if password is not None:
            encrypted = d / f"{name}.enc.key"
            _openssl("pkey", "-in", key, "-aes256", "-passout", f"pass:{password}",
                     "-out", encrypted)
            key = encrypted
        return Leaf(cert, key)


def make_pki(directory: Path) -> Pki:
    """Write the CAs into ``directory/ca`` (``directory`` must exist)."""
    config = directory / "openssl.cnf"
    config.write_text(_CONFIG)
    cas = directory / "ca"
    cas.mkdir()
    for name in ("root", "rogue"):
        _new_key(cas / f"{name}.key")
        # The rogue CA has the real CA's subject: only its key tells them apart.
        _openssl("req", "-x509", "-new", "-key", cas / f"{name}.key", "-subj",
                 "/CN=pyerl test CA", "-days", "3", "-config", config, "-extensions", "ca",
                 "-out", cas / f"{name}.pem")
    _new_key(cas / "intermediate.key")
    _openssl("req", "-new", "-key", cas / "intermediate.key", "-subj",
             "/CN=pyerl test intermediate", "-config", config, "-out", cas / "intermediate.csr")
    _openssl("x509", "-req", "-in", cas / "intermediate.csr", "-CA", cas / "root.pem",
             "-CAkey", cas / "root.key", "-set_serial", "2", "-days", "3", "-extfile", config,
             "-extensions", "ca", "-out", cas / "intermediate.pem")
    return Pki(directory, cas / "root.pem", cas / "rogue.pem", cas / "intermediate.pem")


def erl_string(text: str | Path) -> str:
    """An Erlang string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def optfile_text(server: Mapping[str, str], client: Mapping[str, str]) -> str:
    """``[{server, [...]}, {client, [...]}].`` from option names and Erlang value snippets."""
    def section(options: Mapping[str, str]) -> str:
        return ",\n    ".join(f"{{{name}, {value}}}" for name, value in options.items())
    return (f"%% TLS distribution options (written by tests/tls_certs.py)\n"
            f"[{{server, [\n    {section(server)}]}},\n {{client, [\n    {section(client)}]}}].\n")


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True,
                   timeout=_TIMEOUT)
