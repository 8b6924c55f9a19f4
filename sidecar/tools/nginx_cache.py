"""The response cache in nginx (policy `response_cache`): a cache zone on disk,
and what each buffered forwarding location adds to use it.

The decision says whether a request may be answered from the cache and under
which key (sidecar.edge.response_cache); each hop files its answer under that key
plus its own endpoint and model id, so a repeat is only answered as the endpoint
that made the answer (the route headers stay true) and a fallback's answer is the
fallback's.
Only a 200 is kept. What a provider says about caching is ignored: the operator
turned the cache on, and OpenAI's answers carry Cloudflare cookies, which nginx
would otherwise never cache (the cookies never reach a client: both modes hide
Set-Cookie). Streams are not cached (their locations keep `proxy_cache off`)."""

from __future__ import annotations

ZONE = "hir_answers"
# Keys in shared memory: ~8,000 answers a megabyte (nginx's figure).
KEYS_ZONE_MB = 10


def http_blocks(policy, opts) -> list[str]:
    cache = policy.response_cache
    if cache is None:
        return []
    return [f"proxy_cache_path {opts.run_dir}/answers levels=1:2 keys_zone={ZONE}:{KEYS_ZONE_MB}m "
            f"max_size={cache.max_size_mb}m inactive={cache.ttl_s}s use_temp_path=off;",
            # No key from the decision: neither looked up nor kept.
            'map $route_cache_key $hir_cache_off { "" 1; default 0; }',
            # A request with a conditional header goes to no cache at all. With a
            # cache on, nginx's not-modified filter judges If-Match, If-None-Match,
            # If-(Un)Modified-Since against the answer (which has no ETag or date):
            # a POST got a bodiless 304 or nginx's HTML 412. Bypassing is not
            # enough (the filter is armed before the bypass test); a cache zone that
            # evaluates to "off" arms nothing. Clients of these APIs send none of them.
            'map "$http_if_match$http_if_none_match$http_if_modified_since$http_if_unmodified_since" '
            f'$hir_cache_zone {{ "" {ZONE}; default off; }}']


def location_lines(policy, endpoint_variable: str, model_variable: str, pad: str) -> list[str]:
    """For a buffered forwarding location whose endpoint and its model id are in
    these variables (the model too: after a reload gives the endpoint another
    model, its earlier answers are not given as the new model's)."""
    cache = policy.response_cache
    if cache is None:
        return []
    return [f"{pad}proxy_cache $hir_cache_zone;",
            f"{pad}proxy_cache_methods POST;",
            f'{pad}proxy_cache_key "$route_cache_key|${endpoint_variable}|${model_variable}";',
            f"{pad}proxy_cache_valid 200 {cache.ttl_s}s;",
            f"{pad}proxy_no_cache $hir_cache_off;",
            f"{pad}proxy_cache_bypass $hir_cache_off $route_cache_refresh;",
            f"{pad}proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;",
            f"{pad}add_header X-Cache-Status $upstream_cache_status always;"]
