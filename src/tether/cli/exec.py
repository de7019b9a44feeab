"""`tether exec --target TARGET -- PROGRAM`: PROGRAM run here with its network, DNS and
environment taken from TARGET.

run() is the steps in the order start-up wants them: the settings; the agent's process on its
way first (its imports are most of start-up), and meanwhile this side's work (the session's
modules, the plan); then what the target says, the session, the program, and the exit. Each
step imports what it needs itself: start-up is measured (docs/performance.md).
"""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, PROGRAM_USAGE, add_command, add_program, file_argument


def add_to(commands) -> None:
    # Settings default to None, "not given": config.effective then looks at TETHER_*,
    # tether.toml and the default in turn. The dests are config.KEYS' params.
    p = add_command(commands, "exec", run, usage=f"{PROGRAM_USAGE}\n       %(prog)s [OPTIONS] --attach PID")
    p.add_argument("-t", "--target", dest="target_spec", metavar="TARGET",
                   help="Where the program's network, DNS and environment come from: netns:NAME, pid:PID, "
                        "container:NAME (podman:, docker:), ssh://[USER@]HOST[:PORT], tcp://HOST:PORT or unix:PATH.")
    p.add_argument("--token-file", type=file_argument, metavar="FILE",
                   help="The token of a tcp:// or unix: agent (the file it was started with).")
    p.add_argument("--ssh-option", dest="ssh_options", action="append", metavar="OPTION",
                   help="With an ssh:// target: pass -o OPTION to ssh, e.g. ConnectTimeout=5 (repeatable).")
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
    p.add_argument("--incoming", choices=("mirror", "steal", "off"),
                   help="When the program listens on a TCP port: mirror (default: the target's app keeps "
                        "serving the port, the program gets a copy of each connection), steal (the program "
                        "serves the target's port instead) or off (it listens here only).")
    p.add_argument("--incoming-ports", action="append", metavar="LIST",
                   help="Only listeners on these ports (the program's: 8080,9090) take the target's.")
    p.add_argument("--ignore-ports", action="append", metavar="LIST",
                   help="Listeners on these ports stay here (not with --incoming-ports).")
    p.add_argument("--port-map", action="append", metavar="LOCAL:REMOTE",
                   help="The program's listener on port LOCAL takes the target's port REMOTE (repeatable).")
    p.add_argument("--incoming-loopback", action=argparse.BooleanOptionalAction,
                   help="Listeners on 127.0.0.1 or ::1 take the target's port too (default: they stay "
                        "here, as a debugger's would).")
    p.add_argument("--steal-header", dest="steal_headers", action="append", metavar="REGEX",
                   help="Steal only HTTP/1.1 requests with a header line (Name: value) matching REGEX, e.g. "
                        "'^X-User: alice$' (repeatable: each must match); the target's app serves the rest.")
    p.add_argument("--steal-path", metavar="REGEX",
                   help="Steal only HTTP/1.1 requests whose path (before any '?') matches REGEX, e.g. '^/api/'.")
    p.add_argument("--steal-method", dest="steal_methods", action="append", metavar="METHOD",
                   help="Steal only HTTP/1.1 requests with this method (repeatable, or GET,POST).")
    p.add_argument("--fs", choices=("read", "write", "local"),
                   help="The target's files: read (default: paths the rules give the target are read there, "
                        "and opened for writing, here), write (read and written there) or local (all here).")
    p.add_argument("--fs-not-found", action="append", metavar="REGEX",
                   help="Paths matching REGEX do not exist for the program (repeatable).")
    p.add_argument("--fs-write", action="append", metavar="REGEX",
                   help="Paths matching REGEX are read and written in the target (repeatable).")
    p.add_argument("--fs-remote", action="append", metavar="REGEX",
                   help="Paths matching REGEX are read in the target, e.g. '^/etc/myapp/' (repeatable).")
    p.add_argument("--fs-local", action="append", metavar="REGEX",
                   help="Paths matching REGEX stay on this machine, e.g. '^/srv/cache/' (repeatable).")
    p.add_argument("--fs-whole-max", metavar="SIZE",
                   help="Through tcp:// and ssh://: the target's files up to SIZE (default 1M) opened "
                        "read-only come whole with their open; larger ones are read as the program reads.")
    p.add_argument("--dns", action=argparse.BooleanOptionalAction,
                   help="Resolve names in the target (default) or on this machine.")
    p.add_argument("-v", "--verbose", action="store_true", default=None,
                   help="Write debug logs to a file (its path is printed).")
    p.add_argument("--log-file", type=file_argument, metavar="FILE",
                   help="Where -v writes (default: a new file in /tmp).")
    p.add_argument("--config", dest="config_file", type=file_argument, metavar="FILE",
                   help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")
    p.add_argument("--attach", dest="pid", type=int, metavar="PID",
                   help="Instead of starting PROGRAM: route the new connections and name lookups of the "
                        "running Go program PID through the target until it ends or ^C (its environment "
                        "stays its own); e.g. tether exec -t netns:blue --attach 4242.")
    add_program(p)


def run(args: argparse.Namespace) -> None:
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

    Incoming: when the program listens on a TCP port (net.Listen, bind+listen), connections to
    that port in the target come to it (every kind of target):
      --incoming mirror       the target's app keeps serving them, untouched; the program gets
                              a copy of each connection, its replies thrown away (the
                              default; copies wait while the CPUs are busy; needs root there)
      --incoming steal        the program serves them instead, with the client's own address
                              (same host: no relay, the kernel hands them to it; tcp:// and
                              ssh://: the agent accepts there and relays each connection)
      --incoming off          the program listens here only
      --steal-path '^/api/' --steal-header '^X-User: alice$' --steal-method POST
                              a filtered steal of HTTP/1.1: the requests matching every
                              filter given go to the program, the rest to the target's app,
                              in order on the same keep-alive connection; an upgrade the
                              program accepts (WebSocket) gives it the connection; bytes
                              that are not HTTP/1.1 go to the app as they are
      --port-map 8080:80      the program listens on 8080, the target's port 80 comes to it
      --incoming-ports 8080,9090 / --ignore-ports 6060
                              which of the program's listeners take the target's port
    Listeners on loopback stay here unless --incoming-loopback. Whatever tether sets up in
    the target (an nftables table) is gone when the listener closes, when tether ends, and
    when tether or its agent is killed. A port another tether session mirrors or steals
    gives the program EADDRINUSE, and the reason is printed.

    Files (every kind of target): paths are opened in the target's root, with the kernel's
    own resolution inside it (no ".." or link leaves it), as the program's own descriptors:
    same host, reads, writes, mmap and listings at native speed. The first rule that
    matches the absolute path decides (REGEX: Python's re, searched in the path):
      --fs-not-found REGEX    does not exist (ENOENT)
      --fs-write REGEX        read and written in the target
      --fs-remote REGEX       read in the target; written and changed here (said once)
      --fs-local REGEX        here
      (built in)              ~/.kube ~/.aws ~/.config/gcloud ~/.azure: not found;
                              /etc/resolv.conf /etc/hosts /etc/hostname /etc/ssl/certs: the
                              target's; /proc /sys /dev /usr /lib* /bin /sbin /opt /tmp /run,
                              the working directory, ~/.*, the program, code (.py .so .js
                              node_modules ...): here
      --fs read (default)     everything else read in the target (writes here)
      --fs write / local      everything else read and written there / here
    Changes by path (mkdir, rmdir, unlink, rename, truncate, chmod, utimensat) happen where
    writes do; a rename between here and the target fails with EXDEV, as across file
    systems (mv copies). Paths relative to a directory descriptor other than the working
    directory's stay here. -v logs which rule decided each path.
    Through tcp:// and ssh:// agents, tether serves the target's files to the program as a
    file system of its own (FUSE; root here): reads go through with the kernel's read-ahead,
    files up to --fs-whole-max (1M) come whole with their open, a listing comes in one round
    trip; if the agent is lost, calls fail with EIO.

    Targets:
      netns:NAME   a namespace from `ip netns add` (root); /etc/netns/NAME/ files such as
                   resolv.conf, hosts and environment are the target's
      pid:PID      the network, UTS and mount namespaces of a running process, e.g. a
                   container's (root); its files and its own environment are the target's
      container:NAME, podman:NAME, docker:NAME
                   a running container by name or id: the runtime is asked for its main
                   process, then as pid: (container: asks podman, then docker)
      ssh://[USER@]HOST[:PORT]
                   a machine ssh reaches (your ~/.ssh/config, keys, agent, known_hosts);
                   the agent runs there from memory in its python3 (>= 3.9), nothing is
                   installed or left behind; connections are relayed over that ssh
                   connection (--ssh-option passes ssh -o options)
      tcp://HOST:PORT, unix:PATH
                   a `tether agent --listen ... --token-file FILE` running there; give the
                   same token file with --token-file. Over TCP the agent relays each
                   connection's bytes and each UDP datagram (sockets cannot cross
                   machines). The link is encrypted only if the agent was started with
                   --tls (its token file then names its certificate, which is pinned);
                   otherwise the token is never sent but the data is readable on the
                   way. Over unix: sockets are handed over as for netns:

    io_uring is refused (ENOSYS, said once): its operations would bypass tether, so programs
    that use one (libuv, tokio-uring) fall back on the plain calls tether carries.

    Settings: each flag also has a TETHER_* variable (TETHER_TARGET, TETHER_LOCAL, TETHER_DNS=0,
    ...; lists space-separated) and a key in tether.toml (target, token_file, ssh_option, local,
    remote, env, env_include, env_exclude, incoming, incoming_ports, ignore_ports, port_map,
    incoming_loopback, steal_header, steal_path, steal_method, fs, fs_not_found, fs_write,
    fs_remote, fs_local, fs_whole_max, dns, verbose, log_file); a flag beats the variable, which beats the file.
    `tether config show` prints what applies, `tether config schema` the file's JSON schema.

    Exit status: the program's (128+N if signal N ended it); 2 if tether could not start it or
    reach the target (the reason is printed); 126/127 as a shell would.
    """
    import time

    if args.pid is not None and args.program:
        args.parser.error("give --attach PID or a PROGRAM, not both")
    settings = resolve_settings(args)
    spec = settings["target_spec"]
    log, agent_log = open_debug_log(settings)
    started = time.monotonic()
    target = start_agent(settings, agent_log)
    # While the agent starts (importing asyncio is most of its start): what only this side
    # needs. The steps below import from these modules, loaded by now.
    from ..session import agent_link, launch, server  # noqa: F401
    policy, env_rules, incoming, files = plan(args, settings, target)
    wait_for_agent(target, spec)
    session = None
    try:
        env, rules = ask_target(target, spec, policy, env_rules, settings["dns"], log, started)
        serve_incoming = subscribe_incoming(target, spec, incoming, log)
        files = serve_files(target, spec, files, args.pid, settings, log)
        session = start_session(target, spec, settings["dns"], rules, serve_incoming, files, log)
        code = attach_program(args.pid, session) if args.pid is not None else run_program(args.program, session, env)
    finally:
        if session:
            session.close()
        target.close()
    exit_now(code, log)


def flag_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line, by parameter name, as config.effective takes
    them (repeated options as tuples)."""
    from .. import config

    return {key.param: tuple(value) if isinstance(value, list) else value
            for key in config.KEYS if (value := getattr(args, key.param)) is not None}


def resolve_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings that apply: each from its flag, else TETHER_*, else tether.toml, else the
    default. A usage error if none names a target."""
    import os

    from .. import config

    try:
        config_path = config.find(args.config_file or os.environ.get("TETHER_CONFIG"))
        settings, sources = config.effective(flag_settings(args), config_path, dict(os.environ))
        settings["incoming_source"] = sources["incoming"]  # a filtered steal implies --incoming steal unless it was given
        settings["fs_source"] = sources["fs"]  # the default read mode through a network agent may only warn
    except config.ConfigError as e:
        print(f"tether exec: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    if not settings["target_spec"]:
        args.parser.error("no target: give --target TARGET, TETHER_TARGET, or target in tether.toml")
    return settings


def open_debug_log(settings: dict[str, object]) -> tuple:
    """With -v or a log file: this side's logger and the agent's log (file, format, level);
    else (None, None). logging is imported only for a debug log: start-up time."""
    if not (settings["verbose"] or settings["log_file"]):
        return None, None
    import logging
    import os
    import tempfile

    log_file = settings["log_file"]
    if not log_file:
        fd, log_file = tempfile.mkstemp(prefix="tether-exec-", suffix=".log")
        os.close(fd)
    agent_log = (log_file, "%(asctime)s %(name)s %(levelname)s %(message)s", logging.DEBUG)
    logging.basicConfig(filename=log_file, level=logging.DEBUG, format=agent_log[1])
    print(f"tether exec: debug log in {log_file}", file=sys.stderr)
    return logging.getLogger("tether.exec"), agent_log


def start_agent(settings: dict[str, object], agent_log: tuple | None):
    """The target, its agent starting (Target.ready waits for it)."""
    from ..targets import TargetError, open_target

    try:
        return open_target(settings["target_spec"], wait=False, token_file=settings["token_file"], log=agent_log,
                           ssh_options=tuple(settings["ssh_options"]))
    except TargetError as e:
        fail(str(e))


def plan(args: argparse.Namespace, settings: dict[str, object], target) -> tuple:
    """Which connections go out from the target (the policy, its host names not yet resolved),
    which of its variables the program takes, how its listeners are served and which files are
    the target's. A usage error, the target closed, if a rule is malformed."""
    import os
    import shutil

    from ..session import incoming
    from ..session.files import FileRuleError, FileRules
    from ..session.environment import EnvError, EnvRules
    from ..session.policy import OutgoingPolicy, PolicyError

    try:
        policy = OutgoingPolicy.from_specs(list(settings["local_rules"]), list(settings["remote_rules"]))
        env_rules = EnvRules(list(settings["env_include"]), list(settings["env_exclude"]),
                             EnvRules.parse_overrides(list(settings["env_overrides"])))
        listeners = incoming.from_settings(settings["incoming"], settings["incoming_ports"],
                                           settings["ignore_ports"], settings["port_map"],
                                           settings["incoming_loopback"],
                                           incoming.http_filter(settings["steal_headers"], settings["steal_path"],
                                                                settings["steal_methods"]),
                                           mode_given=settings["incoming_source"] != "default")
        exe = shutil.which(args.program[0]) if args.program else None
        files = FileRules(settings["fs"], settings["fs_not_found"], settings["fs_write"], settings["fs_remote"],
                          settings["fs_local"], exe=exe and os.path.realpath(exe), cwd=os.getcwd(),
                          home=os.environ.get("HOME"), dns=settings["dns"])
    except (PolicyError, EnvError, incoming.IncomingError, FileRuleError) as e:
        target.close()
        args.parser.error(str(e))
    return policy, env_rules, listeners, files


def wait_for_agent(target, spec: str) -> None:
    """Until the agent answers its hello (with a spinner on a terminal)."""
    from ..targets import TargetError

    try:
        if sys.stderr.isatty():
            from rich.console import Console

            with Console(stderr=True).status(f"starting the agent in {spec}", spinner="dots"):
                target.ready()
        else:
            target.ready()
    except TargetError as e:
        fail(str(e))


def ask_target(target, spec: str, policy, env_rules, dns: bool, log, started: float) -> tuple[dict[str, str], str]:
    """What the program takes from the target: the environment (the target's merged into this
    one's) and the outgoing rules in the layer's format, with the target's name servers among
    them (unless --no-dns) and the rules' host names resolved there."""
    import os
    import time

    from ..session.agent_link import AgentError, LinkError
    from ..session.environment import merge
    from ..session.policy import PolicyError

    def resolve_in_target(name: str) -> list[str]:
        try:
            return target.link.resolve(name)
        except AgentError as e:
            raise PolicyError(f"{name} does not resolve in {spec}: {e}") from None

    try:
        env, taken = merge(dict(os.environ), target.link.env(), env_rules)
        if dns:
            try:
                policy.add_nameservers(target.link.read_file("/etc/resolv.conf").decode(errors="replace"))
            except AgentError as e:
                if log:
                    log.info("target has no resolv.conf: %s", e)
        policy.resolve_hosts(resolve_in_target)
        rules = policy.layer_rules()
    except LinkError as e:
        fail(f"{spec}: {e}")
    except PolicyError as e:
        fail(str(e))
    if log:
        log.info("target %s ready in %.0f ms; variables from the target: %s; name servers: %s; rules: %s",
                 spec, (time.monotonic() - started) * 1000, " ".join(taken) or "none",
                 " ".join(r.text for r in policy.nameservers) or "none", rules)
    return env, rules


def subscribe_incoming(target, spec: str, incoming, log) -> bool:
    """Tell the agent how the program's listeners are served; whether they ask it at all."""
    from ..protocol import agent_wire
    from ..session.agent_link import AgentError, LinkError

    if incoming.mode == agent_wire.INCOMING_OFF:
        return False
    try:
        target.link.incoming(incoming)
    except (AgentError, LinkError) as e:
        fail(f"{spec}: the agent cannot serve incoming traffic: {e}")
    return True


def serve_files(target, spec: str, files, pid: int | None, settings: dict[str, object], log):
    """The file rules if the program's paths may be the target's, else None. Same host and
    unix: the agent's descriptors reach the program; through tcp:// and ssh:// the stand-in
    serves them as a file system, which needs FUSE here: if it cannot, the default (--fs read
    with no rules given) warns and leaves the files here, anything asked for is an error."""
    from ..protocol import agent_wire
    from ..protocol.files_wire import WRITE
    from ..session.agent_link import AgentError, LinkError

    if not files.enabled:
        return None
    given = [r for r in files.rules if not r.source.startswith("default")]
    if pid is not None:
        if given:
            fail("--fs-* rules and --attach: an attached program's files stay its own")
        return None
    if target.capabilities & agent_wire.CAP_SOCKETS:
        return files
    try:
        whole_max = parse_size(str(settings["fs_whole_max"]))
    except ValueError as e:
        fail(f"--fs-whole-max: {e}")
    writable = files.fallback == WRITE or any(r.action == WRITE for r in files.rules)
    try:
        target.link.files(agent_wire.TargetFiles(0, writable, whole_max))
    except (AgentError, LinkError) as e:
        if given or settings["fs_source"] != "default":
            fail(f"{spec}: the target's files: {e}")
        say(f"tether: the target's files through {spec} are out of reach ({e}); the program's "
            "files stay here (--fs local says so without this warning)", "bold yellow")
        return None
    return files


def parse_size(text: str) -> int:
    """Bytes from 65536, 64K or 1M (at most 1M: what one reply carries)."""
    from ..protocol.file_ops import DATA_MAX

    units = {"": 1, "K": 1 << 10, "M": 1 << 20}
    number, unit = text.rstrip("KkMm"), text[len(text.rstrip("KkMm")):].upper()
    if not number.isdigit() or unit not in units:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K or M)")
    size = int(number) * units[unit]
    if size > DATA_MAX:
        raise ValueError(f"{text} is more than the {DATA_MAX >> 20}M a file's open can carry")
    return size


def start_session(target, spec: str, dns: bool, rules: str, incoming: bool, files=None, log=None):
    """The session's server for the program's hooked processes: what they hand to the agent
    (connects, name lookups unless --no-dns, listeners if incoming, paths the file rules give
    the target), the agent's socket and the rules."""
    from ..protocol import agent_wire, layer_wire
    from ..session.server import LayerServer

    mode = layer_wire.MODE_NET
    if target.capabilities & agent_wire.CAP_SOCKETS:
        mode |= layer_wire.MODE_SOCKETS
    if target.capabilities & agent_wire.CAP_STREAMS:
        mode |= layer_wire.MODE_STREAMS
    if dns:
        mode |= layer_wire.MODE_DNS
    if incoming:
        mode |= layer_wire.MODE_INCOMING
    if files is not None:
        mode |= layer_wire.MODE_FILES
    return LayerServer(mode, on_event=lambda e: None, warn=lambda msg: say(msg, "bold yellow"),
                       agent=target.link, agent_socket=target.agent_socket, rules=rules,
                       files=files, files_log=log.getChild("files") if log and files else None,
                       on_agent_lost=lambda why: say(
                           f"lost the agent in {spec} ({why}); connections to the target "
                           "now fail with ECONNREFUSED", "bold yellow"))


def run_program(program: list[str], session, env: dict[str, str]) -> int:
    """PROGRAM's exit status, once it and its children are done."""
    from ..session.launch import LaunchError, run

    try:
        return run(program, session, base_env=env)
    except LaunchError as e:
        fail(str(e), e.code)


def attach_program(pid: int, session) -> int:
    """--attach: the running program's hooks on until it ends or ^C, then off (launch.attach)."""
    from ..session.launch import LaunchError, attach

    try:
        return attach(pid, session, started=lambda pid: say(f"attached to process {pid}: its new connections "
                                                            "go through the target; ^C detaches", "bold"))
    except LaunchError as e:
        fail(str(e), e.code)


def exit_now(code: int, log) -> None:
    """Exit with code, skipping the interpreter's teardown (30-40 ms of start-up budget here):
    everything is closed."""
    import os

    if log:
        import logging

        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


def say(msg: str, style: str = "bold red") -> None:
    if not sys.stderr.isatty():
        print(f"tether exec: {msg}", file=sys.stderr)
        return
    from rich.console import Console  # only for a terminal: it costs start-up time
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[{style}]tether exec:[/] {escape(msg)}")


def fail(msg: str, code: int = EXIT_ERROR) -> None:
    say(msg)
    sys.exit(code)
