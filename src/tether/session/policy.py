"""Which outgoing connections go out from the target and which stay on this machine.

Rules come from `--local SPEC` and `--remote SPEC`; a SPEC is an address, a CIDR block, a host
name (resolved in the target when tether starts) or nothing, with an optional port:
`10.0.0.0/8`, `192.0.2.7:5432`, `[2001:db8::1]:443`, `db.internal:5432`, `:53`.
The first question that has an answer decides:
  1. a --local rule matches          -> local
  2. a --remote rule matches, or the destination is one of the target's name servers
     (port 53)                       -> target
  3. some --remote rule was given    -> local (the --remote rules list all that goes out)
  4. loopback or unspecified address -> local
  5. anything else                   -> target
An IPv4-mapped IPv6 destination counts as the IPv4 address it carries. The layer makes the
same decisions from the list layer_rules() writes (layer/net/route.c), with no round trip.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyError(ValueError):
    """A rule that cannot be understood; the message shows the accepted forms."""


class Rule(NamedTuple):  # not a dataclass: start-up time (session/environment.py)
    network: Network | None  # None: any address
    port: int | None  # None: any port
    text: str
    host: str | None = None  # a host name still to be resolved in the target (resolve_hosts)

    def matches(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        assert self.host is None, "host rules are resolved first (OutgoingPolicy.resolve_hosts)"
        if self.port is not None and port != self.port:
            return False
        return self.network is None or (ip.version == self.network.version and ip in self.network)


def parse_rule(spec: str) -> Rule:
    forms = "use ADDRESS, CIDR or HOST, each with an optional :PORT ([IPV6]:PORT), or :PORT"
    text = spec.strip()
    addr, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise PolicyError(f"{spec!r}: missing ']'; {forms}")
        addr, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise PolicyError(f"{spec!r}: expected ':PORT' after ']'; {forms}")
            port = rest[1:]
    elif text.count(":") == 1:
        addr, port = text.split(":")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise PolicyError(f"{spec!r}: port must be 1-65535; {forms}")
        port = int(port)
    if not addr:
        if port is None:
            raise PolicyError(f"{spec!r}: empty rule; {forms}")
        return Rule(None, port, text)
    try:
        network = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        if _HOSTNAME.match(addr) and any(c.isalpha() for c in addr):
            return Rule(None, port, text, host=addr.rstrip(".").lower())
        raise PolicyError(f"{spec!r}: {addr!r} is not an IP address, CIDR block or host name; {forms}") from None
    return Rule(network, port, text)


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


class OutgoingPolicy:
    def __init__(self, local: list[Rule], remote: list[Rule]):
        self.local = local
        self.remote = remote
        self.nameservers: list[Rule] = []  # from the target's resolv.conf (add_nameservers)

    @classmethod
    def from_specs(cls, local: list[str] = (), remote: list[str] = ()) -> OutgoingPolicy:
        return cls([parse_rule(s) for s in local], [parse_rule(s) for s in remote])

    def resolve_hosts(self, resolve: Callable[[str], list[str]]) -> None:
        """Replace each host-name rule by one rule per address the target gives for it (in
        place, so the order of the rules is kept). resolve raises for a name that does not
        resolve; that is an error, never a silently empty rule."""
        for rules in (self.local, self.remote):
            out = []
            for rule in rules:
                if rule.host is None:
                    out.append(rule)
                    continue
                addresses = resolve(rule.host)
                if not addresses:
                    raise PolicyError(f"{rule.text!r}: {rule.host} has no address in the target")
                out += [Rule(ipaddress.ip_network(a.split("%")[0]), rule.port, f"{rule.text} ({a})")
                        for a in addresses]
            rules[:] = out

    def goes_to_target(self, host: str, port: int) -> bool:
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # an IPv4 destination, reached through an IPv6 socket
        if any(r.matches(ip, port) for r in self.local):
            return False
        if any(r.matches(ip, port) for r in self.remote + self.nameservers):
            return True
        if self.remote:
            return False
        return not any(ip.version == n.version and ip in n for n in _STAYS_HERE)

    def layer_rules(self) -> str:
        """The same decisions as goes_to_target, as the ordered list layer/net/route.c evaluates:
        first match wins, the last entry is the default."""
        ordered = [("L", r) for r in self.local] + [("R", r) for r in self.remote + self.nameservers]
        if self.remote:
            default = "L"
        else:
            ordered += [("L", Rule(n, None, "")) for n in _STAYS_HERE]
            default = "R"
        if len(ordered) > MAX_RULES:
            raise PolicyError(f"{len(ordered)} rules; at most {MAX_RULES - len(_STAYS_HERE)} --local and "
                              "--remote rules together")
        out = []
        for verdict, rule in ordered:
            assert rule.host is None, "host rules are resolved first (OutgoingPolicy.resolve_hosts)"
            if rule.network is None:
                out.append(f"{verdict}0//0/{rule.port or 0};")
            else:
                net = rule.network
                out.append(f"{verdict}{net.version}/{net.network_address.packed.hex()}/{net.prefixlen}/"
                           f"{rule.port or 0};")
        return "".join(out) + "*" + default

    def add_nameservers(self, resolv_conf: str) -> None:
        """Send queries to the name servers listed in the target's resolv.conf to the target,
        also where they are on its loopback (127.0.0.53 and the like)."""
        for line in resolv_conf.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    ip = ipaddress.ip_address(words[1].split("%")[0])
                except ValueError:
                    continue
                self.nameservers.append(Rule(ipaddress.ip_network(ip), 53, f"nameserver {ip}"))


MAX_RULES = 64  # layer/net/route.c's TETHER_ROUTE_MAX
# Rule 4 of the module's list: what stays here when no --remote rule was given.
_STAYS_HERE = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128")]
