"""The `tether` command line."""
from __future__ import annotations

import sys

import click

from . import __version__

EXIT_SUPPORTED, EXIT_UNSUPPORTED, EXIT_ERROR = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
def cli() -> None:
    """Run a Linux program with its network, DNS, files and environment taken from a target.

    \b
      tether exec --target netns:NAME -- PROGRAM   run PROGRAM with the target's network,
                                                   DNS and environment
      tether trace -- PROGRAM   every syscall through tether's hooks
      tether inspect BINARY     what tether sees in a binary and whether it can hook it
      tether demo               see it work, in a throwaway namespace (root)
    Go programs are hooked at their own syscall entry; programs using libc are not yet.
    """


@cli.command()
@click.argument("binary")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (docs/inspect-json.md).")
@click.option("--no-cache", is_flag=True, help="Analyse again instead of using the report cached by build id.")
def inspect(binary: str, as_json: bool, no_cache: bool) -> None:
    """Report BINARY's ELF facts, Go version and hook plan, and whether tether can hook it.

    \b
    The hook plan lists the Go functions the layer patches (the syscall entry every Go
    syscall reaches, for the binary's Go version) and the runtime functions its trampolines
    call, with addresses read from the binary's own function table: stripped binaries get
    the same plan as unstripped ones.

    \b
    Exit status: 0 supported, 1 readable but not supported (the reason and fix are printed),
    2 not an ELF file, unreadable, truncated or corrupt.
    """
    from .analysis.cache import inspect_binary
    from .analysis.elf import ElfError

    try:
        report = inspect_binary(binary, use_cache=not no_cache)
    except ElfError as e:
        click.echo(f"tether inspect: {binary}: {e}", err=True)
        sys.exit(EXIT_ERROR)
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2))
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the trace to FILE instead of stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per syscall (see README).")
@click.option("-e", "classes", metavar="CLASS,...", help="Only these classes: net, file, process (default: all).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def trace(output: str | None, as_json: bool, classes: str | None, program: tuple[str, ...]) -> None:
    """Run PROGRAM and print every syscall that passes through tether's hooks.

    \b
      tether trace -- ./server --port 8080
      tether trace -e net -o trace.txt -- go-program args
      tether trace --json -- ./client | jq .

    \b
    Lines look like strace's, tagged with pid and thread id:
      [4242 4245] connect(3, {AF_INET, 127.0.0.1:8080}, 16) = -1 ECONNREFUSED (Connection refused)
    Children are traced too. The program's own stdin, stdout and stderr are untouched; the
    trace goes to stderr or FILE. Exit status: the program's (128+N if a signal ended it);
    2 if tether itself could not start it (the reason is printed), 126/127 as a shell would.
    Go programs are hooked at their syscall entry; of programs using libc, only connect,
    sendto and sendmsg are traced so far.
    """
    from .protocol import wire
    from .session.launch import LaunchError, run
    from .session.server import LayerServer
    from .trace.printer import Printer, parse_classes

    try:
        wanted = parse_classes(classes)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    out = open(output, "w", encoding="utf-8") if output else sys.stderr
    printer = Printer(out, as_json, wanted)
    warn = lambda msg: click.echo(f"tether trace: {msg}", err=True)  # noqa: E731
    server = LayerServer(wire.MODE_TRACE, printer.event, printer.hello, warn, printer.flush)
    try:
        code = run(list(program), server, started=lambda pid: setattr(printer, "main_pid", pid))
    except LaunchError as e:
        click.echo(f"tether trace: {e}", err=True)
        code = e.code
    finally:
        printer.finish()
        server.close()
        if output:
            out.close()
    sys.exit(code)


@cli.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-t", "--target", "target_spec", metavar="TARGET",
              help="Where the program's network, DNS and environment come from: netns:NAME, pid:PID, "
                   "tcp://HOST:PORT or unix:PATH.")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The token of a tcp:// or unix: agent (the file it was started with).")
@click.option("--local", "local_rules", multiple=True, metavar="SPEC",
              help="Connections to SPEC stay on this machine (repeatable).")
@click.option("--remote", "remote_rules", multiple=True, metavar="SPEC",
              help="Only connections to SPEC go out from the target (repeatable).")
@click.option("--env", "env_overrides", multiple=True, metavar="KEY=VALUE",
              help="Set KEY for the program, whatever the target says (repeatable).")
