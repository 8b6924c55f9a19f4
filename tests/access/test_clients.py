"""Client identification: keys by digest, 401s, trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
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
    ("10.1.2.3", {}, "10.1.2.3"),
])
def test_forwarded_addresses_count_only_from_trusted_proxies(peer, extra, expected):
    assert client_ip(peer, headers(**extra), CLIENTS.trusted) == expected


def test_the_digest_never_contains_the_key():
    assert digest("good-key").startswith("sha256:") and "good-key" not in digest("good-key")
