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

.PHONY: run test deps vet fmt-check bench fuzz build image vendor vendor-check

run:
	$(GO) run .

# deps installs the Debian packages the suite drives when any is missing: Chromium for
# the browser tests, nginx for the reverse-proxy test, pebble (Let's Encrypt's test CA)
# for the ACME test, podman for the container test, systemd-analyze for the unit test,
# node and npm for the vendored bundle check (make vendor-check), redis-server for the
# multi-node tests.
DEPS_PROGRAMS = $(CHROMIUM):chromium nginx:nginx pebble:pebble pebble-challtestsrv:pebble podman:podman systemd-analyze:systemd node:nodejs npm:npm redis-server:redis-server
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
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory vendor-check; \
	else echo "vendor-check skipped: no node/npm"; fi
	$(GO) test -race -count=1 -timeout 25m ./...

# vendor rebuilds the page's two vendored libraries from their committed lockfiles into
# one minified ES module each under static/vendor, with the licences of everything
# inlined (static/vendor/LICENSES) and each bundle's SHA-256 beside it: ts-mls pinned at
# exactly 1.6.4 (MLS) and qrcode-generator pinned at exactly 2.0.4 (the safety number's
# QR code). ts-mls builds first because its build empties LICENSES; the QR build adds its
# notice. The directory is not named vendor/ because the go tool would take it for
# module vendoring. --ignore-scripts: nothing runs at install (esbuild's binary comes
# from its platform package).
TSMLS_DIR = third_party/ts-mls
TSMLS_BUNDLE = ts-mls-1.6.4.min.js
QR_DIR = third_party/qr
QR_BUNDLE = qrcode-generator-2.0.4.min.js
vendor:
	cd $(TSMLS_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	cd $(QR_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	cd $(TSMLS_DIR) && node build.mjs ../../static/vendor
	cd $(QR_DIR) && node build.mjs ../../static/vendor
	cd static/vendor && sha256sum $(TSMLS_BUNDLE) > $(TSMLS_BUNDLE).sha256
	cd static/vendor && sha256sum $(QR_BUNDLE) > $(QR_BUNDLE).sha256

# vendor-check rebuilds both into a temporary directory and fails unless the bundles and
# the licences are byte-identical to the committed ones: what is embedded is what the
# lockfiles build.
vendor-check:
	@cd $(TSMLS_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@cd $(QR_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	(cd $(TSMLS_DIR) && node build.mjs "$$tmp") >/dev/null && \
	(cd $(QR_DIR) && node build.mjs "$$tmp") >/dev/null && \
	ok=1; for b in $(TSMLS_BUNDLE) $(QR_BUNDLE); do \
		(cd "$$tmp" && sha256sum -c "$(CURDIR)/static/vendor/$$b.sha256" >/dev/null) && \
		cmp -s "$$tmp/$$b" static/vendor/$$b && \
		echo "vendor-check: $$b rebuilds byte-identical ($$(cut -d' ' -f1 static/vendor/$$b.sha256))" || ok=0; \
	done; \
	[ "$$ok" = 1 ] && diff -r "$$tmp/LICENSES" static/vendor/LICENSES || \
	{ echo "vendor-check: rebuild differs from static/vendor (run make vendor and review)"; exit 1; }

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

# fuzz runs the envelope, signed-bytes and MLS wire fuzzers for a bounded time (their seed
# corpora run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseEnvelope -fuzztime 60s .
	$(GO) test -run '^$$' -fuzz FuzzSplitMLSFrame -fuzztime 30s .
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./internal/sigmsg
	$(GO) test -run '^$$' -fuzz FuzzEncode -fuzztime 30s ./internal/sigmsg
	$(GO) test -run '^$$' -fuzz FuzzParseMessage -fuzztime 60s ./internal/mls
