# Multi-stage. The agent reads the systemd journal through go-systemd's
# sdjournal, which needs cgo and libsystemd's headers to build and loads
# libsystemd.so.0 at run time, so the runtime image is Debian slim (which
# carries libsystemd0) rather than a static distroless one. It runs as root
# in its container, with no capabilities, for the root-owned host files it
# reads (see deploy/base/daemonset.yaml).
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsystemd-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV GONOSUMDB=github.com/euank/go-kmsg-parser
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
COPY internal ./internal
RUN go build -tags journald -trimpath -ldflags="-s -w" -o /out/nodeguard ./cmd/agent

FROM debian:bookworm-slim
COPY --from=build /out/nodeguard /usr/bin/nodeguard
# `make image` builds the same image without a Docker engine
# (internal/imagebuild); a test keeps the entrypoint, user and path in step.
USER 0:0
ENTRYPOINT ["/usr/bin/nodeguard"]
