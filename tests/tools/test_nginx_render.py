"""nginx configuration rendered from the policy: accepted by real nginx in both modes."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.tools import nginx_upstreams
from sidecar.tools.nginx_render import NginxOptions, render_config, render_upstreams, write_config
from sidecar.policy.spec import load_policy
from conftest import DEMO, ROOT


def test_one_upstream_and_map_entry_per_endpoint():
    policy = load_policy(DEMO, {})
    text = render_upstreams(policy)
    for e in policy.endpoints:
        assert f"upstream {e.name} {{\n    server {e.host}:{e.port} max_fails=0;" in text
        assert f'    {e.name} "http://{e.name}/v1";' in text
        assert f'    {e.name} "{e.model}";' in text
    assert text.count("keepalive 32;") == len(policy.endpoints)
    assert '"/v1/completions" "nano-qwen3-0-6b";' in text


def test_https_endpoints_get_their_host_for_sni_and_host_header():
    text = render_upstreams(load_policy(ROOT / "policies" / "production.yaml", {}))
    assert 'fast-llama-3-1-8b "https://fast-llama-3-1-8b/openai/v1";' in text
    assert "server api.groq.com:443 max_fails=0;" in text
    assert 'expert-grok-4 "openrouter.ai";' in text


def test_no_secret_is_rendered():
    policy = load_policy(ROOT / "policies" / "production.yaml", {"GROQ_API_KEY": "gsk_supersecret"})
    assert "gsk_supersecret" not in render_upstreams(policy)
    assert "gsk_supersecret" not in render_config(policy, NginxOptions())


@pytest.mark.parametrize("mode", ["lua", "stock"])
@pytest.mark.parametrize("workers", [1, 3])
def test_nginx_accepts_the_rendered_config(tmp_path, mode, workers):
    policy = load_policy(DEMO, {})
    sockets = [str(tmp_path / f"s{i}.sock") for i in range(workers)]
    conf = write_config(policy, NginxOptions(mode=mode, run_dir=str(tmp_path), sidecar_sockets=sockets))
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert ("access_by_lua_block" in text) == (mode == "lua")
    assert ("hash $hir_client_key consistent;" in text) == (workers > 1)


def _locations(text: str) -> dict[str, str]:
    return dict(re.findall(r"\n        location (@\S+) \{\n(.*?)\n        \}", text, re.S))


@pytest.mark.parametrize("mode", ["lua", "stock"])
def test_a_response_cache_is_used_by_the_buffered_hops_each_under_its_own_endpoint(tmp_path, mode):
    from sidecar.policy.spec import compile_policy
    policy = compile_policy(DEMO.read_bytes() + b"response_cache: {ttl: 90s, max_size_mb: 64}\n", "t.yaml", {})
    conf = write_config(policy, NginxOptions(mode=mode, run_dir=str(tmp_path),
                                             sidecar_sockets=[str(tmp_path / "s.sock")]))
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "keys_zone=hir_answers:10m max_size=64m inactive=90s" in text
    locations = _locations(text)
    hops = {"": "$route_endpoint|$hop_model", "_fb1": "$route_fallback|$hop_fb1_model",
            "_fb2": "$route_fallback2|$hop_fb2_model"}
    for tier in ("nano", "expert"):
        for suffix, endpoint in hops.items():
            buffered = locations[f"@buffered_{tier}{suffix}"]
            assert f'proxy_cache_key "$route_cache_key|{endpoint}";' in buffered
            assert "proxy_cache_valid 200 90s;" in buffered and "proxy_no_cache $hir_cache_off;" in buffered
            assert "proxy_cache off;" in locations[f"@stream_{tier}{suffix}"]
            assert "hir_answers" not in locations[f"@stream_{tier}{suffix}"]
    assert "hir_answers" not in locations["@sidecar_failed"]   # no decision, no key
    plain = render_config(load_policy(DEMO, {}), NginxOptions(mode=mode, run_dir=str(tmp_path)))
    assert "hir_answers" not in plain and "add_header X-Cache-Status" not in plain


@settings(max_examples=500, deadline=None)
@given(deadline=st.integers(1, 10**11), n=st.integers(0, 10**11))
def test_the_clock_is_compared_to_a_hashs_deadline_as_text(deadline, n):
    """nginx's fail-open hash check takes a previous hash while $msec's seconds are
    below its deadline: a regex over the digits, right for every pair."""
    pattern = re.compile("^" + nginx_upstreams.below(deadline) + "$")
    assert bool(pattern.match(str(n))) == (n < deadline)
    assert bool(pattern.match(str(deadline - 1))) and not pattern.match(str(deadline))


@pytest.mark.parametrize("mode", ["lua", "stock"])
def test_every_forwarding_location_pages_each_failover_status_once(tmp_path, mode):
    # A status without an error_page reached the client as the endpoint sent it
    # (Anthropic's 529, Cloudflare's HTML 520-527), with no fallback.
    from sidecar.tools.nginx_hops import STOP
    text = DEMO.read_text()
    assert text.count("{name: balanced-qwen3-32b,") == 1
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace("{name: balanced-qwen3-32b,",
                                 "{name: balanced-qwen3-32b, failover_on: [500, 502, 503, 504],"))
    policy = load_policy(path, {})
    conf = render_config(policy, NginxOptions(mode=mode))
    forwarding = {name: body for name, body in _locations(conf).items()
                  if re.match(r"@(buffered|stream)_\w+$", name)}
    assert len(forwarding) == len(policy.tiers) * 2 * 3
    for name, body in forwarding.items():
        paged = [int(s) for line in re.findall(r"error_page ([\d ]+) =", body) for s in line.split()]
        assert sorted(paged) == sorted(STOP), name
    # balanced-qwen3-32b does not fail over on 529: the map 529 pages to ends the
    # chain for it, and the one 503 pages to does not.
    body = forwarding["@buffered_balanced"]
    target = {int(s): var for line, var in re.findall(r"error_page ([\d ]+) = \$(\w+);", body)
              for s in line.split()}
    maps = dict(re.findall(r'map "\$route_endpoint\|\$route_fallback" \$(\w+) \{\n(.*?)\n\}',
                           render_upstreams(policy), re.S))
    assert '"~^(balanced-qwen3-32b)\\|" @upstream_failed;' in maps[target[529]]
    assert "balanced-qwen3-32b)" not in maps[target[503]]
