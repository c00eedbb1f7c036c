# Tenantry: the same targets serve people, tests and CI.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

K8S_VERSION := v1.37.2
CP_BIN := target/controlplane/bin/controlplane
CP_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: controlplane
controlplane: ## build the local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
	cd hack/controlplane && CGO_ENABLED=0 go build -trimpath -ldflags '$(CP_LDFLAGS)' -o ../../$(CP_BIN) .

.PHONY: up
up: controlplane ## start the control plane in the background; kubeconfig at target/controlplane/kubeconfig
	hack/up.sh

.PHONY: node
node: controlplane ## start a node on the local control plane (root): containerd, kubelet, scheduler, kube-proxy, kube-router (README, A real node)
	hack/node/build.sh
	NODE=1 hack/up.sh
	hack/node/up.sh

.PHONY: node-cycle
node-cycle: controlplane ## the teardown test (root, CI): nothing of the node is left, a second make node runs a pod, make down leaves nothing again
	hack/node/down-check.sh --cycle

.PHONY: image
image: ## Tenantry's OCI image (target/image/tenantry.tar, the chart's default), imported into make node's containerd
	hack/node/image.sh

.PHONY: down
down: ## stop the node and the control plane started by make node or make up
	hack/down.sh

.PHONY: demo
demo: controlplane ## run Tenantry on the local control plane with examples/ and print the tree
	hack/demo.sh

.PHONY: readme-check
readme-check: controlplane ## run the README's "Running it" commands as written on a control plane of their own (CI)
	hack/readme-check.sh

.PHONY: build
build: ## build the release binary (static on Linux; the image's): its path is the last line
	hack/build.sh

BINDIR ?= $(or $(CARGO_HOME),$(HOME)/.cargo)/bin

.PHONY: install
install: ## install the release binaries (make build's, the image's) as $(BINDIR)/tenantry and the kubectl plugin $(BINDIR)/kubectl-tenantry
	bin=$$(hack/build.sh) && mkdir -p $(BINDIR) && install -m 0755 "$$bin" $(BINDIR)/tenantry && \
	  install -m 0755 "$$(dirname "$$bin")/kubectl-tenantry" $(BINDIR)/kubectl-tenantry
	@echo "installed $(BINDIR)/tenantry and $(BINDIR)/kubectl-tenantry (kubectl tenantry --help)"

.PHONY: plugin
plugin: ## the kubectl plugin's archive and krew manifest (target/plugin/; see deploy/krew/tenantry.yaml)
	hack/plugin.sh

.PHONY: test
test: controlplane helm flux node image ## run every test: unit tests, integration tests on a local control plane, node tests on make node's (root)
	hack/require.sh
	status=0; TENANTRY_NODE_KUBECONFIG=$(CURDIR)/target/controlplane/kubeconfig \
	  cargo test --locked --all-targets || status=$$?; hack/down.sh; exit $$status

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := annotations token_request resources

.PHONY: fuzz
fuzz: ## fuzz the annotation, token-request and YAML parsers for FUZZ_SECONDS each (nightly + cargo-fuzz); crashes land in fuzz/artifacts
	cargo install --locked cargo-fuzz@0.13.2
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  (cd fuzz && cargo +nightly fuzz run -O $$t ../target/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=1024); \
	done

SCALES ?= 1
BENCH_ARGS ?=

.PHONY: bench
bench: controlplane ## measure Tenantry at scale on fresh local control planes (SCALES=1,5,25 BENCH_ARGS=...); see docs/benchmarks.md
	cargo bench --locked --bench scale -- --scales $(SCALES) $(BENCH_ARGS)

.PHONY: profile-heap
profile-heap: controlplane ## where the controller's heap goes: the benchmark at SCALES on dhat's allocator; hack/dhat-top.py sums each profile (peak, and settled: the first controller's t-end)
	rm -f dhat-heap-*.json
	CARGO_PROFILE_BENCH_DEBUG=line-tables-only TENANTRY_BENCH_PROFILE_SETTLED=1 cargo bench --locked --features dhat-heap --bench scale -- --scales $(SCALES) --no-baseline $(BENCH_ARGS)
	for f in dhat-heap-*.json; do echo "== $$f"; python3 hack/dhat-top.py $$f --top 30; done

.PHONY: test-kind
test-kind: ## run the integration suite against the existing cluster in KUBECONFIG (e.g. kind)
	TENANTRY_TEST_KUBECONFIG="$${KUBECONFIG:-$$HOME/.kube/config}" cargo test --locked --test integration

HELM := target/tools/helm

.PHONY: flux
flux: ## build hack/flux (Flux's apply engine, github.com/fluxcd/pkg/ssa) into target/tools for the GitOps tests
	cd hack/flux && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o ../../target/tools/flux .

.PHONY: helm
helm: ## build helm from the Go module proxy into target/tools (cached by Go)
	GOBIN=$(CURDIR)/target/tools CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' helm.sh/helm/v3/cmd/helm@v3.22.0

.PHONY: crds
crds: ## regenerate crds/, deploy/manifests.yaml and the chart's files/ from the Rust types
	cargo run --locked --quiet -- crd > crds/tenantry.dev.yaml
	cargo run --locked --quiet -- manifests > deploy/manifests.yaml
	cp crds/tenantry.dev.yaml charts/tenantry/files/crds.yaml
	cargo run --locked --quiet -- manifests --bindings=false --mutating=exclude > charts/tenantry/files/manifests.yaml
	cargo run --locked --quiet -- manifests --mutating=only > charts/tenantry/files/mutating.yaml

.PHONY: check
check: ## formatting, lints and generated files are up to date
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo run --locked --quiet -- crd | diff -u crds/tenantry.dev.yaml - || \
		{ echo "crds/ is stale: run 'make crds' and commit" >&2; exit 1; }
	cargo run --locked --quiet -- manifests | diff -u deploy/manifests.yaml - || \
		{ echo "deploy/manifests.yaml is stale: run 'make crds' and commit" >&2; exit 1; }
	diff -u crds/tenantry.dev.yaml charts/tenantry/files/crds.yaml || \
		{ echo "the chart's CRDs are stale: run 'make crds' and commit" >&2; exit 1; }
	cargo run --locked --quiet -- manifests --bindings=false --mutating=exclude | diff -u charts/tenantry/files/manifests.yaml - || \
		{ echo "the chart's manifests are stale: run 'make crds' and commit" >&2; exit 1; }
	cargo run --locked --quiet -- manifests --mutating=only | diff -u charts/tenantry/files/mutating.yaml - || \
		{ echo "the chart's mutating policy is stale: run 'make crds' and commit" >&2; exit 1; }
	$(MAKE) --no-print-directory helm
	$(HELM) lint --strict charts/tenantry
	$(HELM) lint --strict charts/tenantry --set tokenServer.enabled=true,tokenServer.tlsSecretName=t,metrics.serviceMonitor.enabled=true
	$(HELM) lint --strict charts/tenantry --set metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.organizationsInterval=2m
	test -z "$$(gofmt -l hack/controlplane hack/flux hack/node)" || { gofmt -l hack/controlplane hack/flux hack/node; exit 1; }
	cd hack/controlplane && CGO_ENABLED=0 go vet -trimpath ./...
	cd hack/flux && CGO_ENABLED=0 go vet -trimpath ./...
