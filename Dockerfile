# The router in one image: nginx (lua mode) + the sidecar, under a supervisor
# (python -m sidecar container) that stops the container when either dies,
# reloads the policy on SIGHUP (or when the mounted file changes) and drains on
# SIGTERM. Runs as an unprivileged user on 8080 (HTTP), 8443 (HTTPS, when a
# certificate is mounted at /etc/hir/tls/tls.crt + tls.key) and 9200 (metrics);
# everything it writes is under /tmp/hir, so `--read-only --tmpfs /tmp` works.
#
#   podman build --format docker -t hir .      (docker format: HEALTHCHECK)
#   podman run -p 8080:8080 -v ./policies/production.yaml:/etc/hir/policy.yaml:ro \
#       -e GROQ_API_KEY -e OPENROUTER_API_KEY --read-only --tmpfs /tmp hir
# scripts/container-smoke builds and checks it (CI runs it).

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates gcc libc6-dev python3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/hir/src
COPY pyproject.toml setup.py README.md ./
COPY sidecar ./sidecar
COPY nginx ./nginx
COPY policies ./policies
# A non-editable install would leave nginx/ (hir.lua, the shared snippet) behind:
# the package finds it beside itself, so the source tree is what the image runs.
# The editable install builds the compiled scorer in place; the import fails the
# build if it was not (it is optional to setup.py, not to the image).
RUN python3 -m venv /opt/hir/venv \
 && /opt/hir/venv/bin/pip install --no-cache-dir --no-compile -e '.[redis]' \
 && /opt/hir/venv/bin/python -c 'import sidecar.complexity._scoring' \
 && /opt/hir/venv/bin/python -m sidecar check policies/production.yaml policies/demo.yaml \
 && /opt/hir/venv/bin/python -m compileall -q sidecar /opt/hir/venv/lib \
 && /opt/hir/venv/bin/pip uninstall -y -q pip setuptools \
 && rm -rf /opt/hir/venv/bin/pip* /opt/hir/venv/bin/activate*

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nginx libnginx-mod-http-lua lua-cjson python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hir \
 && mkdir -p /etc/hir/tls
COPY --from=build /opt/hir /opt/hir
COPY policies/production.yaml /etc/hir/policy.yaml
ENV HIR_POLICY=/etc/hir/policy.yaml HIR_RUN_DIR=/tmp/hir PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/hir/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 10001:10001
WORKDIR /opt/hir/src
EXPOSE 8080 8443 9200
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/opt/hir/venv/bin/python", "-m", "sidecar", "container-health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/hir/venv/bin/python", "-m", "sidecar"]
CMD ["container"]
