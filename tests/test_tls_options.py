"""The ``-ssl_dist_optfile`` parser (pyerl_node.proto.tls_options) and the term syntax it uses.

Every refused file must give a TlsConfigError that names the file, the line and column, and the
option at fault. The files accepted here are in the format a real OTP 25 node starts with
(docs/protocol/tls.md).
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyerl_node.proto.term_syntax import TermSyntaxError, format_term, parse, parse_form
from pyerl_node.proto.terms import Atom, Export
from pyerl_node.proto.tls_options import (
    ClientTlsOptions,
    DistTlsOptions,
    ServerName,
    ServerTlsOptions,
    TlsConfigError,
    TlsVersion,
    Verify,
    parse_optfile,
)
from tests.tls_certs import optfile_text

FULL = b"""%% TLS distribution options
[{server, [{certfile, "/certs/node.pem"},
           {keyfile, <<"/certs/node.key">>},
           {cacertfile, "/certs/ca.pem"},
           {verify, verify_peer},
           {fail_if_no_peer_cert, true},
           {versions, ['tlsv1.3', 'tlsv1.2']},
           {ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384"},
           {depth, 2},
           {honor_cipher_order, true},
           {secure_renegotiate, true},
           {reuse_sessions, false},
           {dhfile, "/certs/dh.pem"},
           {verify_fun, {fun inet_tls_dist:verify_client/3, []}},
           {crl_check, false},
           {hibernate_after, 1000}]},
 {client, [{certfile, "/certs/node.pem"},
           {cacertfile, "/certs/ca.pem"},
           {verify, verify_peer},
           {password, "secret"},
           {server_name_indication, "node.example"},
           {customize_hostname_check, []},
           {ciphers, ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]},
           {reuse_sessions, save}]}].
