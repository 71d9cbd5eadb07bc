"""The TLS distribution option file that ``erl -ssl_dist_optfile F`` reads (docs/protocol/tls.md).

The file holds one Erlang term ended by a dot, ``[{server, [Opt]}, {client, [Opt]}].``, each
``Opt`` an ``{Name, Value}`` tuple of the ssl application. OTP 25 scans and evaluates the file
as one expression, so the dot is required (a file without it does not start a BEAM node
either); this parser reads literal terms only (``pyerl_node.proto.term_syntax.parse_form``),
so a function call in the file is a syntax error here. Without a ``coding:`` comment on its
first two lines the file is Latin-1, as OTP reads it.

``parse_optfile`` turns the bytes into ``DistTlsOptions``: frozen ``ServerTlsOptions`` and
``ClientTlsOptions`` with OTP's defaults for what the file leaves out (``verify_none``,
``versions ['tlsv1.2']`` as inet_tls_dist sets it, depth 10). A later option of the same name
overrides an earlier one, as in OTP. Every problem raises ``TlsConfigError`` naming the file,
the line and column, and the option: an option this node does not know, a value of the wrong
shape, and the settings OTP refuses too (``fail_if_no_peer_cert`` without ``verify_peer``,
``verify_peer`` without ``cacertfile``). What Python's ssl module cannot do is refused, never
dropped: a ``verify_fun`` other than inet_tls_dist's own ``verify_client/3`` marker, CRL
checks, hostname check customisation, cipher suites given as tuples or maps, TLS before 1.2.
Options without effect on security (``hibernate_after``, ``log_level``) are accepted and
ignored. Pure: no file access (``pyerl_node.runtime.tls.load_optfile`` reads the file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final, NoReturn

from pyerl_node.proto.errors import ErlNodeError
from pyerl_node.proto.term_syntax import Located, TermSyntaxError, format_term, parse_form
from pyerl_node.proto.terms import Atom, Export, Term

_CODING: Final = re.compile(rb"^[^\n]*%.*?coding\s*[:=]\s*([-\w.]+)", re.IGNORECASE)
_CODINGS: Final = {"utf-8": "utf-8", "utf8": "utf-8", "latin-1": "latin-1", "latin1": "latin-1"}
_MAX_DEPTH: Final = 255  # the ssl application's bound on ``depth``
#: The TLS 1.3 cipher suites (RFC 8446 B.4), named as OpenSSL and OTP name them.
TLS13_SUITES: Final = frozenset({
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
})


class TlsConfigError(ErlNodeError, ValueError):
    """The TLS distribution options are unusable; the message says where and why.

    ``path`` is the option file, ``line``/``column`` (1-based) where in it the problem is
    (``None`` when not tied to a place) and ``option`` the option's name when one is at fault.
    """

    def __init__(self, problem: str, *, path: str, line: int | None = None,
                 column: int | None = None, option: str | None = None) -> None:
        where = path if line is None else f"{path}:{line}:{column}"
        super().__init__(f"{where}: " + (problem if option is None else f"{option}: {problem}"))
        self.path = path
        self.line = line
        self.column = column
        self.option = option
        self.problem = problem


class Verify(Enum):
    """The ``verify`` option: check the peer's certificate chain or not."""

    PEER = "verify_peer"
    NONE = "verify_none"


class TlsVersion(Enum):
    """The protocol versions a node can offer (``versions``)."""

    TLS1_2 = "tlsv1.2"
    TLS1_3 = "tlsv1.3"


class ServerName(Enum):
    """Special ``server_name_indication`` values (a host string is the third choice)."""

    NODE_HOST = "node_host"  # the default: the host part of the node name connected to
    DISABLE = "disable"  # send no SNI and check no host name


@dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """Options both sides take. File names stay as written (relative to the working directory).

    ``ciphers`` are OpenSSL cipher names (TLS 1.3 ones start with ``TLS_``, the others do
    not); empty means the defaults. ``password`` unlocks an
    encrypted ``keyfile``. ``secure_renegotiate`` and ``reuse_sessions`` are checked but this
    node never renegotiates and resumes no session, whatever they say.
    """

    certfile: str | None = None
    keyfile: str | None = None  # None: the key is in certfile
    cacertfile: str | None = None
    password: bytes | None = None
    verify: Verify = Verify.NONE
    depth: int = 10  # intermediate CA certificates allowed between the peer and a root
    versions: tuple[TlsVersion, ...] = (TlsVersion.TLS1_2,)
    ciphers: tuple[str, ...] = ()
    secure_renegotiate: bool = True
    reuse_sessions: bool = True


@dataclass(frozen=True, kw_only=True)
class ServerTlsOptions(TlsOptions):
    """The ``server`` section: how this node accepts connections.

    ``verify_client`` is set by ``{verify_fun, {fun inet_tls_dist:verify_client/3, _}}``:
    the client certificate must then name the client's IP address or an allowed host.
    """

    fail_if_no_peer_cert: bool = False
    honor_cipher_order: bool = False
    dhfile: str | None = None
    verify_client: bool = False


@dataclass(frozen=True, kw_only=True)
class ClientTlsOptions(TlsOptions):
    """The ``client`` section: how this node connects to others."""

    server_name_indication: str | ServerName = ServerName.NODE_HOST

    def server_name(self, node_host: str) -> str | None:
        """The name sent as SNI and checked in the server's certificate; None: neither."""
        if self.server_name_indication is ServerName.DISABLE:
            return None
        if self.server_name_indication is ServerName.NODE_HOST:
            return node_host
        return self.server_name_indication


@dataclass(frozen=True)
class DistTlsOptions:
    """Both sections of one option file, and the file's name for later error messages."""

    path: str
    server: ServerTlsOptions = field(default_factory=ServerTlsOptions)
    client: ClientTlsOptions = field(default_factory=ClientTlsOptions)


class _Problem(Exception):  # noqa: N818  # internal: a value's fault, placed by the caller
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def decode_optfile(data: bytes, *, path: str) -> str:
    """The text of an option file: Latin-1 unless a ``coding:`` comment on line 1 or 2 says."""
    coding = "latin-1"
    for line in data.split(b"\n", 2)[:2]:
        m = _CODING.match(line)
        if m is not None:
            name = m.group(1).decode("ascii", "replace").lower()
            if name not in _CODINGS:
                raise TlsConfigError(f"unknown file encoding {name!r}", path=path)
            coding = _CODINGS[name]
            break
    try:
        return data.decode(coding)
    except UnicodeDecodeError as exc:
        raise TlsConfigError(f"not valid {coding} at byte {exc.start}", path=path) from None


def parse_optfile(data: bytes, *, path: str) -> DistTlsOptions:
    """The options of an ``-ssl_dist_optfile`` file's bytes; ``path`` names it in errors."""
    text = decode_optfile(data, path=path)
    try:
        top = parse_form(text)
    except TermSyntaxError as exc:
        line, column = _line_column(text, exc.offset)
        raise TlsConfigError(
            f"syntax error: {exc.problem} (the file holds one term ended by a dot, "
            "written with literals only: no variables, operators or function calls)",
            path=path, line=line, column=column,
        ) from None
    except RecursionError:
        raise TlsConfigError("the term is nested too deeply", path=path) from None
    result = DistTlsOptions(path)
    for section in _list_items(top, text, path, "the file must hold a list of sections"):
        if not (len(section.items) == 2 and section.items[0].term in _SECTIONS):
            _fail(text, path, section, None, "a section is {server, [...]} or {client, [...]}")
        name = str(section.items[0].term)
        options = _list_items(section.items[1], text, path, f"the {name} options must be a list")
        if name == "server":
            result = replace(result, server=_server_options(options, text, path))
        else:
            result = replace(result, client=_client_options(options, text, path))
    return result


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _fail(text: str, path: str, at: Located, option: str | None, problem: str) -> NoReturn:
    line, column = _line_column(text, at.offset)
    raise TlsConfigError(problem, path=path, line=line, column=column, option=option)


