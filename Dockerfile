# The `cronbox` binary (all roles) for compose.yaml. Build: docker build -t cronbox:latest .
# Only the sources are copied (there is no .dockerignore; target/ and .cronbox/ stay out).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY domain domain
COPY store store
COPY projections projections
COPY dispatcher dispatcher
COPY nats nats
COPY executor executor
COPY api api
# Embedded into the binary with include_str! (store/src/db.rs).
COPY migrations migrations
RUN cargo build --release --locked --bin cronbox

FROM debian:bookworm-slim
# curl: for the API container's health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home cronbox
COPY --from=build /src/target/release/cronbox /usr/local/bin/cronbox
USER cronbox
EXPOSE 8080
CMD ["cronbox", "serve"]
