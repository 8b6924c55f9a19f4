"""Tooling around the router, never on the request path: nginx rendering, the
local stack, the simulated endpoints, golden suites and `explain`."""