def _list_items(located: Located, text: str, path: str, problem: str) -> tuple[Located, ...]:
    if not isinstance(located.term, list):
        _fail(text, path, located, None, problem)
    return located.items


# -- values ----------------------------------------------------------------------------------

def _boolean(value: Term) -> bool:
    if not isinstance(value, bool):
        raise _Problem("expected true or false")
    return value


def _chars(value: Term, what: str) -> str:
    """A string written as a charlist or a binary (UTF-8, as OTP's file names are)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise _Problem(f"expected {what}; the binary is not UTF-8") from None
    if isinstance(value, list) and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 0x110000 for c in value
    ):
        return "".join(chr(c) for c in value)
    raise _Problem(f"expected {what} (a string or a binary)")


def _filename(value: Term) -> str:
    name = _chars(value, "a file name")
    if not name:
        raise _Problem("the file name is empty")
    return name


def _password(value: Term) -> bytes:
    if isinstance(value, bytes):
        return value
    text = _chars(value, "a password")
    try:
        return text.encode("latin-1")  # a charlist reaches the crypto library as bytes
    except UnicodeEncodeError:
        raise _Problem("a password charlist holds bytes (characters 0..255) only") from None


def _verify(value: Term) -> Verify:
    if isinstance(value, Atom):
        for choice in Verify:
            if value.name == choice.value:
                return choice
    raise _Problem("expected verify_peer or verify_none")


def _depth(value: Term) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_DEPTH:
        return value
    raise _Problem(f"expected an integer 0..{_MAX_DEPTH}")


def _versions(value: Term) -> tuple[TlsVersion, ...]:
    if not isinstance(value, list) or not value:
        raise _Problem("expected a non-empty list such as ['tlsv1.2', 'tlsv1.3']")
    versions: list[TlsVersion] = []
    for item in value:
        name = item.name if isinstance(item, Atom) else None
        if name in ("tlsv1", "tlsv1.1", "sslv3"):
            raise _Problem(f"{name} is not supported (TLS 1.2 is the oldest this node speaks)")
        match = [v for v in TlsVersion if v.value == name]
        if not match:
            raise _Problem(f"unknown version {format_term(item)}; expected 'tlsv1.2' or 'tlsv1.3'")
        versions.append(match[0])
    return tuple(sorted(set(versions), key=list(TlsVersion).index))


def _ciphers(value: Term) -> tuple[str, ...]:
    """OpenSSL cipher names: "A:B" or ["A", "B"]; OTP's tuple and map forms are refused."""
    if not isinstance(value, list):
        raise _Problem('expected "NAME:NAME" or a list of cipher name strings')
    if value and all(isinstance(c, int) for c in value):
        names = _chars(value, "cipher names").split(":")
    else:
        names = []
        for item in value:
            if isinstance(item, tuple | dict):
                raise _Problem("cipher suites as tuples or maps are not supported; "
                               "write their OpenSSL names")
            names.append(_chars(item, "a cipher name"))
    names = [name for name in names if name]
    for name in names:
        if name.startswith("TLS_") and "_WITH_" in name:
            raise _Problem(f"{name} is an RFC name; write the OpenSSL name of the suite")
        if name.startswith("TLS_") and name not in TLS13_SUITES:
            raise _Problem(f"unknown TLS 1.3 cipher suite {name}")
    return tuple(names)


def _reuse_sessions(value: Term) -> bool:
    if value == Atom("save"):
        return True
    return _boolean(value)


def _crl_check(value: Term) -> bool:
    if value is False:
        return False
    if value is True or value in (Atom("peer"), Atom("best_effort")):
        raise _Problem("CRL checking is not supported by this node")
    raise _Problem("expected false")


def _customize_hostname_check(value: Term) -> bool:
    if value == []:
        return False
    raise _Problem("only [] is supported: the host name rule of OTP's defaults always applies")


def _verify_client(value: Term) -> bool:
    """``{fun inet_tls_dist:verify_client/3, State}`` is the one verify_fun this node knows."""
    if (isinstance(value, tuple) and len(value) == 2
            and value[0] == Export(Atom("inet_tls_dist"), Atom("verify_client"), 3)):
        return True
    raise _Problem("a verify_fun runs Erlang code, which this node cannot; only "
                   "{fun inet_tls_dist:verify_client/3, _} (server side) is understood")


