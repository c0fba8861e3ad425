# One image for every kfaas part: the binary plus the Node.js and Python bootstraps.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kfaas

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates nodejs python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kfaas /usr/local/bin/kfaas
COPY runtimes /opt/kfaas/runtimes
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kfaas"]
