"""Who is asking: API keys mapped to tenants (by digest only), or the peer
address, honouring X-Forwarded-For / X-Real-IP only from trusted proxies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import lru_cache
from typing import NamedTuple

from sidecar.denials import Denied

DIGEST_PREFIX = "sha256:"


def digest(key: str) -> str:
    """What a policy stores for a key. Keys are long random tokens, so a plain
    SHA-256 is enough (no dictionary to guess from)."""
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


class Tenant(NamedTuple):
    name: str
    tiers: frozenset | None          # allowed tier names; None: all
    above_allowed: str               # deny | downgrade
    budget_usd_per_day: float        # 0: no budget
    when_budget_spent: str           # deny | downgrade
    # Provider-run tools this tenant may ask for (families); None: the policy's.
    provider_tools: frozenset | None = None
    service_tier: frozenset | None = None   # the same for processing tiers above standard


class Clients(NamedTuple):
    require_key: bool
    trusted: tuple                   # ip networks
    by_digest: dict                  # digest -> (digest, Tenant)
    ipv6_prefix: int = 64            # IPv6 clients are limited per network of this length


class Client(NamedTuple):
    tenant: Tenant | None
    key_id: str                      # short, non-secret id of the key ("" without one)
    ip: str

    @property
    def id(self) -> str:
        """Who the client is: the tenant, else the address (the response cache and
        sticky splits read it)."""
        return self.id_at(self.ip)

    def id_at(self, address: str) -> str:
        """The id with the address read as `address`: limits count an IPv6 address by
        its network (`limited_address`)."""
        return f"tenant:{self.tenant.name}" if self.tenant else f"ip:{address}"


NO_CLIENTS = Clients(False, (), {})


def _trusted(address: str, networks) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in net for net in networks)


def client_ip(peer: str, headers, trusted) -> str:
    """The client's address, canonical: the peer's, unless the peer is a trusted
    proxy, in which case the nearest untrusted hop of X-Forwarded-For (or X-Real-IP)."""
    peer = canonical_ip(peer) or peer
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = ",".join(headers.getall("X-Forwarded-For", []))
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            return canonical_ip(hop) or peer
    real = headers.get("X-Real-IP", "").strip()
    return (canonical_ip(real) if real else "") or peer


@lru_cache(maxsize=4096)
def limited_address(ip: str, ipv6_prefix: int) -> str:
    """What per-address limits count `ip` as: an IPv4 address itself, an IPv6 one as
    its /`ipv6_prefix` network. A host is given a whole /64 (RFC 6177) and can take a
    new address in it for every request, so keyed on the address alone an IPv6
    client had as many limits as it liked."""
    if ":" not in ip or ipv6_prefix >= 128:
        return ip
    try:
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    except ValueError:
        return ip


@lru_cache(maxsize=4096)
def canonical_ip(address: str) -> str:
    """One spelling per address, so limits keyed on it cannot be dodged by
    writing it differently: IPv6 compressed and lowercase (RFC 5952), an
    IPv4-mapped IPv6 address as its IPv4 form, a port dropped. "" if it is not
    an address."""
    ip = _address(address)
    return "" if ip is None else str(ip)


# Cached: a trusted proxy's address is parsed on every request it forwards
# (~2 µs each time uncached), and canonical_ip reads the same ones.
@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `text`, bare or as some proxies write it in X-Forwarded-For:
    with a port ("192.0.2.1:4711", Azure Application Gateway) or in RFC 7239's
    brackets ("[2001:db8::1]", "[2001:db8::1]:4711"). Read whole, else a proxy
    that adds its client's source port would make each connection a new client,
    and a form read as no address at all would put every client on the proxy's."""
    if text.startswith("["):
        text, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _is_port(port[1:]))):
            return None
    elif text.count(":") == 1:  # an IPv6 address has two colons at least
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def _is_port(digits: str) -> bool:
    return 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit() and int(digits) <= 65535


# RFC 9110's optional whitespace, the only bytes a credential may have around it:
# str.strip() would also take NBSP, NEL, VT, FF and the C0 separators, so a key
# written with any of them would pass where the hash written the same way is 400.
OPTIONAL_WHITESPACE = " \t"

# Digests of keys already seen valid: SHA-256 per request was 4% of a decision.
# Only keys that matched a tenant are kept, so unknown keys cannot fill it.
_seen_digests: dict[str, str] = {}


def identify(clients: Clients, headers, peer: str) -> Client:
    """The client behind a request; Denied 401 for a missing (when required) or
    unknown key, before any per-key state exists."""
    ip = client_ip(peer, headers, clients.trusted)
    auth = headers.get("Authorization", "")
    if auth:
        scheme, _, key = auth.partition(" ")
        key = key.strip(OPTIONAL_WHITESPACE)
        if scheme.lower() != "bearer" or not key:
            raise Denied("invalid_api_key", "the Authorization header must be 'Bearer <key>'",
                         headers=(("WWW-Authenticate", 'Bearer realm="router"'),))
    else:
        # Anthropic's SDKs send the key in x-api-key. nginx refuses a second
        # Authorization line itself; a second x-api-key it passes, so refuse it
        # here rather than pick one.
        keys = headers.getall("x-api-key", ())
        if len(keys) > 1:
            raise Denied("invalid_request", f"the x-api-key header was sent {len(keys)} times; "
                         "send it once")
        key = keys[0].strip(OPTIONAL_WHITESPACE) if keys else ""
        if not key:
            if clients.require_key:
                raise Denied("missing_api_key", "an API key is required: Authorization: Bearer "
                             "<key> (or x-api-key: <key>)",
                             headers=(("WWW-Authenticate", 'Bearer realm="router"'),))
            return Client(None, "", ip)
    if not clients.by_digest:
        return Client(None, "", ip)  # no keys configured: the header is the upstream's business
    wanted = _seen_digests.get(key)
    if wanted is None:
        wanted = digest(key)
    # The dict is keyed by SHA-256 of the key, so lookup timing can at most reveal
    # digest prefixes, which do not help forge a key; the final equality check on
    # the stored digest is constant time.
    found = clients.by_digest.get(wanted)
    if found is None or not hmac.compare_digest(found[0], wanted):
        raise Denied("invalid_api_key", "the API key is not valid",
                     headers=(("WWW-Authenticate", 'Bearer realm="router"'),))
    if len(_seen_digests) >= 10_000:
        _seen_digests.clear()
    _seen_digests[key] = wanted
    return Client(found[1], wanted[len(DIGEST_PREFIX):][:12], ip)
