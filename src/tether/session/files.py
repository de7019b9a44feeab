"""Which paths the program opens in the target, and which here: the file rules.

`--fs read|write|local` (default read) and four lists of regular expressions, each searched
(re.search) in the absolute, cleaned path; the first rule that matches decides:

  1. --fs-not-found REGEX    the path does not exist (ENOENT)
  2. --fs-write REGEX        read and written in the target
  3. --fs-remote REGEX       read in the target; opened for writing: here
  4. --fs-local REGEX        here
  5. the built-in defaults   (default_rules: credentials not found; the resolver's and TLS
                             files read in the target; system, temporary, code and tool
                             directories, the working directory and the program here)
  6. the mode                read: as --fs-remote; write: as --fs-write

A relative path is matched as the working directory's path joined to it. Rules match the path's
bytes (UTF-8), as re.search(pattern.encode(), path) would: the layer runs them itself, compiled
here into programs for layer/files/rules.c's matcher, so no call waits on this process. That
matcher has no backreferences, lookaround, word boundaries or flags; a rule that needs one is
refused when tether starts, with the reason.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..protocol import files_wire
from ..protocol.files_wire import NOT_FOUND, READ, WRITE, LOCAL, Op

MODES = {"read": READ, "write": WRITE}
# Where tools and credentials for other clouds and clusters live: never this machine's.
CREDENTIALS = (".kube", ".aws", ".config/gcloud", ".azure", ".docker/config.json")
TARGET_READ = ("/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/etc/ssl/certs", "/etc/nsswitch.conf",
               "/etc/host.conf", "/etc/gai.conf")
RESOLVER = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf")
SYSTEM = ("/proc", "/sys", "/dev", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt",
          "/tmp", "/run", "/var/tmp")
CODE = (r"\.(py|pyc|pyi|pth|so|a|o|js|mjs|cjs|node|wasm|jar|class|rb|pl|pm)$", r"\.so(\.[0-9]+)+$",
        r"/(node_modules|__pycache__|site-packages|dist-packages)(/|$)")


class FileRuleError(ValueError):
    """A rule the layer cannot run; the message names it and says why."""


class FileRule(NamedTuple):
    pattern: str
    action: int
    source: str  # "--fs-remote", "default", ...

    def describe(self) -> str:
        return f"{self.source} {self.pattern!r}"


def _under(path: str) -> str:
    """A rule for path and everything under it."""
    return "^" + re.escape(path.rstrip("/") or "/") + "(/|$)"


def default_rules(exe: str | None, cwd: str, home: str | None, dns: bool) -> list[FileRule]:
    rules = []
    if home:
        rules += [FileRule(_under(os.path.join(home, c)), NOT_FOUND, "default (credentials)") for c in CREDENTIALS]
    if not dns:  # names resolve here: the resolver reads this machine's files
        rules += [FileRule("^" + re.escape(p) + "$", LOCAL, "default (--no-dns)") for p in RESOLVER]
    rules += [FileRule(_under(p), READ, "default (the target's)") for p in TARGET_READ]
    rules += [FileRule(_under(p), LOCAL, "default (system)") for p in SYSTEM]
    if exe:
        rules.append(FileRule("^" + re.escape(exe) + "$", LOCAL, "default (the program)"))
    rules.append(FileRule(_under(cwd), LOCAL, "default (working directory)"))
    if home:
        rules.append(FileRule("^" + re.escape(home.rstrip("/")) + r"/\.", LOCAL, "default (dot-directories)"))
    rules += [FileRule(p, LOCAL, "default (code)") for p in CODE]
    return rules


class FileRules:
    def __init__(self, mode: str, not_found=(), write=(), remote=(), local=(), *, exe: str | None = None,
                 cwd: str | None = None, home: str | None = None, dns: bool = True):
        if mode not in MODES and mode != "local":
            raise FileRuleError(f"--fs {mode!r}: use read, write or local")
        self.mode = mode
        given = [(not_found, NOT_FOUND, "--fs-not-found"), (write, WRITE, "--fs-write"),
                 (remote, READ, "--fs-remote"), (local, LOCAL, "--fs-local")]
        self.rules = [FileRule(p, action, flag) for patterns, action, flag in given for p in patterns]
        self.rules += default_rules(exe, cwd or os.getcwd(), home, dns)
        self.fallback = MODES.get(mode, LOCAL)
        self._classes: list[bytes] = []
        for r in self.rules:  # refused now, with the rule's name, rather than when the layer asks
            self._program(r)
        self._compiled = [re.compile(r.pattern.encode()) for r in self.rules]

    @property
    def enabled(self) -> bool:
        return self.mode != "local"

    def decide(self, path: str) -> tuple[int, FileRule | None]:
        """What the layer decides for the absolute, cleaned path (for -v and the tests)."""
        b = path.encode("utf-8", "surrogateescape")
        for rule, rx in zip(self.rules, self._compiled):
            if rx.search(b):
                return rule.action, rule
        return self.fallback, None

    def explain(self, rule_index: int, action: int) -> str:
        how = files_wire.ACTION_NAMES[action]
        if rule_index < 0 or rule_index >= len(self.rules):
            return f"{how} (--fs {self.mode})"
        return f"{how} ({self.rules[rule_index].describe()})"

    def _program(self, rule: FileRule) -> files_wire.Rule:
        try:
            ops = compile_pattern(rule.pattern, self._classes)
        except FileRuleError as e:
            raise FileRuleError(f"{rule.describe()}: {e}") from None
        return files_wire.Rule(rule.action, tuple(ops))

    def encode(self, verbose: bool, id: int) -> list[bytes]:
        """FILES_REPLY's frames for the layer."""
        self._classes = []
        programs = [self._program(r) for r in self.rules]
        flags = files_wire.FLAG_VERBOSE if verbose else 0
        try:
            return files_wire.encode_rules(programs, self._classes, self.fallback, flags, id)
        except ValueError as e:
            raise FileRuleError(f"{e}: use fewer or shorter --fs-* rules") from None


