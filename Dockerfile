# A small static image of the operator, running as a non-root user.
#
#   docker build -t ghcr.io/manifold-dev/manifold:0.1.0 .
#
# The build stage links against musl, so the binary needs no libc and the
# final stage is distroless/static (no shell, no package manager).
#
# Where there is no Docker, hack/image builds the same image without a daemon
# (buildah, FROM scratch, reproducible) as an OCI archive. Keep the two in
# agreement: user 65532:65532, entrypoint /manifold, the cmd below, port 8080,
# CA bundle at /etc/ssl/certs/ca-certificates.crt (SSL_CERT_FILE).
FROM docker.io/library/rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a change to src/ reuses their layer. The
# workspace's other members (the core crate, and the test support crate that
# Cargo reads as a dev-dependency) come with them.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests/support tests/support
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin manifold \
 && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin manifold \
 && cp target/x86_64-unknown-linux-musl/release/manifold /manifold

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /manifold /manifold
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/manifold"]
CMD ["run", "--admin-address=0.0.0.0:8080"]
