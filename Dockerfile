# The router in one container: nginx (lua mode) + one sidecar process.
# The policy is checked at build time (STYLE 4): a broken policy fails the build.
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nginx libnginx-mod-http-lua lua-cjson python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY nginx ./nginx
COPY policies ./policies
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir -e . \
 && /venv/bin/python -m sidecar check policies/production.yaml policies/demo.yaml

ENV POLICY=/app/policies/production.yaml LISTEN=0.0.0.0:8080 RUN_DIR=/run/hir
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/app/nginx/container-entrypoint"]
