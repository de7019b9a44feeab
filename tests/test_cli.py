"""The `tether` command line as a user runs it: help, version, usage errors, and PROGRAM's
arguments reaching PROGRAM untouched. No root needed: PROGRAM runs under `tether trace`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tether import __version__, cli, config

TETHER = [sys.executable, "-m", "tether"]


def run(*args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return subprocess.run([*TETHER, *args], capture_output=True, text=True, timeout=60, env=clean,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command, lines", [
    ([], ["usage: tether [-h] [--version] COMMAND ...", "tether exec --target netns:NAME -- PROGRAM",
          "exec      Run PROGRAM with its outgoing connections", "config    The settings of `tether exec`"]),
    (["exec"], ["usage: tether exec [OPTIONS] [--] PROGRAM [ARGS...]",
                "\n  --local SPEC            stays here\n",  # the docstring's layout, without its indentation
                "\n  netns:NAME   a namespace from `ip netns add` (root)",
                "--target TARGET", "--dns, --no-dns", "--env KEY=VALUE", "--config FILE", "PROGRAM"]),
    (["trace"], ["usage: tether trace [OPTIONS] [--] PROGRAM [ARGS...]",
                 "\n  tether trace -- ./server --port 8080\n", "--output FILE", "-e CLASS,..."]),
    (["inspect"], ["usage: tether inspect [-h] [--json] [--no-cache] BINARY", "\nExit status: 0 supported",
                   "--no-cache"]),
    (["agent"], ["usage: tether agent", "\n  tether agent --new-token agent.token ", "--listen ADDRESS",
                 "--fd N"]),
    (["demo"], ["usage: tether demo", "\nSee tether work", "(default: auto)"]),
    (["config"], ["usage: tether config [-h] COMMAND ...", "schema    Print the JSON schema of tether.toml"]),
    (["config", "schema"], ["usage: tether config schema [-h]", "\nPrint the JSON schema of tether.toml"]),
    (["config", "show"], ["usage: tether config show [-h] [--config FILE]",
                          "\nPrint the settings `tether exec`"]),
])
def test_every_command_has_help(command, lines):
    for flag in ("-h", "--help"):
        r = run(*command, flag)
        assert r.returncode == 0 and r.stderr == "", (command, flag, r.stderr)
        for line in lines:
            assert line in r.stdout, (command, flag, line, r.stdout)


def test_version():
    r = run("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"tether, version {__version__}\n", "")


@pytest.mark.parametrize("command", [[], ["config"]])
def test_a_missing_command_shows_the_help_as_a_usage_error(command):
    r = run(*command)
    assert r.returncode == 2 and r.stdout == "" and "commands:" in r.stderr and "-h" in r.stderr


@pytest.mark.parametrize("argv, message", [
    (["exec", "--no-such-flag", "x"], "tether exec: error: unrecognized arguments: --no-such-flag "
                                      "(`tether exec -h` lists the options)"),
    (["trace", "--targ", "x", "--", "true"], "tether trace: error: unrecognized arguments: --targ"),
    (["inspect", "--bogus", "/bin/true"], "tether inspect: error: unrecognized arguments: --bogus"),
    (["config", "show", "extra"], "tether config show: error: unrecognized arguments: extra"),
    (["nosuch"], "tether: error: argument COMMAND: invalid choice: 'nosuch'"),
    (["exec", "-t", "netns:x"], "tether exec: error: no PROGRAM: give it after the options"),
    (["exec", "-t", "netns:x", "--"], "tether exec: error: no PROGRAM"),
    (["trace"], "tether trace: error: no PROGRAM: give it after the options, "
                "e.g. `tether trace -- ./program`"),
    (["inspect"], "the following arguments are required: BINARY"),
    (["agent"], "tether agent: error: give --listen ADDRESS (with --token-file) or --fd N"),
    (["agent", "--fd", "three"], "argument --fd: invalid int value: 'three'"),
    (["demo", "--client", "rust"], "argument --client: invalid choice: 'rust'"),
    (["trace", "-o", "/tmp", "--", "true"], "argument -o/--output: /tmp is a directory; give a file"),
])
def test_usage_errors_exit_2_and_say_why(argv, message):
    r = run(*argv)
    assert r.returncode == 2 and message in r.stderr and r.stdout == "", r.stderr
    assert "usage: tether" in r.stderr


@pytest.mark.parametrize("argv, printed", [
    (["--", "/bin/echo", "--target", "x", "-v"], "--target x -v"),  # tether's options, but PROGRAM's here
    (["/bin/echo", "-o", "x"], "-o x"),  # no --: from the first positional on, all is PROGRAM's
    (["--json", "/bin/echo", "--json", "-h", "--version"], "--json -h --version"),
    (["--", "/bin/echo", "--", "a"], "-- a"),  # only the first -- is tether's
])
def test_program_arguments_reach_the_program_untouched(argv, printed):
    r = run("trace", *argv)
    assert (r.returncode, r.stdout) == (0, printed + "\n"), r.stderr


def test_the_program_exit_status_passes_through():
    assert run("trace", "--", "sh", "-c", "exit 7").returncode == 7


def test_exec_flags_are_those_given_and_beat_the_environment():
    args = cli.parse(["exec", "--no-dns", "--local", "10.0.0.0/8", "--local", "db:5432", "--env", "A=1",
                      "-t", "netns:blue", "--", "./prog", "--dns", "-v"])
    assert args.run is cli.exec.run and args.program == ["./prog", "--dns", "-v"]
    flags = cli.exec.flag_settings(args)
    assert flags == {"target_spec": "netns:blue", "dns": False, "local_rules": ("10.0.0.0/8", "db:5432"),
                     "env_overrides": ("A=1",)}
    environ = {"TETHER_DNS": "1", "TETHER_LOCAL": "192.0.2.1", "TETHER_VERBOSE": "1",
               "TETHER_REMOTE": "10.1.0.0/16"}
    settings, sources = config.effective(flags, None, environ)
    assert (settings["dns"], sources["dns"]) == (False, "flag --dns/--no-dns")
    assert (settings["local_rules"], sources["local"]) == (("10.0.0.0/8", "db:5432"), "flag --local")
    assert (settings["verbose"], sources["verbose"]) == (True, "TETHER_VERBOSE")  # not given: the variable
    assert (settings["remote_rules"], sources["remote"]) == (("10.1.0.0/16",), "TETHER_REMOTE")
    assert cli.exec.flag_settings(cli.parse(["exec", "--dns", "-v", "prog"])) == {"dns": True, "verbose": True}
    assert cli.exec.flag_settings(cli.parse(["exec", "prog"])) == {}


def test_every_setting_has_its_flag():
    """config.KEYS' params are the dests of `tether exec`'s flags, which each key names."""
    for key in config.KEYS:
        flag = key.flag.partition("/")[0]
        value = [] if key.kind == "bool" else [key.choices[0] if key.choices else "x"]
        args = cli.parse(["exec", flag, *value, "prog"])
        assert key.param in cli.exec.flag_settings(args), key


def test_repeated_options_reach_the_session(tmp_path):
    token = tmp_path / "agent.token"
    assert run("agent", "--new-token", str(token)).returncode == 0
    # A unix: target is not reached before the rules are read: their errors come first.
    target = ["exec", "-t", f"unix:{tmp_path}/none.sock", "--token-file", str(token)]
    r = run(*target, "--env", "A=1", "--env", "NOEQUALS", "--", "true")
    assert r.returncode == 2 and "exec: error: --env 'NOEQUALS': expected KEY=VALUE" in r.stderr, r.stderr
    r = run(*target, "--remote", "10.0.0.0/8", "--remote", "not a host", "--", "true")
    assert r.returncode == 2 and "'not a host' is not an IP address" in r.stderr, r.stderr
    r = run(*target, "--env", "A=1", "--remote", "10.0.0.0/8", "--", "true")  # good rules: on to the target
    assert r.returncode == 2 and f"no socket at {tmp_path}/none.sock" in r.stderr, r.stderr


def test_parsing_imports_nothing_else_of_tether():
    """The command line costs start-up time: each command imports what it needs itself; the parser
    needs only the commands' own modules (tether.cli.*)."""
    code = ("import sys, tether.cli; tether.cli.parse(['exec', '-t', 'netns:x', '--', 'p']); print(' '.join("
            "sorted(m for m in sys.modules if m.split('.')[0] in ('tether', 'rich', 'click'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    imported = r.stdout.split()
    assert imported[:2] == ["tether", "tether.cli"] and all(m.startswith("tether.cli.") for m in imported[2:]), imported
