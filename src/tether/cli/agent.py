"""`tether agent`: the agent as a command, serving sessions from inside a target."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, add_command, file_argument


def add_to(commands) -> None:
    p = add_command(commands, "agent", run)
    p.add_argument("--listen", dest="listen_address", metavar="ADDRESS",
                   help="Serve sessions that connect here: tcp:HOST:PORT (port 0: any free one) "
                        "or unix:PATH.")
    p.add_argument("--token-file", type=file_argument, metavar="FILE",
                   help="With --listen: only peers that prove this token are served (required).")
    p.add_argument("--new-token", type=file_argument, metavar="FILE",
                   help="Write a new random token to FILE (mode 0600) and exit.")
    p.add_argument("--tls", action="store_true",
                   help="With --new-token: also make a key and self-signed certificate (FILE.tls.pem) and "
                        "write its fingerprint into FILE, which sessions then pin. With --listen: encrypt "
                        "every connection with that key (TLS 1.3). Without it a tcp: link is not encrypted.")
    p.add_argument("--fd", type=int, metavar="N",
                   help="Serve one session on this inherited unix SOCK_SEQPACKET socket.")
    p.add_argument("--env-file", type=file_argument, metavar="FILE",
                   help="Report the environment in this file (/etc/environment format) as the target's, "
                        "instead of the agent's own.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="Log every connection and operation to stderr.")


def run(args: argparse.Namespace) -> None:
    """Run inside a target and perform there what sessions ask (connect, resolve, files, env).

    A network-reachable agent, for `tether exec --target tcp://HOST:PORT` (or unix:PATH):
      tether agent --new-token agent.token          # once; copy the file to the users' side
      tether agent --listen tcp:0.0.0.0:7070 --token-file agent.token
    It serves many sessions at once and refuses (and logs) peers that cannot prove the token.
    It reads (and for --fs write or --fs-write, writes) files as the user it runs as, with that user's
    permissions: run it as the service's user to give the program the service's view.
    The token never crosses the wire (challenge-response). The link is encrypted only with --tls:
      tether agent --new-token agent.token --tls    # also agent.token.tls.pem, the agent's key
      tether agent --listen tcp:0.0.0.0:7070 --token-file agent.token --tls
    Sessions read the certificate's fingerprint from their copy of agent.token and refuse any
    other. Without --tls anyone on the path can read the relayed data (not the token): keep
    plaintext to loopback, unix: sockets, or networks you trust (or use ssh:// targets).
    It prints `tether agent: listening on ADDRESS` once ready; SIGTERM or ^C stops it.

    `tether exec --target netns:NAME` (or pid:PID) runs the agent itself in a forked child; the
    same agent can serve one session on an inherited socket:
      ip netns exec NAME tether agent --fd 3 --env-file /etc/environment
    """
    import asyncio
    import logging
    import os
    import signal

    from ..agent.env import target_env

    def fail(msg: str) -> None:
        print(f"tether agent: {msg}", file=sys.stderr)
        sys.exit(EXIT_ERROR)

    if args.new_token:
        from ..protocol.auth import TokenError, new_token_file

        from ..agent.tls import TlsError, new_credentials, pem_path

        try:
            pin = new_credentials(args.new_token) if args.tls else None
            try:
                new_token_file(args.new_token, pin)
            except TokenError:
                if pin:  # nothing half made is left
                    os.unlink(pem_path(args.new_token))
                raise
        except (TokenError, TlsError) as e:
            fail(str(e))
        print(f"tether agent: new token in {args.new_token}" +
              (f", TLS key in {pem_path(args.new_token)}" if args.tls else ""), file=sys.stderr)
        return
    if (args.fd is None) == (args.listen_address is None):
        args.parser.error("give --listen ADDRESS (with --token-file) or --fd N")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="tether agent: %(message)s")
    environment = (lambda: target_env(args.env_file)) if args.env_file else (lambda: dict(os.environ))
    if args.fd is not None:
        from ..agent.server import serve_fd

        try:
            asyncio.run(serve_fd(args.fd, environment))
        except (OSError, ValueError) as e:
            fail(str(e))
        return

    from ..agent.listen import AddressError, parse_address, serve_listen
    from ..protocol.auth import TokenError, load_token

    if not args.token_file:
        args.parser.error("--listen needs --token-file FILE (make one with `tether agent --new-token FILE`)")
    from ..agent.tls import TlsError, server_context

    try:
        address = parse_address(args.listen_address)
        token = load_token(args.token_file)
        tls = server_context(args.token_file) if args.tls else None
    except (AddressError, TokenError, TlsError) as e:
        fail(str(e))
    if address.kind == "tcp" and not tls and not _loopback(address.host):
        print(f"tether agent: warning: {address} is not encrypted: the relayed data can be read on the way "
              f"(add --tls; see tether agent --help)", file=sys.stderr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, serving.cancel)
        await serve_listen(address, token, environment, tls, on_ready=lambda bound: print(
            f"tether agent: listening on {bound}", file=sys.stderr))

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    except OSError as e:
        fail(f"cannot listen on {args.listen_address}: {e.strerror or e}")


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
