# syntax=docker/dockerfile:1
#
# pgveil container image: a multi-stage build.
#
#   docker build -t pgveil:dev --build-arg VERSION=$(git describe --tags --always) \
#       --build-arg COMMIT=$(git rev-parse HEAD) .
#
# The builder runs `make build` (cgo is required: pg_query compiles
# PostgreSQL's parser from C; the golang image has gcc and make). The runtime image is Debian slim
# (glibc, as the cgo binary needs), CA certificates for upstream_tls, curl for
# the HEALTHCHECK, and a non-root user.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# GOTOOLCHAIN=auto: if this image's Go is older than go.mod asks for, the
# go command fetches the right toolchain instead of failing.
ENV CGO_ENABLED=1 GOTOOLCHAIN=auto
# Dependencies first, so source edits do not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# Exactly `make build`: go build -ldflags "-X main.version=... -X
# main.commit=..." -o $(BIN) ./cmd/pgveil. .git is not in the build context,
# so VERSION and COMMIT come from the build arguments.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    make build BIN=/out/pgveil VERSION="${VERSION}" COMMIT="${COMMIT}" \
    && /out/pgveil version

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pgveil \
    && useradd --system --uid 10001 --gid pgveil --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin pgveil \
    && mkdir -p /etc/pgveil \
    && chown root:pgveil /etc/pgveil \
    && chmod 0750 /etc/pgveil
COPY --from=build /out/pgveil /usr/local/bin/pgveil

# The config is mounted here (Compose volume, Kubernetes ConfigMap). Inside a
# container pgveil must listen on all interfaces: set listen: 0.0.0.0:6432 and
# admin_listen: 0.0.0.0:9187 in that file (the defaults bind 127.0.0.1).
ENV PGVEIL_CONFIG=/etc/pgveil/pgveil.yaml

USER 10001:10001
# 6432: PostgreSQL protocol (clients). 9187: /metrics, /healthz, /readyz.
EXPOSE 6432 9187

# /healthz answers 200 while the process runs. Readiness (keys loaded,
# upstream reachable, not in maintenance, not draining) is /readyz: use it for
# load balancers and Kubernetes readinessProbe, not for restarts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS --max-time 2 http://127.0.0.1:9187/healthz || exit 1

# SIGTERM drains (no new connections, open transactions finish within
# shutdown_timeout); SIGHUP reloads config and keys.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgveil"]
CMD ["serve", "--config", "/etc/pgveil/pgveil.yaml"]
