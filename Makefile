# flowedge — make run starts a local stack; make test runs every test; make bench measures.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build run run-prod backend-stop backend-start test test-deps test-servers test-go vet fmt-check bench reliability clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/edge ./cmd/edge
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/api ./cmd/api

## run: local stack — edge public :8080, admin :8686, api-flow-0..2 on :9001..9003, data under ./data
run: build
	./scripts/run-local.sh

## backend-stop N / backend-start N: an outage of api-flow-N in a running `make run`
## (also N=1); the edge holds that partition's writes meanwhile
ifneq ($(filter backend-stop backend-start,$(firstword $(MAKECMDGOALS))),)
BACKEND_N := $(word 2,$(MAKECMDGOALS))
ifneq ($(BACKEND_N),)
$(eval $(BACKEND_N):;@:)
endif
endif
backend-stop backend-start:
	@./scripts/run-local.sh $@ $(or $(BACKEND_N),$(N))

## run-prod: the same stack on PostgreSQL, Redis and an S3 server started locally (files under ./data/prod)
run-prod: build test-deps test-servers
	./scripts/run-prod.sh

## test: formatting, vet, every Go test (unit, integration, crash, the e2e reliability suite), deployment checks
test: test-deps test-servers fmt-check vet test-go deploy-check

## test-deps: the Debian packages the tests run for real (PostgreSQL, Redis, fuse3, Chromium)
test-deps:
	./scripts/test-deps.sh

# The S3-compatible server the object-storage tests run for real: the Versity
# S3 Gateway (posix backend), built from its Go module (~4 min on 2 busy
# cores, once). Installed as ./bin/versitygw-<version> with a ./bin/versitygw
# symlink (internal/testutil/s3test finds it there), like deploy/deploy.mk's tools.
VERSITYGW_VERSION := v1.8.0
VERSITYGW         := $(BIN)/versitygw-$(VERSITYGW_VERSION)

# Azurite (Microsoft's Azure Storage emulator, npm), for the optional Azure
# driver test (internal/testutil/azuritetest): ~35 s and ~360 MB once, only
# where npm is installed; without it that test skips.
AZURITE_VERSION := 3.37.0
AZURITE         := $(BIN)/.azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob

## test-servers: the servers the tests run that no Debian package has (S3: versitygw; Azurite if npm is there)
test-servers: $(VERSITYGW)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(AZURITE); \
	else echo "test-servers: no npm: the optional Azure (Azurite) test will skip"; fi

$(AZURITE):
	npm install --no-audit --no-fund --silent --prefix $(BIN)/.azurite-$(AZURITE_VERSION) azurite@$(AZURITE_VERSION)
	ln -sfn .azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob $(BIN)/azurite-blob

$(VERSITYGW):
	@mkdir -p $(BIN)/.gobin-versitygw
	GOBIN=$(BIN)/.gobin-versitygw CGO_ENABLED=0 $(GO) install -trimpath github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)
	mv $(BIN)/.gobin-versitygw/versitygw $@ && rmdir $(BIN)/.gobin-versitygw
	ln -sf $(notdir $@) $(BIN)/versitygw

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test-go:
	$(GO) test -count=1 -timeout 20m ./...

## bench: buffer and end-to-end benchmarks against same-run baselines (see docs/benchmarks.md)
bench: build
	./scripts/bench-deps.sh
	$(GO) test -run '^$$' -bench . -benchtime 2s ./internal/buffer/ ./internal/partition/
	$(GO) test -run '^$$' -bench Deliver -benchtime 5000x ./internal/delivery/
	$(GO) test -run '^$$' -bench 'Append' -benchtime 2s ./internal/api/ ./internal/api/store/badgerstore/ ./internal/api/store/pgstore/
	$(GO) test -run '^$$' -bench 'EventBatch' -benchtime 20000x ./internal/api/
	FLOW_API_BENCH=1 $(GO) test -run TestPacedLatency -v ./internal/api/
	$(GO) run ./bench/e2e -duration 10s -connections 64 -edge-bin $(BIN)/edge -api-bin $(BIN)/api
	FLOWEDGE_SOAK=30m $(GO) test -run TestSustainedLoadDiskFlat -v -timeout 40m ./internal/buffer/

## reliability: the e2e suite (real binaries, real faults); writes its figures into docs/reliability.md
reliability:
	GO=$(GO) ./scripts/reliability.sh

clean:
	rm -rf $(BIN) ./data

-include deploy/deploy.mk
ifeq ($(wildcard deploy/deploy.mk),)
deploy-check:
	@echo "deploy checks: deploy/deploy.mk not present"
endif
