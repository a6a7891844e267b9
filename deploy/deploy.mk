# deploy/deploy.mk — tools and offline checks for everything under deploy/.
#
# Included by the top-level Makefile (`include deploy/deploy.mk`); also usable
# alone: `make -f deploy/deploy.mk deploy-check`. Paths are relative to the
# repository root, which must be make's working directory.
#
#   make tools          install the pinned tools into ./bin (network: Go module
#                       proxy; idempotent, a pinned version already there is kept)
#   make deploy-check   tools + helm lint/template, kubeconform, promtool and the
#                       Go checks in deploy/check (offline once the tools exist)
#
# Each tool is installed as ./bin/<tool>-<version> with a ./bin/<tool> symlink,
# so a version bump here installs the new one and the checks always run the
# pinned binary.

DEPLOY_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
REPO_ROOT  := $(abspath $(DEPLOY_DIR)/..)
TOOLS_BIN  := $(REPO_ROOT)/bin
GO         ?= go

HELM_VERSION        := v3.22.0
KUBECONFORM_VERSION := v0.8.0
# promtool cannot be `go install`ed (replace directives in prometheus' go.mod),
# so it is built inside the downloaded module.
PROMETHEUS_VERSION  := v0.315.0
# The Kubernetes version the chart is rendered and validated for: the committed
# schemas in deploy/schemas come from this release's swagger.json.
KUBE_VERSION        := 1.36.3

HELM        := $(TOOLS_BIN)/helm-$(HELM_VERSION)
KUBECONFORM := $(TOOLS_BIN)/kubeconform-$(KUBECONFORM_VERSION)
PROMTOOL    := $(TOOLS_BIN)/promtool-$(PROMETHEUS_VERSION)

