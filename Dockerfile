# tally as a FROM-scratch image: one static binary, a CA bundle, nothing else.
#
#   docker build -t tally .
#   docker run --rm -v tally-state:/state -v $PWD/tally.toml:/etc/tally/tally.toml:ro tally
#
# The config's [store] path should be "/state" (the volume). The process runs
# as uid/gid 10001; give the volume to that user.

# ---- build: the same script CI uses, so the image holds the tested artifact
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq musl-tools file && rm -rf /var/lib/apt/lists/*
COPY . .
RUN scripts/build-static.sh && cp target/x86_64-unknown-linux-musl/dist/tally /tally

# ---- CA bundle for TLS to Kafka and sinks (rustls reads it via the system roots path)
FROM debian:bookworm-slim AS certs
RUN apt-get update -qq && apt-get install -y -qq ca-certificates && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /state && chown 10001:10001 /state

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=certs --chown=10001:10001 /state /state
COPY --from=build /tally /tally
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    TALLY_CONFIG=/etc/tally/tally.toml
USER 10001:10001
VOLUME ["/state"]
# Healthy while the daemon holds its store; needs no shell, curl or network.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["/tally", "health"]
ENTRYPOINT ["/tally"]
CMD ["run"]
