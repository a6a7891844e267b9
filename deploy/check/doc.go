// Package check holds the offline checks of everything under deploy/ that
// need more than helm, kubeconform and promtool. It is its own Go module so
// that k8s.io/api, the prometheus-operator types and the PromQL parser stay
// out of the product's go.mod.
//
// The tests run from `make deploy-check` (deploy/deploy.mk), which renders the
// chart first and passes, through the environment:
//
//	FLOWEDGE_REPO_ROOT  the repository root
//	FLOWEDGE_RENDERED   a directory of `helm template` outputs, one file per values set
//
// Without them (a bare `go test ./...` here) the tests that need them skip.
//
// What is checked:
//   - manifests_test.go: every rendered object decodes strictly into its
//     k8s.io/api (or monitoring.coreos.com) type, and the chart's invariants
//     hold (security contexts, probes, selectors, the edge's URL template
//     against the headless Service, grace period against shutdown_timeout…);
//   - edgeconfig_test.go: the edge.toml of each render passes the real
//     `edge validate` (built from ./cmd/edge);
//   - metrics_test.go: every dashboard and alert query parses and names only
//     metrics that the running edge and api binaries export;
//   - rules_test.go: every alert has a promtool unit test, labels and a runbook;
//   - dockerfile_test.go: the Dockerfile's essentials.
//
// cmd/genschemas regenerates the JSON schemas kubeconform reads (deploy/schemas).
package check
