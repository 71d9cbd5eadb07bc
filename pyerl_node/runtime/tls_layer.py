"""TLS under one channel, in memory: ciphertext in, plaintext out, and back.

A :class:`TlsLayer` wraps an ``ssl.SSLObject`` over two ``ssl.MemoryBIO``s, so the channel keeps
its own socket and sees every step: when the TLS handshake ends it checks the peer's
certificate as OTP does (:mod:`.tls`) before the distribution handshake sends a byte, and
when TLS fails it can say why and who was at the other end (asyncio's own TLS transport
drops a failed server-side handshake without telling the protocol).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from pyerl_node.proto.errors import HandshakeError
from pyerl_node.proto.tls_options import DistTlsOptions

# A TLS record starts with its content type, 22 for a handshake (the ClientHello), then the
# major version 3. Anything else from a client is not TLS.
_HANDSHAKE_RECORD = 22
_READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class TlsSettings:
    """A node's TLS distribution: its two contexts, and the optfile's options when the node
    was configured from one (then the peer's certificate is checked as OTP checks it)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    options: DistTlsOptions | None = None


class TlsError(HandshakeError):
    """The TLS layer failed; the message says why in words (and what the peer probably is)."""


class TlsLayer:
    """One TLS session: feed what the socket gives, write what it hands back."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing,
                                           server_side=server_side,
                                           server_hostname=server_hostname or None)
        self._server_side = server_side
        self._first = True
        #: whether the TLS handshake is over (plaintext flows both ways)
        self.established = False

    def start(self) -> bytes:
        """The first flight (a client's ClientHello); nothing for a server."""
        if not self._server_side:
            self._handshake()
        return self._outgoing.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed ciphertext; ``(plaintext received, ciphertext to send)``.

        Raises :class:`TlsError` when TLS fails (bad certificate, not TLS at all...).
        """
        if self._first and data:
            self._first = False
            if self._server_side and data[0] != _HANDSHAKE_RECORD:
                raise TlsError("the peer does not speak TLS (a plain TCP distribution node "
                               "dialling a TLS node?)")
        self._incoming.write(data)
        if not self.established:
            self._handshake()
            if not self.established:
                return b"", self._outgoing.read()
        chunks: list[bytes] = []
        try:
            while True:
                chunk = self.ssl_object.read(_READ_CHUNK)
                if not chunk:  # the peer closed the TLS session
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failed: {exc.reason or exc}") from exc
        return b"".join(chunks), self._outgoing.read()

    def pending_output(self) -> bytes:
        """Ciphertext still to send: after a failure, the alert that tells the peer why."""
        return self._outgoing.read()

    def send(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Encrypt ``plaintext``; the ciphertext to write."""
        try:
            self.ssl_object.write(plaintext)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failed: {exc.reason or exc}") from exc
        return self._outgoing.read()

    def _handshake(self) -> None:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLCertVerificationError as exc:
            raise TlsError(f"TLS handshake failed: {exc.verify_message or exc.reason} "
                           "(the peer's certificate is not trusted)") from exc
        except ssl.SSLError as exc:
            hint = ""
            if exc.reason == "WRONG_VERSION_NUMBER" and not self._server_side:
                hint = " (a plain TCP distribution node?)"
            raise TlsError(f"TLS handshake failed: {exc.reason or exc}{hint}") from exc
        self.established = True
