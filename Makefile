# Postie. `make demo` builds and shows the main job end to end; `make test`
# runs the whole test suite (installing its Debian packages when root).

GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build demo test test-long fuzz-long bench deb rpm man clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sendmail ./cmd/sendmail
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mailq ./cmd/mailq
	$(GO) build -o $(BIN)/postie-sink ./tools/postie-sink

demo: build
	bash scripts/demo.sh

test:
	bash scripts/test.sh

test-long:
	POSTIE_LONG=1 bash scripts/test.sh

fuzz-long:
	FUZZTIME=10m bash scripts/fuzz.sh

clean:
	rm -rf $(BIN) dist
