# Images for people with neither Nix nor prebuilt images. The Nix route
# (nix/images.nix) gives smaller, shell-less images; both give the same
# entrypoints, ports, user and /models volume, so docker-compose.yml runs
# either. See docs/deployment.md.
#
#   docker build --target service -t mlwatch-service .
#   docker build --target trainer -t mlwatch-trainer .
#
# Both images carry the service build (--no-default-features): train, serve
# and runbooks; the tools (demo, up, load, report) are not in the binary.
#
# The builder uses the bookworm variant of the Rust image so that the binary
# links against the same glibc as the debian:bookworm-slim runtime.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --no-default-features --bin mlwatch \
 && install -D -m 0755 target/release/mlwatch /out/mlwatch

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 65534 -g 65534 /models
COPY --from=builder /out/mlwatch /usr/local/bin/mlwatch
ENV MLWATCH_MODEL_PATH=/models/model.json
USER 65534:65534
WORKDIR /models
VOLUME ["/models"]

FROM runtime AS trainer
EXPOSE 8002
CMD ["mlwatch", "train", "--output", "/models/model.json", "--listen", "0.0.0.0:8002"]

# Last stage: what a plain `docker build .` produces.
FROM runtime AS service
EXPOSE 9000
CMD ["mlwatch", "serve", "--listen", "0.0.0.0:9000", "--model-path", "/models/model.json"]
