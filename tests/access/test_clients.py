"""Client identification: keys by digest, 401s, trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar.access.clients import Clients, Tenant, client_ip, digest, identify
from sidecar.denials import Denied

ACME = Tenant("acme", None, "deny", 0.0, "deny")
CLIENTS = Clients(False, (ipaddress.ip_network("10.0.0.0/8"),),
                  {digest("good-key"): (digest("good-key"), ACME)})


def headers(**values):
    h = CIMultiDict()
    for name, value in values.items():
        h.add(name.replace("_", "-"), value)
    return h


def test_a_known_key_names_its_tenant_and_a_non_secret_key_id():
    client = identify(CLIENTS, headers(Authorization="Bearer good-key"), "192.0.2.1")
    assert client.tenant == ACME and client.id == "tenant:acme"
    assert len(client.key_id) == 12 and client.key_id not in "good-key"


@pytest.mark.parametrize("auth,reason", [
    ("Bearer wrong-key", "invalid_api_key"),
    ("Basic Z29vZC1rZXk=", "invalid_api_key"),
    ("Bearer ", "invalid_api_key"),
])
def test_bad_keys_are_401(auth, reason):
    with pytest.raises(Denied) as info:
        identify(CLIENTS, headers(Authorization=auth), "192.0.2.1")
    assert (info.value.status, info.value.reason) == (401, reason)
    assert dict(info.value.headers)["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header,prefix", [("Authorization", "Bearer "), ("x_api_key", "")])
@pytest.mark.parametrize("around", ["\xa0", "\x85", "\x0b", "\x0c", "\x1c", "\x1f", "\u2028", "\u3000"])
def test_a_key_with_anything_but_optional_whitespace_around_it_is_not_the_key(header, prefix, around):
    for value in (f"{prefix}good-key{around}", f"{prefix}{around}good-key"):
        with pytest.raises(Denied) as info:
            identify(CLIENTS, headers(**{header: value}), "192.0.2.1")
        assert (info.value.status, info.value.reason) == (401, "invalid_api_key")


@pytest.mark.parametrize("header,prefix", [("Authorization", "Bearer "), ("x_api_key", "")])
@pytest.mark.parametrize("ows", [" ", "\t", " \t "])
def test_optional_whitespace_around_a_key_is_allowed(header, prefix, ows):
    client = identify(CLIENTS, headers(**{header: f"{prefix}{ows}good-key{ows}"}), "192.0.2.1")
    assert client.tenant == ACME


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([("Authorization", "Bearer "), ("x_api_key", "")]),
       # What a header can carry: the sidecar reads header bytes as latin-1 (edge/wire.py).
       st.text(st.characters(max_codepoint=0xFF, blacklist_characters=" \t\r\n"), min_size=1, max_size=3),
       st.booleans())
def test_any_other_character_next_to_a_key_makes_it_not_the_key(form, around, leading):
    """Generated: whatever a client writes beside the key, bar SP/HTAB, it is not the key."""
    header, prefix = form
    value = prefix + (around + "good-key" if leading else "good-key" + around)
    with pytest.raises(Denied) as info:
        identify(CLIENTS, headers(**{header: value}), "192.0.2.1")
    assert (info.value.status, info.value.reason) == (401, "invalid_api_key")


def test_an_anthropic_style_x_api_key_identifies_the_same_tenant():
    client = identify(CLIENTS, headers(x_api_key="good-key"), "192.0.2.1")
    assert client.tenant == ACME
    assert client.key_id == identify(CLIENTS, headers(Authorization="Bearer good-key"), "192.0.2.1").key_id
    with pytest.raises(Denied) as info:
        identify(CLIENTS, headers(x_api_key="wrong-key"), "192.0.2.1")
    assert (info.value.status, info.value.reason) == (401, "invalid_api_key")
    # Authorization wins when both are sent: one credential decides, never a mix.
    with pytest.raises(Denied):
        identify(CLIENTS, headers(Authorization="Bearer wrong-key", x_api_key="good-key"), "192.0.2.1")


@pytest.mark.parametrize("first,second", [("good-key", "wrong-key"), ("wrong-key", "good-key"),
                                          ("good-key", "good-key"), ("good-key", "")])
def test_a_second_x_api_key_is_refused_whichever_comes_first(first, second):
    """nginx refuses a second Authorization line itself; x-api-key it passes on."""
    twice = CIMultiDict([("x-api-key", first), ("X-Api-Key", second)])
    with pytest.raises(Denied) as info:
        identify(CLIENTS, twice, "192.0.2.1")
    assert (info.value.status, info.value.reason) == (400, "invalid_request")


def test_no_key_is_anonymous_unless_keys_are_required():
    assert identify(CLIENTS, headers(), "192.0.2.1").id == "ip:192.0.2.1"
    with pytest.raises(Denied) as info:
        identify(CLIENTS._replace(require_key=True), headers(), "192.0.2.1")
    assert (info.value.status, info.value.reason) == (401, "missing_api_key")


@pytest.mark.parametrize("peer,extra,expected", [
    ("192.0.2.1", {"X_Forwarded_For": "198.51.100.7"}, "192.0.2.1"),      # untrusted peer: ignored
    ("10.1.2.3", {"X_Forwarded_For": "198.51.100.7"}, "198.51.100.7"),
    ("10.1.2.3", {"X_Forwarded_For": "203.0.113.9, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"),
    ("10.1.2.3", {"X_Real_IP": "198.51.100.8"}, "198.51.100.8"),
    ("10.1.2.3", {"X_Forwarded_For": "not-an-ip"}, "10.1.2.3"),
    ("10.1.2.3", {"X_Forwarded_For": "198.51.100.7, 10.9.9.9:4711"}, "198.51.100.7"),  # trusted, with a port
    ("10.1.2.3", {"X_Forwarded_For": "198.51.100.7:99999"}, "10.1.2.3"),   # not a port: not an address
    ("10.1.2.3", {"X_Forwarded_For": "[2001:db8::7"}, "10.1.2.3"),
    ("10.1.2.3", {}, "10.1.2.3"),
])
def test_forwarded_addresses_count_only_from_trusted_proxies(peer, extra, expected):
    assert client_ip(peer, headers(**extra), CLIENTS.trusted) == expected


def test_the_digest_never_contains_the_key():
    assert digest("good-key").startswith("sha256:") and "good-key" not in digest("good-key")


# --- One address, one client, however it is written ---

def _spellings(ip: ipaddress._BaseAddress) -> list[str]:
    if ip.version == 4:
        mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
        return [str(ip), f"::ffff:{ip}", mapped.exploded, mapped.exploded.upper(),
                f"0:0:0:0:0:ffff:{ip}"]
    return [str(ip), ip.exploded, ip.exploded.upper(), str(ip).upper(),
            ":".join(g.lstrip("0") or "0" for g in ip.exploded.split(":"))]


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_every_spelling_of_an_address_is_one_client(ip):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    seen = {client_ip(spelling, headers(), ()) for spelling in _spellings(ip)}
    assert seen == {str(ip)}


def _with_ports(spelling: str, port: int) -> list[str]:
    """As proxies write a hop in X-Forwarded-For: with the client's source port,
    or in RFC 7239's brackets (an IPv6 address, or a mapped one, has two colons)."""
    if spelling.count(":") >= 2:
        return [f"[{spelling}]", f"[{spelling}]:{port}"]
    return [f"{spelling}:{port}"]


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.integers(0, 65535))
def test_a_forwarded_address_is_canonical_too(ip, port):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    assume(not any(ip in net for net in CLIENTS.trusted))  # a trusted hop is skipped, rightly
    for spelling in _spellings(ip):
        for written in (spelling, *_with_ports(spelling, port)):
            assert client_ip("10.1.2.3", headers(**{"X-Forwarded-For": written}),
                             CLIENTS.trusted) == str(ip), written


