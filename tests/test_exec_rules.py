"""The pure parts of tether exec: outgoing rules, environment files and merging."""
from __future__ import annotations

import ctypes
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.agent.env import parse_env_file
from tether.layer import layer_path
from tether.protocol.sockaddr import encode_inet
from tether.session.policy import OutgoingPolicy, PolicyError, parse_rule


@pytest.mark.parametrize("host, port, local, remote, expected", [
    ("198.18.0.1", 80, [], [], True),
    ("127.0.0.1", 80, [], [], False),
    ("::1", 80, [], [], False),
    ("::ffff:127.0.0.1", 80, [], [], False),
    ("0.0.0.0", 80, [], [], False),
    ("198.18.0.1", 80, ["198.18.0.0/15"], [], False),
    ("198.18.0.1", 81, ["198.18.0.1:80"], [], True),
    ("10.1.2.3", 5432, [], ["10.0.0.0/8"], True),
    ("198.18.0.1", 80, [], ["10.0.0.0/8"], False),          # --remote lists all that goes out
    ("127.0.0.1", 5432, [], ["127.0.0.1:5432"], True),      # the target's own loopback, asked for
    ("::ffff:10.0.0.1", 1, [], ["10.0.0.0/8"], True),
    ("2001:db8::1", 443, [], ["[2001:db8::]/32:443"], False),  # "[...]/32" is not a form
])
def test_outgoing_rules(host, port, local, remote, expected):
    try:
        policy = OutgoingPolicy.from_specs(local, remote)
    except PolicyError:
        assert expected is False
        return
    assert policy.goes_to_target(host, port) is expected


def test_host_rules_are_resolved_in_place():
    policy = OutgoingPolicy.from_specs(["db.internal:5432"], ["Web.Example.", "10.0.0.0/8"])
    assert policy.local[0].host == "db.internal" and policy.remote[0].host == "web.example"
    answers = {"db.internal": ["10.1.1.1", "fd00::1"], "web.example": ["10.1.1.1"]}
    policy.resolve_hosts(answers.__getitem__)
    assert not policy.goes_to_target("10.1.1.1", 5432) and policy.goes_to_target("10.1.1.1", 80)
    assert not policy.goes_to_target("fd00::1", 5432) and not policy.goes_to_target("192.0.2.1", 80)
    with pytest.raises(PolicyError, match="no address"):
        OutgoingPolicy.from_specs(["x.test"]).resolve_hosts(lambda name: [])
    for bad in ["-bad-.test", "a..b", "under score!", "1.2.3.4.5"]:
        with pytest.raises(PolicyError):
            parse_rule(bad)


def test_nameservers_go_to_the_target_even_on_its_loopback():
    policy = OutgoingPolicy.from_specs([], ["10.0.0.0/8"])
    policy.add_nameservers("# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert policy.goes_to_target("127.0.0.53", 53) and not policy.goes_to_target("127.0.0.53", 80)
    assert policy.goes_to_target("fe80::1", 53)


@given(st.text(max_size=60))
def test_rule_parser_takes_any_text(spec):
    try:
        rule = parse_rule(spec)
    except PolicyError as e:
        assert "\n" not in str(e) and "use ADDRESS" in str(e)
    else:
        assert rule.network is not None or rule.port is not None or rule.host


def test_env_file_format():
    text = ('# comment\nA=1\nexport B="two words"\nC=\'x\'\n  D = spaced \nnot an assignment\n'
            'E=a=b\nbad-key=1\n=nokey\n')
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "x", "D": "spaced", "E": "a=b"}


@given(st.text(max_size=300))
def test_env_file_parser_takes_any_text(text):
    env = parse_env_file(text)
    assert all(k and "=" not in k for k in env)


# The layer decides with layer/net/route.c from the list layer_rules() writes: both must agree.
_layer = ctypes.CDLL(str(layer_path()))
_layer.tether_route_verdict.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_long]

_v4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.sampled_from(
    [0, 0x7F000001, 0x7F000035, 0x0A000001, 0x0A0A0A0A, 0xC6120001, 0xC6120035, 0xC0A80101]) | st.integers(0, 2**32 - 1))
_v6 = st.sampled_from(["::", "::1", "2001:db8::1", "2001:db8:1::5", "fe80::1", "::ffff:127.0.0.1",
                       "::ffff:10.0.0.1", "::ffff:198.18.0.1"])
_addr = _v4 | _v6
_spec = st.one_of(
    _v4, _v6.map(lambda a: f"[{a}]"),
    st.tuples(_v4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(_v6, st.integers(0, 128)).map(lambda t: f"[{t[0]}/{t[1]}]"),
).flatmap(lambda base: st.sampled_from([base, f"{base}:53", f"{base}:8080"])) | st.sampled_from([":53", ":8080"])


@settings(max_examples=300)
@given(st.lists(_spec, max_size=4), st.lists(_spec, max_size=4), st.lists(st.tuples(_addr, st.sampled_from([53, 80, 8080]))))
def test_layer_and_session_agree_on_every_destination(local, remote, destinations):
    policy = OutgoingPolicy.from_specs(local, remote)
    rules = policy.layer_rules().encode()
    for host, port in destinations:
        sa = encode_inet(host, port)
        assert _layer.tether_route_verdict(rules, sa, len(sa)) == int(policy.goes_to_target(host, port)), \
            (rules, host, port)


def test_layer_refuses_malformed_rules():
    sa = encode_inet("10.0.0.1", 80)
    for bad in [b"", b"X4/0a000000/8/0;*R", b"R4/0a0000/8/0;*R", b"R4/0a000000/33/0;*R", b"R4/0a000000/8/0*R",
                b"R7//0/0;*R", b"*Q", b"*R;"]:
        assert _layer.tether_route_verdict(bad, sa, len(sa)) == -2, bad
