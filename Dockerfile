# Multi-stage: a static binary on a distroless base. The agent runs as root in
# its container because /dev/kmsg is root's (see deploy/daemonset.yaml).
FROM golang:1.26 AS build
WORKDIR /src
ENV GONOSUMDB=github.com/euank/go-kmsg-parser
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
COPY internal ./internal
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/nodeguard ./cmd/agent

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/nodeguard /usr/bin/nodeguard
ENTRYPOINT ["/usr/bin/nodeguard"]
