"""The pure parts of tether exec: outgoing rules, environment files and merging."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.agent.env import parse_env_file
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


def test_nameservers_go_to_the_target_even_on_its_loopback():
    policy = OutgoingPolicy.from_specs([], ["10.0.0.0/8"])
    policy.add_nameservers("# comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert policy.goes_to_target("127.0.0.53", 53) and not policy.goes_to_target("127.0.0.53", 80)
    assert policy.goes_to_target("fe80::1", 53) and policy.loopback_may_go
    assert not OutgoingPolicy.from_specs([], []).loopback_may_go
    assert OutgoingPolicy.from_specs([], [":53"]).loopback_may_go


@given(st.text(max_size=60))
def test_rule_parser_takes_any_text(spec):
    try:
        rule = parse_rule(spec)
    except PolicyError as e:
        assert "\n" not in str(e) and "use ADDRESS" in str(e)
    else:
        assert rule.network is not None or rule.port is not None


def test_env_file_format():
    text = ('# comment\nA=1\nexport B="two words"\nC=\'x\'\n  D = spaced \nnot an assignment\n'
            'E=a=b\nbad-key=1\n=nokey\n')
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "x", "D": "spaced", "E": "a=b"}


@given(st.text(max_size=300))
def test_env_file_parser_takes_any_text(text):
    env = parse_env_file(text)
    assert all(k and "=" not in k for k in env)
