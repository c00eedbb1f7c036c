# A small, static, non-root image of the tenantry binary. (Our machines have no container
# engine; this is the conventional build for users' CI.)
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY .cargo ./.cargo
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin tenantry

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tenantry /tenantry
USER 65532:65532
EXPOSE 8080 8443
ENTRYPOINT ["/tenantry"]
CMD ["run", "--log-format", "json"]
