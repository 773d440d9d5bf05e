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

# Packages and manual pages; see packaging/README.md. The tools run with
# `go run module@version`, so go.mod does not change.
NFPM           ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
MD2MAN         ?= $(GO) run github.com/cpuguy83/go-md2man/v2@v2.0.6
DIST           ?= dist
PKG_ARCH       ?= $(shell $(GO) env GOARCH)
PKG_MAINTAINER ?= Postie developers <postie-mail@users.noreply.github.com>
# A package version must start with a digit and hold no "-" (rpm):
# v1.2.3 -> 1.2.3, v1.2.3-4-gabc123-dirty -> 1.2.3+4.gabc123.dirty,
# v1.3.0-rc1 -> 1.3.0~rc1 (sorts before 1.3.0); before the first tag,
# a commit hash or "dev" sorts before every release: 14d1e4a -> 0~14d1e4a.
PKG_VERSION    ?= $(shell echo '$(VERSION)' | sed -e '/^v\{0,1\}[0-9][0-9]*\./!s/^/0~/' -e 's/^v//' -e 's/-\(alpha\|beta\|rc\)/~\1/' -e 's/-\([0-9][0-9]*\)-g/+\1.g/' -e 's/-/./g')
DEB_ARCH       ?= $(or $(word 2,$(subst :, ,$(filter $(PKG_ARCH):%,386:i386 arm:armhf ppc64le:ppc64el mipsle:mipsel))),$(PKG_ARCH))
RPM_ARCH       ?= $(or $(word 2,$(subst :, ,$(filter $(PKG_ARCH):%,amd64:x86_64 arm64:aarch64 386:i386 arm:armv7hl))),$(PKG_ARCH))
NFPM_ENV        = POSTIE_VERSION='$(PKG_VERSION)' POSTIE_ARCH='$(PKG_ARCH)' POSTIE_BIN='$(BIN)' POSTIE_MAINTAINER='$(PKG_MAINTAINER)'

man:
	mkdir -p $(BIN)/man
	for md in packaging/man/*.md; do \
		page=$(BIN)/man/$$(basename $$md .md); \
		$(MD2MAN) -in $$md -out $$page && gzip -9nf $$page || exit 1; \
	done

deb: build man
	mkdir -p $(DIST)
	$(NFPM_ENV) $(NFPM) package -f packaging/nfpm.yaml -p deb -t $(DIST)/postie_$(PKG_VERSION)_$(DEB_ARCH).deb

rpm: build man
	mkdir -p $(DIST)
	$(NFPM_ENV) $(NFPM) package -f packaging/nfpm.yaml -p rpm -t $(DIST)/postie_$(PKG_VERSION)_$(RPM_ARCH).rpm