# The compiler: Python's own parser (re._parser, the one re.compile uses) reads the pattern,
# so what is accepted means what re means; this walks its tree into matcher ops.

from re import _constants as C  # noqa: E402
from re import _parser  # noqa: E402

_CATEGORY_OF = {}  # a category's 256-bit set, as re itself matches it on bytes


def _category(cat) -> set[int]:
    if cat not in _CATEGORY_OF:
        code = {C.CATEGORY_DIGIT: rb"\d", C.CATEGORY_NOT_DIGIT: rb"\D", C.CATEGORY_SPACE: rb"\s",
                C.CATEGORY_NOT_SPACE: rb"\S", C.CATEGORY_WORD: rb"\w", C.CATEGORY_NOT_WORD: rb"\W"}.get(cat)
        if code is None:
            raise FileRuleError(f"the class {cat} is not supported")
        rx = re.compile(code)
        _CATEGORY_OF[cat] = {c for c in range(256) if rx.fullmatch(bytes([c]))}
    return _CATEGORY_OF[cat]


def _set(items) -> set[int]:
    out, negate = set(), False
    for kind, value in items:
        if kind is C.NEGATE:
            negate = True
        elif kind is C.LITERAL:
            out.add(value)
        elif kind is C.RANGE:
            out.update(range(value[0], value[1] + 1))
        elif kind is C.CATEGORY:
            out |= _category(value)
        else:
            raise FileRuleError(f"{kind} in a character class is not supported")
    return set(range(256)) - out if negate else out


