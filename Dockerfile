# syntax=docker/dockerfile:1
# The tidemark image: `docker build -t tidemark:0.1.0 .` (BuildKit). The chart (helm/tidemark)
# runs every stage from it: capture, backfill, apply, reconcile, topics init.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the release binary only, with the locked dependency versions.
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target across builds; the binary is copied out of the
# cached target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tidemark \
    && install -D -m 0755 target/release/tidemark /out/tidemark

# ---- runtime: a small Debian with CA certificates and a non-root user.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tidemark \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin tidemark
COPY --from=build /out/tidemark /usr/local/bin/tidemark
# The numeric id lets Kubernetes' runAsNonRoot verify the user without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# The health and Prometheus endpoint ([metrics] listen in the chart's config).
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/tidemark"]
CMD ["--help"]
