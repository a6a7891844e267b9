// Command genschemas writes the strict JSON schemas that kubeconform uses in
// `make deploy-check`, so the chart is validated with no network at test time.
//
// Kubernetes kinds come from api/openapi-spec/swagger.json inside the
// k8s.io/kubernetes module; the monitoring.coreos.com kinds (ServiceMonitor,
// PrometheusRule) from the CRDs shipped in the prometheus-operator module. Both
// modules are fetched with `go mod download` (module proxy, checksum database).
//
// Each schema file is standalone: the kind's definition at the top, every
// definition it reaches under "definitions" (local $refs), descriptions
// dropped. "Strict" as in kubeconform's -strict schemas: every object that lists
// its properties gets additionalProperties: false, so a misspelled field fails.
// IntOrString and Quantity accept a string or a number, as the API server does.
//
// File names follow kubeconform's template {{ .ResourceKind }}{{ .KindSuffix }}:
// statefulset-apps-v1.json, service-v1.json, servicemonitor-monitoring-v1.json.
//
// Run it through `make deploy-schemas` when the chart starts using a new kind
// or the pinned Kubernetes version moves.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// The pinned sources. Bump together with the k8s.io/api version in go.mod.
const (
	kubernetesModule = "k8s.io/kubernetes@v1.36.3"
	operatorModule   = "github.com/prometheus-operator/prometheus-operator@v0.94.1"
)

type gvk struct{ Group, Version, Kind string }

// Kinds the chart renders. Add a kind here before using it in a template.
var kubeKinds = []gvk{
	{"", "v1", "ConfigMap"},
	{"", "v1", "Service"},
	{"", "v1", "ServiceAccount"},
	{"apps", "v1", "StatefulSet"},
	{"policy", "v1", "PodDisruptionBudget"},
	{"autoscaling", "v2", "HorizontalPodAutoscaler"},
	{"networking.k8s.io", "v1", "NetworkPolicy"},
}

// CRD files (in the operator module) and the version served.
var crdKinds = []struct {
	file string
	gvk
}{
	{"example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml", gvk{"monitoring.coreos.com", "v1", "ServiceMonitor"}},
	{"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml", gvk{"monitoring.coreos.com", "v1", "PrometheusRule"}},
}

func main() {
	out := flag.String("out", "", "directory to write the schemas into (required)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genschemas: -out is required")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "genschemas:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	kdir, err := moduleDir(kubernetesModule)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(kdir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		return err
	}
	var swagger struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &swagger); err != nil {
		return fmt.Errorf("swagger.json: %w", err)
	}
	for _, k := range kubeKinds {
		name, err := findDefinition(swagger.Definitions, k)
		if err != nil {
			return err
		}
		schema, err := standalone(swagger.Definitions, name)
		if err != nil {
			return fmt.Errorf("%s: %w", k.Kind, err)
		}
		pinKind(schema, k)
		if err := write(out, k, schema); err != nil {
			return err
		}
	}

	odir, err := moduleDir(operatorModule)
	if err != nil {
		return err
	}
	for _, c := range crdKinds {
		schema, err := crdSchema(filepath.Join(odir, c.file), c.Version)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Kind, err)
		}
		strictify(schema)
		pinKind(schema, c.gvk)
		schema["$schema"] = "http://json-schema.org/schema#"
		if err := write(out, c.gvk, schema); err != nil {
			return err
		}
	}
	return nil
}

// moduleDir downloads mod (module@version) into the module cache and returns
// its directory.
func moduleDir(mod string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(b, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, info.Error)
	}
	return info.Dir, nil
}

func findDefinition(defs map[string]map[string]any, k gvk) (string, error) {
	var found []string
	for name, d := range defs {
		list, _ := d["x-kubernetes-group-version-kind"].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			if m["group"] == k.Group && m["version"] == k.Version && m["kind"] == k.Kind {
				found = append(found, name)
			}
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%s/%s %s: %d definitions in swagger.json (%v)", k.Group, k.Version, k.Kind, len(found), found)
	}
	return found[0], nil
}

// standalone returns the schema for definition root, with every definition it
// references copied under "definitions".
func standalone(defs map[string]map[string]any, root string) (map[string]any, error) {
	needed := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if needed[name] {
			return nil
		}
		d, ok := defs[name]
		if !ok {
			return fmt.Errorf("missing definition %q", name)
		}
		needed[name] = true
		for _, ref := range refs(d) {
			if err := visit(ref); err != nil {
				return err
			}
		}
		return nil
	}
	if err := visit(root); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(needed))
	for n := range needed {
		if n != root {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	definitions := map[string]any{}
	for _, n := range names {
		definitions[n] = convert(n, deepCopy(defs[n]))
	}
	schema := convert(root, deepCopy(defs[root]))
	schema["$schema"] = "http://json-schema.org/schema#"
	if len(definitions) > 0 {
		schema["definitions"] = definitions
	}
	return schema, nil
}

const refPrefix = "#/definitions/"

func refs(v any) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		if r, ok := t["$ref"].(string); ok {
			out = append(out, strings.TrimPrefix(r, refPrefix))
		}
		for _, e := range t {
			out = append(out, refs(e)...)
		}
	case []any:
		for _, e := range t {
			out = append(out, refs(e)...)
		}
	}
	return out
}

// convert turns one swagger definition into strict JSON schema.
func convert(name string, d map[string]any) map[string]any {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	strictify(d)
	return d
}

// strictify drops descriptions and vendor extensions and closes every object
// that lists its properties.
func strictify(v any) {
	switch t := v.(type) {
	case map[string]any:
		preserve, _ := t["x-kubernetes-preserve-unknown-fields"].(bool)
		for k := range t {
			if k == "description" || strings.HasPrefix(k, "x-kubernetes-") {
				// "description" is also a legal property name (e.g. in a
				// PrometheusRule annotation map); only drop it when it is text.
				if _, isText := t[k].(string); k == "description" && !isText {
					continue
				}
				delete(t, k)
			}
		}
		if props, ok := t["properties"].(map[string]any); ok {
			if _, has := t["additionalProperties"]; !has && !preserve {
				t["additionalProperties"] = false
			}
			for _, p := range props {
				strictify(p)
			}
		}
		for k, e := range t {
			if k != "properties" {
				strictify(e)
			}
		}
	case []any:
		for _, e := range t {
			strictify(e)
		}
	}
}

// pinKind makes apiVersion and kind accept only this kind's values.
func pinKind(schema map[string]any, k gvk) {
	props, _ := schema["properties"].(map[string]any)
	if props == nil {
		return
	}
	apiVersion := k.Version
	if k.Group != "" {
		apiVersion = k.Group + "/" + k.Version
	}
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{k.Kind}}
}

func crdSchema(path, version string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return nil, err
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == version && v.Schema.OpenAPIV3Schema != nil {
			return v.Schema.OpenAPIV3Schema, nil
		}
	}
	return nil, fmt.Errorf("%s: no schema for version %s", path, version)
}

func write(dir string, k gvk, schema map[string]any) error {
	suffix := ""
	if k.Group != "" {
		suffix = "-" + strings.ToLower(strings.Split(k.Group, ".")[0])
	}
	name := strings.ToLower(k.Kind) + suffix + "-" + k.Version + ".json"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", " ")
	if err := enc.Encode(schema); err != nil {
		return err
	}
	fmt.Printf("%s\t%d bytes\n", name, buf.Len())
	return os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644)
}

func deepCopy(v map[string]any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}
