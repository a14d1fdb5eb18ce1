# One entry point for everything a developer or CI runs.
#   make run    start the server with zero configuration (same as `go run .`)
#   make test   install what the suite needs (Chromium), then vet, format check, race tests
#   make bench  side-by-side benchmark against the original gorilla example
#   make build  a static binary in bin/modified-chat, its version from git
#   make image  the FROM scratch container image (podman), from that binary

GO ?= go
CHROMIUM ?= /usr/bin/chromium
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE ?= modified-chat:$(VERSION)

.PHONY: run test deps vet fmt-check bench fuzz build image

run:
	$(GO) run .

# deps installs the Debian packages the suite drives when any is missing: Chromium for
# the browser tests, nginx for the reverse-proxy test, pebble (Let's Encrypt's test CA)
# for the ACME test, podman for the container test, systemd-analyze for the unit test.
DEPS_PROGRAMS = $(CHROMIUM):chromium nginx:nginx pebble:pebble pebble-challtestsrv:pebble podman:podman systemd-analyze:systemd
deps:
	@missing=""; for pair in $(DEPS_PROGRAMS); do \
		prog="$${pair%%:*}"; pkg="$${pair##*:}"; \
		command -v "$$prog" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (the suite drives them)"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@$(CHROMIUM) --version

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

# build makes the static binary that the container image and a systemd install use.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/modified-chat .

# image stages the binary, the CA certificates and an empty data directory in bin/image
# and builds the FROM scratch image from them (see Containerfile).
image: build
	rm -rf bin/image && mkdir -p bin/image/data bin/image/etc/ssl/certs
	cp bin/modified-chat bin/image/modified-chat
	cp /etc/ssl/certs/ca-certificates.crt bin/image/etc/ssl/certs/ca-certificates.crt
	podman build -f Containerfile -t $(IMAGE) bin/image

bench:
	bash scripts/bench.sh

# fuzz runs the envelope and signed-bytes fuzzers for a bounded time (their seed
# corpora run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseEnvelope -fuzztime 60s .
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./internal/sigmsg
	$(GO) test -run '^$$' -fuzz FuzzEncode -fuzztime 30s ./internal/sigmsg