"""


def test_every_supported_option_is_read() -> None:
    options = parse_optfile(FULL, path="dist.conf")
    assert options == DistTlsOptions(
        "dist.conf",
        server=ServerTlsOptions(
            certfile="/certs/node.pem", keyfile="/certs/node.key", cacertfile="/certs/ca.pem",
            verify=Verify.PEER, fail_if_no_peer_cert=True,
            versions=(TlsVersion.TLS1_2, TlsVersion.TLS1_3),
            ciphers=("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384"), depth=2,
            honor_cipher_order=True, reuse_sessions=False, dhfile="/certs/dh.pem",
            verify_client=True,
        ),
        client=ClientTlsOptions(
            certfile="/certs/node.pem", cacertfile="/certs/ca.pem", verify=Verify.PEER,
            password=b"secret", server_name_indication="node.example",
            ciphers=("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ),
    )


def test_defaults_are_otps_for_distribution() -> None:
    options = parse_optfile(b"[{server, [{certfile, \"s.pem\"}]}].", path="f")
    # inet_tls_dist adds versions ['tlsv1.2'] when the file gives none; ssl's verify_none,
    # depth 10, and a missing section is all defaults.
    assert options.server.versions == (TlsVersion.TLS1_2,)
    assert options.server.verify is Verify.NONE and options.server.depth == 10
    assert options.client == ClientTlsOptions()
    assert parse_optfile(b"[].", path="f") == DistTlsOptions("f")


def test_a_later_option_overrides_an_earlier_one() -> None:
    text = b"[{client, [{depth, 1}, {depth, 4}]}, {client, [{depth, 7}]}]."
    assert parse_optfile(text, path="f").client.depth == 7  # as OTP's ets:insert does


def test_server_name_indication_choices() -> None:
    def client(value: str) -> ClientTlsOptions:
        text = f"[{{client, [{{server_name_indication, {value}}}]}}]."
        return parse_optfile(text.encode(), path="f").client

    assert ClientTlsOptions().server_name("10.0.0.1") == "10.0.0.1"
    assert client("disable").server_name_indication is ServerName.DISABLE
    assert client("disable").server_name("h") is None
    assert client('"other.example"').server_name("h") == "other.example"
    assert client('<<"bin.example">>').server_name("h") == "bin.example"


def test_cipher_forms() -> None:
    def ciphers(value: str) -> tuple[str, ...]:
        return parse_optfile(f"[{{server, [{{ciphers, {value}}}]}}].".encode(),
                             path="f").server.ciphers

    assert ciphers('"A-B:C-D"') == ("A-B", "C-D")
    assert ciphers('["A-B", <<"C-D">>]') == ("A-B", "C-D")
    assert ciphers("[]") == ciphers('""') == ()


def test_encoding_latin1_unless_declared() -> None:
    body = '[{server, [{certfile, "/c/é.pem"}]}].\n'
    assert parse_optfile(body.encode("latin-1"), path="f").server.certfile == "/c/é.pem"
    declared = ("%% -*- coding: utf-8 -*-\n" + body).encode()
    assert parse_optfile(declared, path="f").server.certfile == "/c/é.pem"
    with pytest.raises(TlsConfigError, match="not valid utf-8"):
        parse_optfile(b"%% coding: utf-8\n[{server, [{certfile, \"\xff\"}]}].", path="f")


def test_the_test_helpers_files_parse() -> None:
    text = optfile_text({"certfile": '"s.pem"', "verify": "verify_none"},
                        {"versions": "['tlsv1.3']"})
    options = parse_optfile(text.encode(), path="f")
    assert options.server.certfile == "s.pem"
    assert options.client.versions == (TlsVersion.TLS1_3,)


# (file text, line, column, option or None, a fragment of the problem)
REFUSED = [
    # OTP 25's ssl_dist_sup refuses a file without the dot too
    ("[{server, []}]", 1, 15, None, "expected a dot"),
    ("[{server, []}]. []", 1, 17, None, "after the term"),
    ("[{server,\n  [{certfile, \"a\"},\n   {colour, blue}]}].", 3, 4, "colour", "unknown option"),
    ("[{server, [\n  {depth, 300}]}].", 2, 11, "depth", "0..255"),
    ("[{server, [{depth, true}]}].", 1, 20, "depth", "integer"),
    ("[{server, [{verify, maybe}]}].", 1, 21, "verify", "verify_peer or verify_none"),
    ("[{server, [{verify, verify_peer}]}].", 1, 12, "verify", "needs cacertfile"),
    ("[{server, [{fail_if_no_peer_cert, true}]}].", 1, 12, "fail_if_no_peer_cert",
     "verify_peer"),
    ("[{client, [{fail_if_no_peer_cert, false}]}].", 1, 12, "fail_if_no_peer_cert",
     "server option"),
    ("[{server, [{server_name_indication, disable}]}].", 1, 12, "server_name_indication",
     "client option"),
    ("[{client, [{verify_fun, {fun inet_tls_dist:verify_client/3, []}}]}].", 1, 12,
     "verify_fun", "server option"),
    ("[{server, [{verify_fun, {fun my_mod:check/3, state}}]}].", 1, 25, "verify_fun",
     "runs Erlang code"),
    ("[{server, [{crl_check, peer}]}].", 1, 24, "crl_check", "not supported"),
    ("[{server, [{crl_check, true}]}].", 1, 24, "crl_check", "not supported"),
    ("[{client, [{customize_hostname_check, [{match_fun, x}]}]}].", 1, 39,
     "customize_hostname_check", "only []"),
    # OTP evaluates the file, so its docs' match_fun call works there; not here
    ("[{client, [{customize_hostname_check,\n"
     "  [{match_fun, public_key:pkix_verify_hostname_match_fun(https)}]}]}].", 2, 57, None,
     "function calls"),
    ("[{server, [{versions, ['tlsv1.1', 'tlsv1.2']}]}].", 1, 23, "versions", "tlsv1.1"),
    ("[{server, [{versions, []}]}].", 1, 23, "versions", "non-empty"),
    ("[{server, [{versions, ['tlsv9']}]}].", 1, 23, "versions", "unknown version tlsv9"),
    ("[{server, [{ciphers, [{ecdhe_rsa, aes_256_gcm, aead, sha384}]}]}].", 1, 22, "ciphers",
     "OpenSSL names"),
    ("[{server, [{ciphers, \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"}]}].", 1, 22, "ciphers",
     "RFC name"),
    ("[{server, [{ciphers, \"TLS_AES_512_GCM_SHA1024\"}]}].", 1, 22, "ciphers",
     "unknown TLS 1.3"),
    ("[{server, [{certfile, 42}]}].", 1, 23, "certfile", "file name"),
    ("[{server, [{certfile, \"\"}]}].", 1, 23, "certfile", "empty"),
    ("[{server, [{password, [256]}]}].", 1, 23, "password", "0..255"),
    ("[{server, [{secure_renegotiate, yes}]}].", 1, 33, "secure_renegotiate", "true or false"),
    ("{server, []}.", 1, 1, None, "list of sections"),
    ("[{server, [], extra}].", 1, 2, None, "a section is"),
    ("[{peer, []}].", 1, 2, None, "a section is"),
    ("[{server, {certfile, \"a\"}}].", 1, 11, None, "must be a list"),
    ("[{server, [verify_peer]}].", 1, 12, None, "{Name, Value}"),
    ("[{server, [{depth, 1 + 1}]}].", 1, 22, None, "syntax error"),
    ("[{server, [{depth, Depth}]}].", 1, 20, None, "syntax error"),
]


@pytest.mark.parametrize(("text", "line", "column", "option", "fragment"), REFUSED)
def test_refused_files_say_where_and_why(text: str, line: int, column: int,
                                         option: str | None, fragment: str) -> None:
    with pytest.raises(TlsConfigError) as info:
        parse_optfile(text.encode(), path="/etc/dist.conf")
    error = info.value
    assert (error.path, error.line, error.column, error.option) == (
        "/etc/dist.conf", line, column, option)
    assert fragment in error.problem
    prefix = f"/etc/dist.conf:{line}:{column}: " + ("" if option is None else f"{option}: ")
    assert str(error).startswith(prefix)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120) | st.text(alphabet="[]{},.'\"%<>:/#$\\ abcdefsrvlint_0123456789\n")
       .map(str.encode))
def test_any_bytes_parse_or_give_a_config_error(data: bytes) -> None:
    with contextlib.suppress(TlsConfigError):
        parse_optfile(data, path="f")


_NAMES = ["certfile", "keyfile", "cacertfile", "password", "verify", "depth", "versions",
          "ciphers", "secure_renegotiate", "reuse_sessions", "crl_check", "hibernate_after",
          "fail_if_no_peer_cert", "honor_cipher_order", "dhfile", "verify_fun",
          "server_name_indication", "customize_hostname_check", "other"]
_VALUES = st.recursive(
    st.sampled_from(["true", "false", "verify_peer", "verify_none", "disable", "save", "0",
                     "-1", "300", "1.5", '""', '"a:b"', '"TLS_AES_128_GCM_SHA256"', "<<>>",
                     '<<"x">>', "<<255>>", "'tlsv1.2'", "'tlsv1.3'", "tlsv1", "$a",
                     "fun inet_tls_dist:verify_client/3", "#{}"]),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
    | st.lists(inner, max_size=3).map(lambda xs: "{" + ", ".join(xs) + "}"),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["server", "client"]),
                          st.lists(st.tuples(st.sampled_from(_NAMES), _VALUES), max_size=4)),
                max_size=2))
def test_any_options_parse_or_give_a_config_error(
    sections: list[tuple[str, list[tuple[str, str]]]]
) -> None:
    text = "[" + ", ".join(
        f"{{{side}, [" + ", ".join(f"{{{name}, {value}}}" for name, value in options) + "]}"
        for side, options in sections) + "]."
    with contextlib.suppress(TlsConfigError):
        parse_optfile(text.encode(), path="f")


def test_deep_nesting_is_a_config_error() -> None:
    with pytest.raises(TlsConfigError, match="nested too deeply"):
        parse_optfile(b"[" * 5000 + b"]" * 5000 + b".", path="f")


# -- the term syntax additions this parser relies on ----------------------------------------

def test_parse_form_locates_every_element() -> None:
    text = "%% head\n[{a, 1},\n {b, [x, \"s\"]}]. % tail\n"
    top = parse_form(text)
    assert top.term == [(Atom("a"), 1), (Atom("b"), [Atom("x"), [115]])]
    second = top.items[1]
    assert (top.offset, second.offset) == (8, text.index("{b"))
    assert second.items[1].items[1].offset == text.index('"s"')


def test_parse_form_needs_the_dot_and_parse_does_not() -> None:
    with pytest.raises(TermSyntaxError) as info:
        parse_form("[1, 2]  % no dot")
    assert info.value.offset == len("[1, 2]  % no dot")
    assert parse("[1, 2]") == parse("[1, 2]. % a comment") == [1, 2]
    assert parse("16#ff.") == 255 and parse("1.") == 1


def test_external_funs_parse_and_format() -> None:
    fun = parse("fun inet_tls_dist:verify_client/3")
    assert fun == Export(Atom("inet_tls_dist"), Atom("verify_client"), 3)
    assert format_term(fun) == "fun inet_tls_dist:verify_client/3"
    assert parse("fun 'a b':c/0") == Export(Atom("a b"), Atom("c"), 0)
    with pytest.raises(TermSyntaxError, match="arity"):
        parse("fun m:f/x")


def test_syntax_errors_carry_their_offset() -> None:
    with pytest.raises(TermSyntaxError) as info:
        parse("{a, b c}")
    assert info.value.offset == 6 and "(at offset 6)" in str(info.value)
    for bad in ("[40#1]", "[2#9]"):
        with pytest.raises(TermSyntaxError, match="based integer") as info:
            parse(bad)
        assert info.value.offset == 1
