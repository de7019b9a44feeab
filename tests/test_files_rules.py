"""The file rules: the session compiles each regular expression into a program for the layer's
matcher (layer/files/rules.c), which must decide every path as Python's re.search does."""
from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.protocol import files_wire, wire
from tether.session.files import FileRuleError, FileRules, compile_pattern

LAYER = Path(__file__).resolve().parents[1] / "layer"


@pytest.fixture(scope="module")
def matcher(tmp_path_factory):
    """rules.c alone, built as a library: the layer's matcher, called with ctypes."""
    lib = tmp_path_factory.mktemp("rules") / "rules.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-ffreestanding", "-I", str(LAYER),
                    str(LAYER / "files" / "rules.c"), "-o", str(lib)], check=True)
    dll = ctypes.CDLL(str(lib))
    dll.tether_files_rules_buffer.restype = ctypes.POINTER(ctypes.c_ubyte)
    dll.tether_files_rules_set.argtypes = [ctypes.c_ulong]
    dll.tether_files_decide.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ubyte)]
    return dll


def load(dll, frames: list[bytes]) -> int:
    """The rules' frames into the matcher, as link/session.c assembles them; its verdict."""
    payload = b"".join(wire.decode_frame(f).payload for f in frames)
    size = ctypes.c_ulong()
    buf = dll.tether_files_rules_buffer(ctypes.byref(size))
    assert len(payload) <= size.value
    ctypes.memmove(buf, payload, len(payload))
    return dll.tether_files_rules_set(len(payload))


def decide(dll, path: bytes) -> tuple[int, int]:
    action = ctypes.c_ubyte()
    rule = dll.tether_files_decide(path, len(path), ctypes.byref(action))
    return rule, action.value


def one_rule(pattern: str) -> list[bytes]:
    classes: list[bytes] = []
    program = files_wire.Rule(files_wire.READ, tuple(compile_pattern(pattern, classes)))
    return files_wire.encode_rules([program], classes, files_wire.LOCAL, 0, 3)


# Patterns from the pieces the matcher takes, over a small alphabet so that paths match often.
ALPHABET = "ab/.\n"
atoms = st.one_of(
    st.sampled_from(["a", "b", "/", r"\.", ".", "[ab]", "[^/]", "[a-b/]", r"\d", r"\w", r"\s", r"\W", "[.]"]),
)


def _patterns():
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "*?", "{2}", "{0,2}", "{1,3}", "{2,}"]))
              .map(lambda t: f"(?:{t[0]}){t[1]}"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}|{t[1]})"),
            st.tuples(st.sampled_from(["^", "", r"\A"]), inner, st.sampled_from(["$", "", r"\Z"]))
              .map("".join),
        ),
        max_leaves=8,
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_patterns(), st.lists(st.text(ALPHABET, max_size=12), min_size=1, max_size=8))
def test_the_layer_decides_as_re_search(matcher, pattern, paths):
    try:
        frames = one_rule(pattern)
    except FileRuleError as e:
        assert "longer than" in str(e)  # every piece generated here is supported
        return
    assert load(matcher, frames) == 0
    rx = re.compile(pattern.encode())
    for p in paths:
        b = p.encode()
        expected = (0, files_wire.READ) if rx.search(b) else (-1, files_wire.LOCAL)
        assert decide(matcher, b) == expected, (pattern, p)


def test_the_first_matching_rule_decides_in_the_order_of_the_issue(matcher):
    rules = FileRules("read", not_found=["secret"], write=["^/data/"], remote=["^/etc/app"], local=["^/etc/app/cache"],
                      exe="/opt/x/bin/server", cwd="/home/dev/src", home="/home/dev")
    assert load(matcher, rules.encode(False, 3)) == 0
    cases = {
        "/etc/app/secret.yaml": files_wire.NOT_FOUND, "/data/x": files_wire.WRITE,
        "/etc/app/cache/1": files_wire.READ,  # --fs-remote comes before --fs-local
        "/etc/passwd": files_wire.READ, "/home/dev/.kube/config": files_wire.NOT_FOUND,
        "/home/dev/.bashrc": files_wire.LOCAL, "/home/dev/src/main.go": files_wire.LOCAL,
        "/home/dev/other/notes": files_wire.READ, "/usr/lib/x.so": files_wire.LOCAL, "/tmp": files_wire.LOCAL,
        "/etc/resolv.conf": files_wire.READ, "/var/lib/app/db": files_wire.READ, "/srv/app.py": files_wire.LOCAL,
        "/opt/x/bin/server": files_wire.LOCAL, "/procfs": files_wire.READ,
    }
    for path, action in cases.items():
        rule, got = decide(matcher, path.encode())
        want, which = rules.decide(path)
        assert (got, want) == (action, action), path
        assert rule == (rules.rules.index(which) if which else -1), path
    for path in ("/etc/app/x", "/var/x", "/", "/home/dev/.kube"):
        assert rules.explain(*decide(matcher, path.encode())) == rules.explain(
            rules.rules.index(r) if (r := rules.decide(path)[1]) else -1, rules.decide(path)[0])


@pytest.mark.parametrize("pattern, why", [
    (r"(a)\1", "backreference"), (r"a(?=b)", "lookahead"), (r"(?i)etc", "flags"), (r"\bx", "word boundary"),
    (r"(?i:x)", "flags"), ("a" * 300, "longer than"), ("[", "not a regular expression"), (r"a++", "possessive"),
])
def test_rules_the_matcher_cannot_run_are_refused_with_the_reason(pattern, why):
    with pytest.raises(FileRuleError, match=why):
        FileRules("read", remote=[pattern], cwd="/w", home="/h")
    with pytest.raises(FileRuleError, match=r"--fs-remote"):
        FileRules("read", remote=[pattern], cwd="/w", home="/h")


def test_too_many_rules_are_refused_when_tether_starts():
    with pytest.raises(FileRuleError, match="fewer or shorter"):
        FileRules("read", remote=[f"^/etc/app{i}/[a-z]+/x{i}" for i in range(300)], cwd="/w", home="/h").encode(False, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_malformed_rules_are_refused_not_run(matcher, blob):
    """Whatever arrives, the matcher takes only rules whose every jump and class is in range."""
    size = ctypes.c_ulong()
    buf = matcher.tether_files_rules_buffer(ctypes.byref(size))
    ctypes.memmove(buf, blob, len(blob))
    if matcher.tether_files_rules_set(len(blob)) == 0:
        for p in (b"", b"/etc/x", b"a" * 300):
            decide(matcher, p)  # must not crash or loop
