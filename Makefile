# One entry point for everything a developer or CI runs.
#   make run    start the server with zero configuration (same as `go run .`)
#   make test   install what the suite needs (Chromium), then vet, format check, race tests
#   make bench  side-by-side benchmark against the original gorilla example

GO ?= go
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test deps vet fmt-check bench fuzz

run:
	$(GO) run .

# deps installs Debian's Chromium for the browser tests when it is missing.
deps:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		echo "installing chromium (browser tests need it)"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi
	@$(CHROMIUM) --version

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 15m ./...

bench:
	bash scripts/bench.sh

# fuzz runs the envelope and signed-bytes fuzzers for a bounded time (their seed
# corpora run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseEnvelope -fuzztime 60s .
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./internal/sigmsg
	$(GO) test -run '^$$' -fuzz FuzzEncode -fuzztime 30s ./internal/sigmsg