def test_an_ipv4_mapped_peer_is_trusted_like_its_ipv4_form():
    h = headers(**{"X-Forwarded-For": "2001:db8::7"})
    assert client_ip("::ffff:10.0.0.9", h, CLIENTS.trusted) == "2001:db8::7"


# --- An IPv6 client is its network, not each address in it ---

from sidecar.access.clients import limited_address  # noqa: E402

IPV6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


@settings(max_examples=400, deadline=None)
@given(IPV6, st.integers(0, 2**64 - 1), st.integers(32, 128))
def test_addresses_in_one_network_are_one_client_and_networks_apart_are_two(address, host_bits, prefix):
    """Any address the host can take in its /prefix counts as the same client; the
    network's own address shows which one it is."""
    base = int(ipaddress.IPv6Address(address))
    keep = 128 - prefix
    sibling = str(ipaddress.IPv6Address((base >> keep << keep) | (host_bits & ((1 << keep) - 1))))
    assert limited_address(address, prefix) == limited_address(sibling, prefix)
    network = ipaddress.IPv6Network(limited_address(address, prefix)) if prefix < 128 else None
    assert network is None or (ipaddress.IPv6Address(address) in network and network.prefixlen == prefix)
    other = str(ipaddress.IPv6Address(base ^ (1 << keep)))   # a bit of the network part flipped
    assert limited_address(other, prefix) != limited_address(address, prefix)


@given(st.integers(0, 2**32 - 1), st.integers(32, 128))
def test_an_ipv4_address_is_always_its_own_client(n, prefix):
    address = str(ipaddress.IPv4Address(n))
    assert limited_address(address, prefix) == address
    assert limited_address(address, 128) == address