@click.option("--env-include", multiple=True, metavar="PATTERN",
              help="Take only the target's variables matching PATTERN (repeatable).")
@click.option("--env-exclude", multiple=True, metavar="PATTERN",
              help="Never take the target's variables matching PATTERN (repeatable).")
@click.option("--dns/--no-dns", default=True, help="Resolve names in the target (default) or on this machine.")
@click.option("-v", "--verbose", is_flag=True, help="Write debug logs to a file (its path is printed).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Where -v writes (default: a new file in /tmp).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(target_spec: str | None, token_file: str | None, local_rules: tuple[str, ...], remote_rules: tuple[str, ...],
          env_overrides: tuple[str, ...], env_include: tuple[str, ...], env_exclude: tuple[str, ...],
          dns: bool, verbose: bool, log_file: str | None, config_file: str | None,
          program: tuple[str, ...]) -> None:
    """Run PROGRAM with its outgoing connections, name lookups and environment taken from TARGET.

    \b
      sudo tether exec --target netns:blue -- ./client https://api.internal/
      tether exec -t netns:blue --remote 10.0.0.0/8 --env-exclude 'AWS_*' -- go run .

    \b
    Outgoing TCP and UDP: the socket is made inside the target and handed to the program, so
    data flows at native speed. Which destinations go out from the target (first match wins):
      --local SPEC            stays here
      --remote SPEC           goes out from the target
      (any --remote given)    everything else stays here
      loopback, 0.0.0.0       stays here
      anything else           goes out from the target
    SPEC: ADDRESS, CIDR or HOST (resolved in the target), each with an optional :PORT
    ([IPV6]:PORT), or :PORT alone.

    \b
    DNS: names resolve as in the target: Go's resolver reads the target's resolv.conf and hosts
    and asks its name servers from there; libc's lookups (getaddrinfo, gethostbyname,
    getnameinfo, ...) are answered by the agent there (--no-dns: resolve here).
    Environment: the target's variables are added to this one's, except those about this
    machine and your tools (PATH, HOME, TERM, LANG, SHELL, PWD, LD_*, GO*, PYTHON*, ...).

    \b
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
    \b
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

    ctx = click.get_current_context()
    given = {k.param: ctx.params[k.param] for k in config.KEYS
             if ctx.get_parameter_source(k.param) == click.core.ParameterSource.COMMANDLINE}
    try:
        settings, _ = config.effective(given, config.find(config_file or os.environ.get("TETHER_CONFIG")),
                                       dict(os.environ))
    except config.ConfigError as e:
        click.echo(f"tether exec: {e}", err=True)
        sys.exit(EXIT_ERROR)
    target_spec, token_file = settings["target_spec"], settings["token_file"]
    local_rules, remote_rules = settings["local_rules"], settings["remote_rules"]
    env_overrides, env_include, env_exclude = settings["env_overrides"], settings["env_include"], settings["env_exclude"]
    no_dns, verbose, log_file = not settings["dns"], settings["verbose"], settings["log_file"]
    if not target_spec:
        raise click.UsageError("no target: give --target TARGET, TETHER_TARGET, or target in tether.toml")

    def say(msg: str, style: str = "bold red") -> None:
        if not sys.stderr.isatty():
            click.echo(f"tether exec: {msg}", err=True)
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
        click.echo(f"tether exec: debug log in {log_file}", err=True)
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
        raise click.UsageError(str(e)) from None

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
            code = run(list(program), server, base_env=env)
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


@cli.command()
@click.option("--listen", "listen_address", metavar="ADDRESS",
              help="Serve sessions that connect here: tcp:HOST:PORT (port 0: any free one) or unix:PATH.")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --listen: only peers that prove this token are served (required).")
@click.option("--new-token", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write a new random token to FILE (mode 0600) and exit.")
@click.option("--fd", type=int, help="Serve one session on this inherited unix SOCK_SEQPACKET socket.")
@click.option("--env-file", type=click.Path(dir_okay=False),
              help="Report the environment in this file (/etc/environment format) as the target's, "
                   "instead of the agent's own.")
@click.option("-v", "--verbose", is_flag=True, help="Log every connection and operation to stderr.")
def agent(listen_address: str | None, token_file: str | None, new_token: str | None, fd: int | None,
          env_file: str | None, verbose: bool) -> None:
    """Run inside a target and perform there what sessions ask (connect, resolve, open, env).

    \b
    A network-reachable agent, for `tether exec --target tcp://HOST:PORT` (or unix:PATH):
      tether agent --new-token agent.token          # once; copy the file to the users' side
      tether agent --listen tcp:0.0.0.0:7070 --token-file agent.token
    It serves many sessions at once and refuses (and logs) peers that cannot prove the token.
    The token never crosses the wire (challenge-response), but the relayed data is not
    encrypted: across networks you do not trust, reach the port through SSH or a VPN.
    It prints `tether agent: listening on ADDRESS` once ready; SIGTERM or ^C stops it.

    \b
    `tether exec --target netns:NAME` (or pid:PID) runs the agent itself in a forked child; the
    same agent can serve one session on an inherited socket:
      ip netns exec NAME tether agent --fd 3 --env-file /etc/environment
    """
    import asyncio
    import logging
    import os
    import signal

    from .agent.env import target_env

    if new_token:
        from .protocol.auth import TokenError, new_token_file

        try:
            new_token_file(new_token)
        except TokenError as e:
            click.echo(f"tether agent: {e}", err=True)
            sys.exit(EXIT_ERROR)
        click.echo(f"tether agent: new token in {new_token}", err=True)
        return
    if (fd is None) == (listen_address is None):
        raise click.UsageError("give --listen ADDRESS (with --token-file) or --fd N")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="tether agent: %(message)s")
    environment = (lambda: target_env(env_file)) if env_file else (lambda: dict(os.environ))
    if fd is not None:
        from .agent.server import serve_fd

        try:
            asyncio.run(serve_fd(fd, environment))
        except (OSError, ValueError) as e:
            click.echo(f"tether agent: {e}", err=True)
            sys.exit(EXIT_ERROR)
        return

    from .agent.listen import AddressError, parse_address, serve_listen
    from .protocol.auth import TokenError, load_token

    if not token_file:
        raise click.UsageError("--listen needs --token-file FILE (make one with `tether agent --new-token FILE`)")
    try:
        address = parse_address(listen_address)
        token = load_token(token_file)
    except (AddressError, TokenError) as e:
        click.echo(f"tether agent: {e}", err=True)
        sys.exit(EXIT_ERROR)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, serving.cancel)
        await serve_listen(address, token, environment,
                           on_ready=lambda bound: click.echo(f"tether agent: listening on {bound}", err=True))

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    except OSError as e:
        click.echo(f"tether agent: cannot listen on {listen_address}: {e.strerror or e}", err=True)
        sys.exit(EXIT_ERROR)


@cli.command()
@click.option("--client", type=click.Choice(["auto", "go", "python"]), default="auto", show_default=True,
              help="The demo's client: Go (built here), Python, or Go when a toolchain is found.")
def demo(client: str) -> None:
    """See tether work: a throwaway namespace, a client run under `tether exec` (root).

    \b
    Makes a network namespace holding an HTTP service, a host name and an environment variable
    that exist only there, runs a small client with `tether exec --target netns:...` (Go when a
    toolchain is found: `go` on PATH, Debian's golang-1.19-go or TETHER_DEMO_GO; else Python),
    says what crossed over and how fast, and removes everything it made, also on failure or ^C.
    """
    from .demo import DemoError, run

    try:
        code = run(lambda line: click.echo(f"tether demo: {line}"), client)
    except DemoError as e:
        click.echo(f"tether demo: {e}", err=True)
        code = EXIT_ERROR
    sys.exit(code)


@cli.group("config")
def config_() -> None:
    """The settings of `tether exec`: where they come from, and the file's schema."""


@config_.command("schema")
def config_schema() -> None:
    """Print the JSON schema of tether.toml (for editors and validators)."""
    import json

    from . import config

    click.echo(json.dumps(config.schema(), indent=2))


@config_.command("show")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")
def config_show(config_file: str | None) -> None:
    """Print the settings `tether exec` would use here (before its flags) and their sources."""
    import json
    import os

    from . import config

    try:
        path = config.find(config_file or os.environ.get("TETHER_CONFIG"))
        settings, sources = config.effective({}, path, dict(os.environ))
    except config.ConfigError as e:
        click.echo(f"tether config: {e}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"# file: {path or 'none (no ./tether.toml)'}; flags of `tether exec` override all of these")
    for key in config.KEYS:
        value = settings[key.param]
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        click.echo(f"{key.name} = {shown}  # {sources[key.name]}")


def main() -> None:
    cli()
