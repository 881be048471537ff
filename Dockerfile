# paxsql: multi-stage build of the one binary.
# Not built on the development machines (they have no Docker engine); the
# compose file's command lines are checked against the binary in the tests.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p paxsql && strip target/release/paxsql

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/paxsql /usr/local/bin/paxsql
VOLUME /data
EXPOSE 4001 4101 4201
ENTRYPOINT ["paxsql"]
CMD ["node", "--help"]
