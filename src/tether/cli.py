"""The `tether` command line."""
from __future__ import annotations

import argparse
import sys

from . import __version__

EXIT_SUPPORTED, EXIT_UNSUPPORTED, EXIT_ERROR = 0, 1, 2
PROGRAM_USAGE = "%(prog)s [OPTIONS] [--] PROGRAM [ARGS...]"


def main(argv: list[str] | None = None) -> None:
    """Run a Linux program with its network, DNS, files and environment taken from a target.

      tether exec --target netns:NAME -- PROGRAM   run PROGRAM with the target's network,
                                                   DNS and environment
      tether trace -- PROGRAM   every syscall through tether's hooks
      tether inspect BINARY     what tether sees in a binary and whether it can hook it
      tether demo               see it work, in a throwaway namespace (root)
    Go programs are hooked at their own syscall entry, programs using libc (C, Python, curl,
    ...) at libc's entry points for sockets, I/O, files, name lookups, fork and exec.
    """
    args = parse(sys.argv[1:] if argv is None else argv)
    args.run(args)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line: args.run(args) runs the command, args.parser reports its usage errors.
    Usage errors exit 2 with the reason; --help and --version exit 0."""
    top = argparse.ArgumentParser(prog="tether", description=main.__doc__,
                                  formatter_class=_DocstringFormatter, allow_abbrev=False)
    top.add_argument("--version", action="version", version=f"tether, version {__version__}")
    top.set_defaults(run=_missing_command, parser=top)
    commands = top.add_subparsers(title="commands", metavar="COMMAND", help="`tether COMMAND -h` tells more")

    # Settings of `tether exec` default to None, "not given": config.effective then looks at
    # TETHER_*, tether.toml and the default in turn. The dests are config.KEYS' params.
    p = _add_command(commands, "exec", exec_, usage=PROGRAM_USAGE)
    p.add_argument("-t", "--target", dest="target_spec", metavar="TARGET",
                   help="Where the program's network, DNS and environment come from: netns:NAME, pid:PID, "
                        "tcp://HOST:PORT or unix:PATH.")
    p.add_argument("--token-file", type=_file, metavar="FILE",
                   help="The token of a tcp:// or unix: agent (the file it was started with).")
    p.add_argument("--local", dest="local_rules", action="append", metavar="SPEC",
                   help="Connections to SPEC stay on this machine (repeatable).")
    p.add_argument("--remote", dest="remote_rules", action="append", metavar="SPEC",
                   help="Only connections to SPEC go out from the target (repeatable).")
    p.add_argument("--env", dest="env_overrides", action="append", metavar="KEY=VALUE",
                   help="Set KEY for the program, whatever the target says (repeatable).")
    p.add_argument("--env-include", action="append", metavar="PATTERN",
                   help="Take only the target's variables matching PATTERN (repeatable).")
    p.add_argument("--env-exclude", action="append", metavar="PATTERN",
                   help="Never take the target's variables matching PATTERN (repeatable).")
    p.add_argument("--dns", action=argparse.BooleanOptionalAction,
                   help="Resolve names in the target (default) or on this machine.")
    p.add_argument("-v", "--verbose", action="store_true", default=None,
                   help="Write debug logs to a file (its path is printed).")
    p.add_argument("--log-file", type=_file, metavar="FILE",
                   help="Where -v writes (default: a new file in /tmp).")
    p.add_argument("--config", dest="config_file", type=_file, metavar="FILE",
                   help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")
    _add_program(p)

    p = _add_command(commands, "trace", trace, usage=PROGRAM_USAGE)
    p.add_argument("-o", "--output", type=_file, metavar="FILE",
                   help="Write the trace to FILE instead of stderr.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="One JSON object per syscall (see README).")
    p.add_argument("-e", dest="classes", metavar="CLASS,...",
                   help="Only these classes: net, file, process (default: all).")
    _add_program(p)

    p = _add_command(commands, "inspect", inspect)
    p.add_argument("binary", metavar="BINARY", help="The ELF file to analyse.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="Print the report as JSON (docs/inspect-json.md).")
    p.add_argument("--no-cache", action="store_true",
                   help="Analyse again instead of using the cached report.")

    p = _add_command(commands, "agent", agent)
    p.add_argument("--listen", dest="listen_address", metavar="ADDRESS",
                   help="Serve sessions that connect here: tcp:HOST:PORT (port 0: any free one) "
                        "or unix:PATH.")
    p.add_argument("--token-file", type=_file, metavar="FILE",
                   help="With --listen: only peers that prove this token are served (required).")
    p.add_argument("--new-token", type=_file, metavar="FILE",
                   help="Write a new random token to FILE (mode 0600) and exit.")
    p.add_argument("--fd", type=int, metavar="N",
                   help="Serve one session on this inherited unix SOCK_SEQPACKET socket.")
    p.add_argument("--env-file", type=_file, metavar="FILE",
                   help="Report the environment in this file (/etc/environment format) as the target's, "
                        "instead of the agent's own.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="Log every connection and operation to stderr.")

    p = _add_command(commands, "demo", demo)
    p.add_argument("--client", choices=["auto", "go", "python"], default="auto",
                   help="The demo's client: Go (built here), Python, or Go when a toolchain is found "
                        "(default: %(default)s).")

    p = _add_command(commands, "config", config_)
    config_commands = p.add_subparsers(title="commands", metavar="COMMAND",
                                       help="`tether config COMMAND -h` tells more")
    _add_command(config_commands, "schema", config_schema)
    p = _add_command(config_commands, "show", config_show)
    p.add_argument("--config", dest="config_file", type=_file, metavar="FILE",
                   help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")

    args, unknown = top.parse_known_args(argv)
    if unknown:  # argparse would show the top usage for a command's unknown options: show the command's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)} "
                          f"(`{args.parser.prog} -h` lists the options)")
    if "program" in args:
        if args.program[:1] == ["--"]:  # the -- that ends tether's options (REMAINDER keeps it)
            del args.program[0]
        if not args.program:
            args.parser.error(f"no PROGRAM: give it after the options, "
                              f"e.g. `{args.parser.prog} -- ./program`")
    return args


class _DocstringFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows the commands' docstrings as laid out in the source, their indentation removed."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # only for help and --version (inspect.cleandoc would cost --version 5-10 ms)

        summary, _, details = text.partition("\n")
        return super()._fill_text(summary + "\n" + textwrap.dedent(details), width, indent)


def _add_command(commands, name: str, function, usage: str | None = None) -> argparse.ArgumentParser:
    """A command that runs function(args), documented by its docstring (the first line in the list)."""
    parser = commands.add_parser(name, help=function.__doc__.partition("\n")[0], description=function.__doc__,
                                 usage=usage, formatter_class=_DocstringFormatter, allow_abbrev=False)
    parser.set_defaults(run=function, parser=parser)
    return parser


def _add_program(parser: argparse.ArgumentParser) -> None:
    # REMAINDER: everything from the first argument that is not one of our options (or from
    # --) is the program's, options such as -v or --target included.
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="PROGRAM",
                        help="The program to run and its arguments: all that follows is theirs.")


def _file(path: str) -> str:
    """A FILE argument: it need not exist, but must not be a directory."""
    import os

    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a directory; give a file")
    return path


def _missing_command(args: argparse.Namespace) -> None:
    """`tether` or `tether config` without a command: its help, as a usage error."""
    args.parser.print_help(sys.stderr)
    sys.exit(EXIT_ERROR)


def inspect(args: argparse.Namespace) -> None:
    """Report BINARY's ELF facts, Go version and hook plan, and whether tether can hook it.

    The hook plan lists the Go functions the layer patches (the syscall entry every Go
    syscall reaches, for the binary's Go version) and the runtime functions its trampolines
    call, with addresses read from the binary's own function table: stripped binaries get
    the same plan as unstripped ones.

    Exit status: 0 supported, 1 readable but not supported (the reason and fix are printed),
    2 not an ELF file, unreadable, truncated or corrupt.
    """
    from .analysis.cache import inspect_binary
    from .analysis.elf import ElfError

    try:
        report = inspect_binary(args.binary, use_cache=not args.no_cache)
    except ElfError as e:
        print(f"tether inspect: {args.binary}: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    if args.as_json:
        import json

        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    sys.exit(EXIT_SUPPORTED if report["verdict"]["supported"] else EXIT_UNSUPPORTED)


def _print_report(r: dict) -> None:
    from rich.console import Console  # imported here: --json and errors need no rich

    console = Console(highlight=False)
    kind = "shared object" if r["shared_object"] else ("PIE executable" if r["pie"] else "executable")
    facts = [
        ("file", r["path"]),
        ("ELF", f"{r['elf_class']}-bit {r['machine']} {r['elf_type']} ({kind})"),
        ("linkage", r["linkage"] + (f", interpreter {r['interpreter']}" if r["interpreter"] else "")),
        ("symbols", "stripped (no .symtab)" if r["stripped"] else "symbol table present"),
    ]
    go = r["go"]
    if go:
        facts.append(("Go", go["version"]))
        if go["path"]:
            facts.append(("main package", go["path"]))
        if go["main_module"] and go["main_module"] != go["path"]:
            facts.append(("main module", go["main_module"]))
    else:
        facts.append(("Go", "no (no Go build info)"))
    width = max(len(k) for k, _ in facts)
    for k, v in facts:
        console.print(f"[bold]{k:<{width}}[/]  {v}", soft_wrap=True)

    functions = [("patch", f) for f in r["hooks"]] + [("call", f) for f in r["runtime"]]
    if functions:
        rows = [("use", "role", "function", "ABI", "address", "offset", "size")]
        rows += [(use, f["role"], f["name"], f["abi"], f"{f['address']:#x}", f"{f['offset']:#x}",
                  str(f["size"])) for use, f in functions]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        console.print("\n[bold]hook plan[/]")
        for n, row in enumerate(rows):
            cells = [c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            line = "  ".join(cells).rstrip()
            console.print(f"[bold]{line}[/]" if n == 0 else line, soft_wrap=True)
    v = r["verdict"]
    console.print()
    mark = "[green]supported[/]" if v["supported"] else "[red]unsupported[/]"
    console.print(f"{mark}: {v['reason']}", soft_wrap=True)
    if v["fix"]:
        console.print(f"fix: {v['fix']}", soft_wrap=True)
    for note in v["notes"]:
        console.print(f"note: {note}", soft_wrap=True)


def trace(args: argparse.Namespace) -> None:
    """Run PROGRAM and print every syscall that passes through tether's hooks.

      tether trace -- ./server --port 8080
      tether trace -e net -o trace.txt -- go-program args
      tether trace --json -- ./client | jq .

    Lines look like strace's, tagged with pid and thread id:
      [4242 4245] connect(3, {AF_INET, 127.0.0.1:8080}, 16) = -1 ECONNREFUSED (Connection refused)
    Children are traced too. The program's own stdin, stdout and stderr are untouched; the
    trace goes to stderr or FILE. Exit status: the program's (128+N if a signal ended it);
    2 if tether itself could not start it (the reason is printed), 126/127 as a shell would.
    Go programs are traced at their syscall entry; programs using libc at libc's entry
    points for sockets, descriptor I/O, files, fork and exec (README lists them).
    """
    from .protocol import wire
    from .session.launch import LaunchError, run
    from .session.server import LayerServer
    from .trace.printer import Printer, parse_classes

    try:
        wanted = parse_classes(args.classes)
    except ValueError as e:
        args.parser.error(str(e))
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stderr
    except OSError as e:
        print(f"tether trace: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    warn = lambda msg: print(f"tether trace: {msg}", file=sys.stderr)  # noqa: E731
    printer = Printer(out, args.as_json, wanted, warn)
    server = LayerServer(wire.MODE_TRACE, printer.event, printer.hello, warn, printer.flush)
    try:
        code = run(args.program, server, started=lambda pid: setattr(printer, "main_pid", pid))
    except LaunchError as e:
        print(f"tether trace: {e}", file=sys.stderr)
        code = e.code
    finally:
        printer.finish()
        server.close()
        if args.output:
            try:
                out.close()
            except OSError:
                pass  # what it could not write was reported (Printer.failed)
    sys.exit(code)


def exec_flags(args: argparse.Namespace) -> dict[str, object]:
    """The settings of `tether exec` given on its command line, by parameter name, as
    config.effective takes them (repeated options as tuples)."""
    from . import config

    return {key.param: tuple(value) if isinstance(value, list) else value
            for key in config.KEYS if (value := getattr(args, key.param)) is not None}


def exec_(args: argparse.Namespace) -> None:
    """Run PROGRAM with its outgoing connections, name lookups and environment taken from TARGET.

      sudo tether exec --target netns:blue -- ./client https://api.internal/
      tether exec -t netns:blue --remote 10.0.0.0/8 --env-exclude 'AWS_*' -- go run .

    Outgoing TCP and UDP: the socket is made inside the target and handed to the program, so
    data flows at native speed. Which destinations go out from the target (first match wins):
      --local SPEC            stays here
      --remote SPEC           goes out from the target
      (any --remote given)    everything else stays here
      loopback, 0.0.0.0       stays here
      anything else           goes out from the target
    SPEC: ADDRESS, CIDR or HOST (resolved in the target), each with an optional :PORT
    ([IPV6]:PORT), or :PORT alone.

    DNS: names resolve as in the target: Go's resolver reads the target's resolv.conf and hosts
    and asks its name servers from there; libc's lookups (getaddrinfo, gethostbyname,
    getnameinfo, ...) are answered by the agent there (--no-dns: resolve here).
    Environment: the target's variables are added to this one's, except those about this
    machine and your tools (PATH, HOME, TERM, LANG, SHELL, PWD, LD_*, GO*, PYTHON*, ...).

    Targets:
      netns:NAME   a namespace from `ip netns add` (root); /etc/netns/NAME/ files such as
                   resolv.conf, hosts and environment are the target's
      pid:PID      the network, UTS and mount namespaces of a running process, e.g. a
                   container's (`docker inspect -f '{{.State.Pid}}' NAME`; root); its files
                   and its own environment are the target's
      tcp://HOST:PORT, unix:PATH
                   a `tether agent --listen ... --token-file FILE` running there; give the
                   same token file with --token-file. Over TCP the agent relays each
                   connection's bytes (sockets cannot cross machines); over unix: sockets
                   are handed over as for netns:

    Settings: each flag also has a TETHER_* variable (TETHER_TARGET, TETHER_LOCAL, TETHER_DNS=0,
    ...; lists space-separated) and a key in tether.toml (target, token_file, local, remote, env,
    env_include, env_exclude, dns, verbose, log_file); a flag beats the variable, which beats the file.
    `tether config show` prints what applies, `tether config schema` the file's JSON schema.

    Exit status: the program's (128+N if signal N ended it); 2 if tether could not start it or
    reach the target (the reason is printed); 126/127 as a shell would.
    """
    import os
    import time

    from . import config
    from .targets import TargetError, open_target

    try:
        config_path = config.find(args.config_file or os.environ.get("TETHER_CONFIG"))
        settings, _ = config.effective(exec_flags(args), config_path, dict(os.environ))
    except config.ConfigError as e:
        print(f"tether exec: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    target_spec, token_file = settings["target_spec"], settings["token_file"]
    local_rules, remote_rules = settings["local_rules"], settings["remote_rules"]
    env_overrides, env_include, env_exclude = settings["env_overrides"], settings["env_include"], settings["env_exclude"]
    no_dns, verbose, log_file = not settings["dns"], settings["verbose"], settings["log_file"]
    if not target_spec:
        args.parser.error("no target: give --target TARGET, TETHER_TARGET, or target in tether.toml")

    def say(msg: str, style: str = "bold red") -> None:
        if not sys.stderr.isatty():
            print(f"tether exec: {msg}", file=sys.stderr)
            return
        from rich.console import Console  # only for a terminal: it costs start-up time
        from rich.markup import escape

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[{style}]tether exec:[/] {escape(msg)}")

    def fail(msg: str, code: int = EXIT_ERROR):
        say(msg)
        sys.exit(code)

    log, agent_log = None, None  # logging is imported only for a debug log: start-up time
    if verbose or log_file:
        import logging
        import tempfile

        if not log_file:
            fd, log_file = tempfile.mkstemp(prefix="tether-exec-", suffix=".log")
            os.close(fd)
        agent_log = (log_file, "%(asctime)s %(name)s %(levelname)s %(message)s", logging.DEBUG)
        logging.basicConfig(filename=log_file, level=logging.DEBUG, format=agent_log[1])
        print(f"tether exec: debug log in {log_file}", file=sys.stderr)
        log = logging.getLogger("tether.exec")
    start = time.monotonic()
    try:
        target = open_target(target_spec, wait=False, token_file=token_file, log=agent_log)
    except TargetError as e:
        fail(str(e))
    # While the agent starts (importing asyncio is most of its start): what only this side needs.
    from .protocol import wire
    from .session.agent_link import AgentError, LinkError
    from .session.environment import EnvError, EnvRules, merge
    from .session.launch import LaunchError, run
    from .session.policy import OutgoingPolicy, PolicyError
    from .session.server import LayerServer

    try:
        policy = OutgoingPolicy.from_specs(list(local_rules), list(remote_rules))
        env_rules = EnvRules(list(env_include), list(env_exclude), EnvRules.parse_overrides(list(env_overrides)))
    except (PolicyError, EnvError) as e:
        target.close()
        args.parser.error(str(e))
    try:
        if sys.stderr.isatty():
            from rich.console import Console

            with Console(stderr=True).status(f"starting the agent in {target_spec}", spinner="dots"):
                target.ready()
        else:
            target.ready()
    except TargetError as e:
        fail(str(e))

    def resolve_in_target(name: str) -> list[str]:
        try:
            return target.link.resolve(name)
        except AgentError as e:
            raise PolicyError(f"{name} does not resolve in {target_spec}: {e}") from None

    server = None
    try:
        try:
            env, taken = merge(dict(os.environ), target.link.env(), env_rules)
            mode = wire.MODE_NET
            if target.capabilities & wire.CAP_SOCKETS:
                mode |= wire.MODE_SOCKETS
            if not no_dns:
                mode |= wire.MODE_DNS
                try:
                    policy.add_nameservers(target.link.read_file("/etc/resolv.conf").decode(errors="replace"))
                except AgentError as e:
                    if log:
                        log.info("target has no resolv.conf: %s", e)
            policy.resolve_hosts(resolve_in_target)
            rules = policy.layer_rules()
        except LinkError as e:
            fail(f"{target_spec}: {e}")
        except PolicyError as e:
            fail(str(e))
        if log:
            log.info("target %s ready in %.0f ms; variables from the target: %s; name servers: %s; rules: %s",
                     target_spec, (time.monotonic() - start) * 1000, " ".join(taken) or "none",
                     " ".join(r.text for r in policy.nameservers) or "none", rules)
        server = LayerServer(mode, on_event=lambda e: None, warn=lambda msg: say(msg, "bold yellow"),
                             agent=target.link, agent_socket=target.agent_socket, rules=rules,
                             on_agent_lost=lambda why: say(
                                 f"lost the agent in {target_spec} ({why}); connections to the target "
                                 "now fail with ECONNREFUSED", "bold yellow"))
        try:
            code = run(args.program, server, base_env=env)
        except LaunchError as e:
            fail(str(e), e.code)
    finally:
        if server:
            server.close()
        target.close()
    # Everything is closed: skip the interpreter's teardown (30-40 ms of start-up budget here).
    if log:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def agent(args: argparse.Namespace) -> None:
    """Run inside a target and perform there what sessions ask (connect, resolve, open, env).

    A network-reachable agent, for `tether exec --target tcp://HOST:PORT` (or unix:PATH):
      tether agent --new-token agent.token          # once; copy the file to the users' side
      tether agent --listen tcp:0.0.0.0:7070 --token-file agent.token
    It serves many sessions at once and refuses (and logs) peers that cannot prove the token.
    The token never crosses the wire (challenge-response), but the relayed data is not
    encrypted: across networks you do not trust, reach the port through SSH or a VPN.
    It prints `tether agent: listening on ADDRESS` once ready; SIGTERM or ^C stops it.

    `tether exec --target netns:NAME` (or pid:PID) runs the agent itself in a forked child; the
    same agent can serve one session on an inherited socket:
      ip netns exec NAME tether agent --fd 3 --env-file /etc/environment
    """
    import asyncio
    import logging
    import os
    import signal

    from .agent.env import target_env

    def fail(msg: str) -> None:
        print(f"tether agent: {msg}", file=sys.stderr)
        sys.exit(EXIT_ERROR)

    if args.new_token:
        from .protocol.auth import TokenError, new_token_file

        try:
            new_token_file(args.new_token)
        except TokenError as e:
            fail(str(e))
        print(f"tether agent: new token in {args.new_token}", file=sys.stderr)
        return
    if (args.fd is None) == (args.listen_address is None):
        args.parser.error("give --listen ADDRESS (with --token-file) or --fd N")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="tether agent: %(message)s")
    environment = (lambda: target_env(args.env_file)) if args.env_file else (lambda: dict(os.environ))
    if args.fd is not None:
        from .agent.server import serve_fd

        try:
            asyncio.run(serve_fd(args.fd, environment))
        except (OSError, ValueError) as e:
            fail(str(e))
        return

    from .agent.listen import AddressError, parse_address, serve_listen
    from .protocol.auth import TokenError, load_token

    if not args.token_file:
        args.parser.error("--listen needs --token-file FILE (make one with `tether agent --new-token FILE`)")
    try:
        address = parse_address(args.listen_address)
        token = load_token(args.token_file)
    except (AddressError, TokenError) as e:
        fail(str(e))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, serving.cancel)
        await serve_listen(address, token, environment, on_ready=lambda bound: print(
            f"tether agent: listening on {bound}", file=sys.stderr))

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    except OSError as e:
        fail(f"cannot listen on {args.listen_address}: {e.strerror or e}")


def demo(args: argparse.Namespace) -> None:
    """See tether work: a throwaway namespace, a client run under `tether exec` (root).

    Makes a network namespace holding an HTTP service, a host name and an environment variable
    that exist only there, runs a small client with `tether exec --target netns:...` (Go when a
    toolchain is found: `go` on PATH, Debian's golang-1.19-go or TETHER_DEMO_GO; else Python),
    says what crossed over and how fast, and removes everything it made, also on failure or ^C.
    """
    from .demo import DemoError, run

    try:
        # flush: each line as it happens, also into a pipe, before the programs the demo runs write
        code = run(lambda line: print(f"tether demo: {line}", flush=True), args.client)
    except DemoError as e:
        print(f"tether demo: {e}", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)


def config_(args: argparse.Namespace) -> None:
    """The settings of `tether exec`: where they come from, and the file's schema."""
    _missing_command(args)


def config_schema(args: argparse.Namespace) -> None:
    """Print the JSON schema of tether.toml (for editors and validators)."""
    import json

    from . import config

    print(json.dumps(config.schema(), indent=2))


def config_show(args: argparse.Namespace) -> None:
    """Print the settings `tether exec` would use here (before its flags) and their sources."""
    import json
    import os

    from . import config

    try:
        path = config.find(args.config_file or os.environ.get("TETHER_CONFIG"))
        settings, sources = config.effective({}, path, dict(os.environ))
    except config.ConfigError as e:
        print(f"tether config: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    print(f"# file: {path or 'none (no ./tether.toml)'}; flags of `tether exec` override all of these")
    for key in config.KEYS:
        value = settings[key.param]
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        print(f"{key.name} = {shown}  # {sources[key.name]}")