CHART        := $(DEPLOY_DIR)/helm/flowedge
SCHEMAS      := $(DEPLOY_DIR)/schemas
RULES        := $(CHART)/files/prometheus/flowedge.rules.yaml
RULES_TESTS  := $(DEPLOY_DIR)/prometheus/flowedge.rules.test.yaml
CHECK_MOD    := $(DEPLOY_DIR)/check
RENDER_DIR   := $(TOOLS_BIN)/.deploy-render
# The values files rendered and validated: chart defaults plus every ci/*.yaml.
CHART_CI_VALUES := $(sort $(wildcard $(CHART)/ci/*-values.yaml))

# helm must not read or write the user's helm config, cache or repositories.
HELM_ENV := HELM_CACHE_HOME=$(RENDER_DIR)/helm/cache HELM_CONFIG_HOME=$(RENDER_DIR)/helm/config \
	HELM_DATA_HOME=$(RENDER_DIR)/helm/data

.PHONY: tools deploy-check deploy-lint deploy-render deploy-kubeconform deploy-rules deploy-gotest deploy-schemas

tools: $(HELM) $(KUBECONFORM) $(PROMTOOL) $(TOOLS_BIN)/.deploy-check-mod
	@echo "tools: helm $(HELM_VERSION), kubeconform $(KUBECONFORM_VERSION), promtool $(PROMETHEUS_VERSION) in $(TOOLS_BIN)"

$(HELM):
	@mkdir -p $(TOOLS_BIN)/.gobin-helm
	GOBIN=$(TOOLS_BIN)/.gobin-helm $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(TOOLS_BIN)/.gobin-helm/helm $@ && rmdir $(TOOLS_BIN)/.gobin-helm
	ln -sf $(notdir $@) $(TOOLS_BIN)/helm

$(KUBECONFORM):
	@mkdir -p $(TOOLS_BIN)/.gobin-kubeconform
	GOBIN=$(TOOLS_BIN)/.gobin-kubeconform $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	mv $(TOOLS_BIN)/.gobin-kubeconform/kubeconform $@ && rmdir $(TOOLS_BIN)/.gobin-kubeconform
	ln -sf $(notdir $@) $(TOOLS_BIN)/kubeconform

# Built in the module cache copy of prometheus (read-only, go.sum complete), so
# its replace directives apply; -trimpath keeps the cache path out of the binary.
# -tags remove_all_sd leaves out the service-discovery plugins (cloud SDKs,
# client-go), which rule checks and rule tests never use: ~3 min instead of ~6+.
$(PROMTOOL):
	@mkdir -p $(TOOLS_BIN)
	dir=$$($(GO) mod download -json github.com/prometheus/prometheus@$(PROMETHEUS_VERSION) \
		| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir" || { echo "promtool: go mod download gave no Dir" >&2; exit 1; }; \
	cd "$$dir" && GOWORK=off GOFLAGS=-mod=readonly $(GO) build -trimpath -tags remove_all_sd -o $@ ./cmd/promtool
	ln -sf $(notdir $@) $(TOOLS_BIN)/promtool

# The deploy/check module's dependencies, downloaded once so the tests run offline.
$(TOOLS_BIN)/.deploy-check-mod: $(CHECK_MOD)/go.mod $(CHECK_MOD)/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd $(CHECK_MOD) && GOWORK=off $(GO) mod download
	@touch $@

deploy-check: tools deploy-lint deploy-render deploy-kubeconform deploy-rules deploy-gotest
	@echo "deploy-check: ok"

deploy-lint: $(HELM)
	$(HELM_ENV) $(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART)
	@set -e; for f in $(CHART_CI_VALUES); do \
		echo "$(HELM) lint --strict --kube-version $(KUBE_VERSION) -f $$f"; $(HELM_ENV) $(HELM) lint --strict --kube-version $(KUBE_VERSION) $(CHART) -f $$f; done

# One rendered file per values set: default.yaml, <ci values name>.yaml.
deploy-render: $(HELM)
	@rm -rf $(RENDER_DIR)/manifests && mkdir -p $(RENDER_DIR)/manifests
	$(HELM_ENV) $(HELM) template flowedge $(CHART) --namespace flowedge --kube-version $(KUBE_VERSION) > $(RENDER_DIR)/manifests/default.yaml
	@set -e; for f in $(CHART_CI_VALUES); do \
		out=$(RENDER_DIR)/manifests/$$(basename $$f .yaml).yaml; \
		echo "$(HELM) template -f $$f > $$out"; \
		$(HELM_ENV) $(HELM) template flowedge $(CHART) --namespace flowedge --kube-version $(KUBE_VERSION) -f $$f > $$out; done

# Strict schemas from the repo only (no network): the Kubernetes kinds were
# generated from k8s.io/kubernetes' swagger.json, the monitoring.coreos.com kinds
# from prometheus-operator's CRDs (deploy/check/cmd/genschemas).
deploy-kubeconform: $(KUBECONFORM) deploy-render
	$(KUBECONFORM) -strict -summary -output text \
		-schema-location '$(SCHEMAS)/{{ .ResourceKind }}{{ .KindSuffix }}.json' \
		$(RENDER_DIR)/manifests/*.yaml

deploy-rules: $(PROMTOOL)
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules $(RULES_TESTS)

# The Go checks: strict decode into k8s.io/api types, `edge validate` on the
# rendered edge.toml, the dashboard's and rules' metric names against a scrape of
# the running binaries, chart invariants, Dockerfile lint.
deploy-gotest: $(TOOLS_BIN)/.deploy-check-mod deploy-render
	cd $(CHECK_MOD) && GOWORK=off \
		FLOWEDGE_REPO_ROOT=$(REPO_ROOT) FLOWEDGE_RENDERED=$(RENDER_DIR)/manifests \
		$(GO) test -mod=readonly -count=1 ./...

# Regenerate the committed JSON schemas (network: downloads k8s.io/kubernetes and
# prometheus-operator through the module proxy). Not part of deploy-check.
deploy-schemas:
	cd $(CHECK_MOD) && GOWORK=off $(GO) run ./cmd/genschemas -out $(abspath $(SCHEMAS))
