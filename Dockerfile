# syntax=docker/dockerfile:1
# Both Oxbow images from one build:
#   docker build --target broker   -t oxbow-broker:dev .
#   docker build --target operator -t oxbow-operator:dev .
# Runtime images are distroless (glibc, CA certificates, no shell) and run as uid 65532.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not refetch them.
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY broker broker
COPY operator operator
COPY e2e e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p oxbow-broker -p oxbow-operator \
        --bin oxbow-broker --bin oxbow-operator \
    && mkdir -p /out \
    && cp target/release/oxbow-broker target/release/oxbow-operator /out/ \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS broker
COPY --from=build /out/oxbow-broker /usr/local/bin/oxbow-broker
# A writable data directory for `docker run` without a volume; Kubernetes mounts one.
COPY --from=build --chown=65532:65532 /out/data /var/lib/oxbow/data
USER 65532:65532
EXPOSE 9092 9093 9404
ENTRYPOINT ["/usr/local/bin/oxbow-broker"]
# Defaults for `docker run`. Flags override a config file, so the operator replaces these
# arguments with `--config <the pod's file>`.
CMD ["--listeners", "PLAINTEXT://0.0.0.0:9092", "--log-dirs", "/var/lib/oxbow/data", "--metrics-address", "0.0.0.0:9404"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/oxbow-operator /usr/local/bin/oxbow-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/oxbow-operator"]