class _Emitter:
    def __init__(self, classes: list[bytes]):
        self.ops: list[list[int]] = []
        self.classes = classes

    def emit(self, op: int, arg: int = 0, x: int = 0) -> int:
        self.ops.append([op, arg, x])
        return len(self.ops) - 1

    def byte_set(self, members: set[int]) -> None:
        if len(members) == 1:
            self.emit(files_wire.OP_BYTE, next(iter(members)))
            return
        bits = bytearray(32)
        for c in members:
            bits[c // 8] |= 1 << (c % 8)
        if bytes(bits) not in self.classes:
            self.classes.append(bytes(bits))
        self.emit(files_wire.OP_CLASS, 0, self.classes.index(bytes(bits)))

    def node(self, kind, value) -> None:
        if kind is C.LITERAL:
            self.emit(files_wire.OP_BYTE, value)
        elif kind is C.NOT_LITERAL:
            self.byte_set(set(range(256)) - {value})
        elif kind is C.ANY:  # without (?s): not a newline
            self.byte_set(set(range(256)) - {10})
        elif kind is C.IN:
            members = _set(value)
            if not members:
                raise FileRuleError("an empty character class never matches")
            self.byte_set(members)
        elif kind is C.AT:
            if value in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
                self.emit(files_wire.OP_BOL)
            elif value in (C.AT_END, C.AT_END_STRING):
                self.emit(files_wire.OP_EOL, 1 if value is C.AT_END else 0)
            else:
                raise FileRuleError(f"{value} (a word boundary) is not supported")
        elif kind is C.SUBPATTERN:
            _group, add_flags, del_flags, sub = value
            if add_flags or del_flags:
                raise FileRuleError("flags inside a pattern ((?i:...)) are not supported")
            self.seq(sub)
        elif kind is C.BRANCH:
            ends = []
            alternatives = value[1]
            for i, alt in enumerate(alternatives):
                if i < len(alternatives) - 1:
                    split = self.emit(files_wire.OP_SPLIT)
                    self.seq(alt)
                    ends.append(self.emit(files_wire.OP_JMP))
                    self.ops[split][2] = len(self.ops)
                else:
                    self.seq(alt)
            for j in ends:
                self.ops[j][2] = len(self.ops)
        elif kind in (C.MAX_REPEAT, C.MIN_REPEAT):  # greedy or not: the same set of matches
            low, high, sub = value
            for _ in range(low):
                self.seq(sub)
            if high is C.MAXREPEAT:
                loop = self.emit(files_wire.OP_SPLIT)
                self.seq(sub)
                self.emit(files_wire.OP_JMP, 0, loop)
                self.ops[loop][2] = len(self.ops)
            else:
                splits = []
                for _ in range(high - low):
                    splits.append(self.emit(files_wire.OP_SPLIT))
                    self.seq(sub)
                for s in splits:
                    self.ops[s][2] = len(self.ops)
        else:
            name = {C.GROUPREF: "a backreference", C.GROUPREF_EXISTS: "a conditional group",
                    C.ASSERT: "a lookahead or lookbehind", C.ASSERT_NOT: "a negative lookaround",
                    C.POSSESSIVE_REPEAT: "a possessive repeat", C.ATOMIC_GROUP: "an atomic group"}.get(kind, str(kind))
            raise FileRuleError(f"{name} is not supported")
        if len(self.ops) > files_wire.OPS_MAX:
            raise FileRuleError(f"longer than the layer's {files_wire.OPS_MAX} steps; make it simpler")

    def seq(self, items) -> None:
        for kind, value in items:
            self.node(kind, value)


def compile_pattern(pattern: str, classes: list[bytes]) -> list[Op]:
    """The ops for rules.c that match where re.search(pattern.encode(), path) does; classes
    (shared by all rules) gets the byte sets they use."""
    try:
        tree = _parser.parse(pattern.encode("utf-8", "surrogateescape"))
    except re.error as e:
        raise FileRuleError(f"not a regular expression: {e}") from None
    if tree.state.flags & ~(C.SRE_FLAG_VERBOSE | C.SRE_FLAG_DOTALL):
        raise FileRuleError("flags ((?i), (?m), ...) are not supported")
    e = _Emitter(classes)
    items = list(tree)
    if tree.state.flags & C.SRE_FLAG_DOTALL:
        raise FileRuleError("(?s) is not supported")
    if not (items and items[0][0] is C.AT and items[0][1] in (C.AT_BEGINNING, C.AT_BEGINNING_STRING)):
        # re.search: try from every byte; a program for the matcher starts at the first.
        loop = e.emit(files_wire.OP_SPLIT)
        e.emit(files_wire.OP_ANY)
        e.emit(files_wire.OP_JMP, 0, loop)
        e.ops[loop][2] = len(e.ops)
    e.seq(items)
    e.emit(files_wire.OP_MATCH)
    if len(e.ops) > files_wire.OPS_MAX:
        raise FileRuleError(f"longer than the layer's {files_wire.OPS_MAX} steps; make it simpler")
    return [Op(*o) for o in e.ops]