def _server_name_indication(value: Term) -> str | ServerName:
    if value == Atom("disable"):
        return ServerName.DISABLE
    name = _chars(value, "disable or a host name")
    if not name:
        raise _Problem("expected disable or a host name")
    return name


def _ignored(_value: Term) -> None:
    return None


# -- options ---------------------------------------------------------------------------------

# name -> (dataclass field or None when ignored, value parser)
_Spec = dict[str, tuple[str | None, Callable[[Term], Any]]]
_COMMON: Final[_Spec] = {
    "certfile": ("certfile", _filename),
    "keyfile": ("keyfile", _filename),
    "cacertfile": ("cacertfile", _filename),
    "password": ("password", _password),
    "verify": ("verify", _verify),
    "depth": ("depth", _depth),
    "versions": ("versions", _versions),
    "ciphers": ("ciphers", _ciphers),
    "secure_renegotiate": ("secure_renegotiate", _boolean),
    "reuse_sessions": ("reuse_sessions", _reuse_sessions),
    "crl_check": (None, _crl_check),
    "hibernate_after": (None, _ignored),
    "log_level": (None, _ignored),
}
_SERVER_ONLY: Final[_Spec] = {
    "fail_if_no_peer_cert": ("fail_if_no_peer_cert", _boolean),
    "honor_cipher_order": ("honor_cipher_order", _boolean),
    "dhfile": ("dhfile", _filename),
    "verify_fun": ("verify_client", _verify_client),
}
_CLIENT_ONLY: Final[_Spec] = {
    "server_name_indication": ("server_name_indication", _server_name_indication),
    "customize_hostname_check": (None, _customize_hostname_check),
}
_SECTIONS: Final = (Atom("server"), Atom("client"))


def _read_options(options: tuple[Located, ...], text: str, path: str, own: _Spec,
                  other: _Spec, side: str) -> tuple[dict[str, Any], dict[str, Located]]:
    """Field values by field name, and where each option was written."""
    values: dict[str, Any] = {}
    places: dict[str, Located] = {}
    for option in options:
        if not (len(option.items) == 2 and isinstance(option.items[0].term, Atom)):
            _fail(text, path, option, None, "an option is a {Name, Value} tuple")
        name = str(option.items[0].term)
        spec = own.get(name) or _COMMON.get(name)
        if spec is None:
            problem = (f"a {'client' if side == 'server' else 'server'} option, not allowed in "
                       f"the {side} section" if name in other else "unknown option")
            _fail(text, path, option, name, problem)
        target, convert = spec
        try:
            value = convert(option.items[1].term)
        except _Problem as exc:
            _fail(text, path, option.items[1], name, exc.problem)
        if target is not None:
            values[target] = value
        places[name] = option
    return values, places


def _check_common(values: dict[str, Any], places: dict[str, Located], text: str,
                  path: str) -> None:
    if values.get("verify") is Verify.PEER and "cacertfile" not in values:
        _fail(text, path, places["verify"], "verify",
              "verify_peer needs cacertfile (the CA certificates to trust)")


def _server_options(options: tuple[Located, ...], text: str, path: str) -> ServerTlsOptions:
    values, places = _read_options(options, text, path, _SERVER_ONLY, _CLIENT_ONLY, "server")
    _check_common(values, places, text, path)
    if values.get("fail_if_no_peer_cert") and values.get("verify") is not Verify.PEER:
        _fail(text, path, places["fail_if_no_peer_cert"], "fail_if_no_peer_cert",
              "true needs {verify, verify_peer} (OTP refuses it too)")
    return ServerTlsOptions(**values)


def _client_options(options: tuple[Located, ...], text: str, path: str) -> ClientTlsOptions:
    values, places = _read_options(options, text, path, _CLIENT_ONLY, _SERVER_ONLY, "client")
    _check_common(values, places, text, path)
    return ClientTlsOptions(**values)
