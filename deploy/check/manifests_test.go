package check

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// newTyped returns an empty object of the Go type for apiVersion/kind, or
// nil for a kind the chart is not expected to render.
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

// objects is one render decoded into typed objects.
type objects struct {
	render          string
	configMaps      []*corev1.ConfigMap
	services        []*corev1.Service
	serviceAccounts []*corev1.ServiceAccount
	statefulSets    []*appsv1.StatefulSet
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	netpols         []*networkingv1.NetworkPolicy
	serviceMonitors []*monitoringv1.ServiceMonitor
	promRules       []*monitoringv1.PrometheusRule
}

// decodeStrict decodes every object of r into its Go type, refusing unknown
// or duplicated fields: a misspelled field that `helm lint` lets through
// fails here (and in kubeconform).
func decodeStrict(t *testing.T, r render) *objects {
	t.Helper()
	o := &objects{render: r.name}
	for _, d := range r.docs {
		typed := newTyped(d.apiVersion(), d.kind)
		if typed == nil {
			t.Errorf("%s: %s %q: no Go type for %s/%s; add it to newTyped and a schema to cmd/genschemas",
				r.name, d.kind, d.name, d.apiVersion(), d.kind)
			continue
		}
		if err := yaml.UnmarshalStrict(d.raw, typed); err != nil {
			t.Errorf("%s: %s %q: strict decode: %v", r.name, d.kind, d.name, err)
			continue
		}
		switch v := typed.(type) {
		case *corev1.ConfigMap:
			o.configMaps = append(o.configMaps, v)
		case *corev1.Service:
			o.services = append(o.services, v)
		case *corev1.ServiceAccount:
			o.serviceAccounts = append(o.serviceAccounts, v)
		case *appsv1.StatefulSet:
			o.statefulSets = append(o.statefulSets, v)
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpas = append(o.hpas, v)
		case *networkingv1.NetworkPolicy:
			o.netpols = append(o.netpols, v)
		case *monitoringv1.ServiceMonitor:
			o.serviceMonitors = append(o.serviceMonitors, v)
		case *monitoringv1.PrometheusRule:
			o.promRules = append(o.promRules, v)
		}
	}
	return o
}

const (
	componentLabel = "app.kubernetes.io/component"
	edgeComponent  = "edge"
)

func (o *objects) edge() *appsv1.StatefulSet {
	for _, s := range o.statefulSets {
		if s.Spec.Template.Labels[componentLabel] == edgeComponent {
			return s
		}
	}
	return nil
}

// apis returns the api-flow StatefulSets (every StatefulSet but the edge's).
func (o *objects) apis() []*appsv1.StatefulSet {
	var out []*appsv1.StatefulSet
	for _, s := range o.statefulSets {
		if s.Spec.Template.Labels[componentLabel] != edgeComponent {
			out = append(out, s)
		}
	}
	return out
}

func (o *objects) service(name string) *corev1.Service {
	for _, s := range o.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (o *objects) configMap(name string) *corev1.ConfigMap {
	for _, c := range o.configMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// podsSelected returns the StatefulSets whose pods sel selects.
func (o *objects) podsSelected(sel labels.Selector) []*appsv1.StatefulSet {
	var out []*appsv1.StatefulSet
	for _, s := range o.statefulSets {
		if sel.Matches(labels.Set(s.Spec.Template.Labels)) {
			out = append(out, s)
		}
	}
	return out
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, r := range renders(t) {
		t.Run(r.name, func(t *testing.T) {
			o := decodeStrict(t, r)
			if len(o.statefulSets) == 0 {
				t.Fatalf("%s renders no StatefulSet", r.name)
			}
		})
	}
}

// TestPodsAreHardened: non-root, read-only root filesystem, no privilege
// escalation, no capabilities, no API token, requests and limits, probes.
func TestPodsAreHardened(t *testing.T) {
	for _, r := range renders(t) {
		t.Run(r.name, func(t *testing.T) {
			o := decodeStrict(t, r)
			for _, s := range o.statefulSets {
				ps := s.Spec.Template.Spec
				where := "StatefulSet " + s.Name
				if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
					t.Errorf("%s: pod securityContext.runAsNonRoot is not true", where)
				} else if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod seccompProfile is not RuntimeDefault", where)
				}
				if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
					t.Errorf("%s: automountServiceAccountToken is not false", where)
				}
				if len(ps.InitContainers) > 0 {
					t.Errorf("%s: unexpected init containers", where)
				}
				for _, c := range ps.Containers {
					where := fmt.Sprintf("StatefulSet %s container %s", s.Name, c.Name)
					sc := c.SecurityContext
					switch {
					case sc == nil:
						t.Errorf("%s: no securityContext", where)
						continue
					case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
						t.Errorf("%s: allowPrivilegeEscalation is not false", where)
					case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
						t.Errorf("%s: readOnlyRootFilesystem is not true", where)
					case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
						t.Errorf("%s: capabilities do not drop ALL (or add some)", where)
					case sc.Privileged != nil && *sc.Privileged:
						t.Errorf("%s: privileged", where)
					}
					for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						if _, ok := c.Resources.Requests[res]; !ok {
							t.Errorf("%s: no %s request", where, res)
						}
						if _, ok := c.Resources.Limits[res]; !ok {
							t.Errorf("%s: no %s limit", where, res)
						}
					}
					for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
						if p == nil || p.HTTPGet == nil {
							t.Errorf("%s: no HTTP %s probe", where, name)
							continue
						}
						if !hasPort(c, p.HTTPGet.Port.String()) {
							t.Errorf("%s: %s probe port %s is not a container port", where, name, p.HTTPGet.Port.String())
						}
					}
					if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/health/readiness" {
						t.Errorf("%s: readiness probe path %q, want /health/readiness", where, c.ReadinessProbe.HTTPGet.Path)
					}
					if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/health/liveness" {
						t.Errorf("%s: liveness probe path %q, want /health/liveness", where, c.LivenessProbe.HTTPGet.Path)
					}
					if len(c.Command) == 0 || (c.Command[0] != "/usr/local/bin/edge" && c.Command[0] != "/usr/local/bin/api") {
						t.Errorf("%s: command %v does not run a binary of the image (/usr/local/bin/edge or api)", where, c.Command)
					}
					if !mounts(c, "/data") || !mounts(c, "/tmp") {
						t.Errorf("%s: /data (PVC) and /tmp (emptyDir) must be mounted with a read-only root filesystem", where)
					}
				}
				switch shared := usesDatabase(ps); {
				case shared && hasClaim(s, "data"):
					t.Errorf("%s: a PVC although the state is in the database (DATABASE_URL)", where)
				case shared && !hasEmptyDir(ps, "data"):
					t.Errorf("%s: /data must be an emptyDir when the state is in the database", where)
				case !shared && !hasClaim(s, "data"):
					t.Errorf("%s: no volumeClaimTemplate \"data\" (a PVC per pod)", where)
				}
			}
		})
	}
}

func hasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return true
		}
	}
	return false
}

func portNumber(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func mounts(c corev1.Container, path string) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path })
}

// usesDatabase reports whether a pod's containers get DATABASE_URL (from a
// Secret): its state is then in the shared database.
func usesDatabase(ps corev1.PodSpec) bool {
	return slices.ContainsFunc(ps.Containers, func(c corev1.Container) bool {
		return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "DATABASE_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
		})
	})
}

func hasEmptyDir(ps corev1.PodSpec, name string) bool {
	return slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == name && v.EmptyDir != nil })
}

func hasClaim(s *appsv1.StatefulSet, name string) bool {
	return slices.ContainsFunc(s.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == name })
}

// TestSelectorsMatch: every Service, PDB, NetworkPolicy and ServiceMonitor
// selects something the chart renders, and named ports resolve.
func TestSelectorsMatch(t *testing.T) {
	for _, r := range renders(t) {
		t.Run(r.name, func(t *testing.T) {
			o := decodeStrict(t, r)
			for _, s := range o.statefulSets {
				sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector)
				if err != nil || !sel.Matches(labels.Set(s.Spec.Template.Labels)) {
					t.Errorf("StatefulSet %s: selector does not match its pod template (%v)", s.Name, err)
				}
				gov := o.service(s.Spec.ServiceName)
				if gov == nil || gov.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("StatefulSet %s: serviceName %q is not a headless Service of the chart", s.Name, s.Spec.ServiceName)
				}
			}
			for _, svc := range o.services {
				sts := o.podsSelected(labels.SelectorFromSet(svc.Spec.Selector))
				if len(svc.Spec.Selector) == 0 || len(sts) != 1 {
					t.Errorf("Service %s: selects the pods of %d StatefulSets, want 1", svc.Name, len(sts))
					continue
				}
				for _, p := range svc.Spec.Ports {
					if !hasPort(sts[0].Spec.Template.Spec.Containers[0], p.TargetPort.String()) {
						t.Errorf("Service %s: targetPort %s is not a port of %s", svc.Name, p.TargetPort.String(), sts[0].Name)
					}
				}
			}
			for _, pdb := range o.pdbs {
				sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				if err != nil || len(o.podsSelected(sel)) != 1 {
					t.Errorf("PodDisruptionBudget %s: does not select exactly one StatefulSet's pods", pdb.Name)
				}
				if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
					t.Errorf("PodDisruptionBudget %s: maxUnavailable is not 1", pdb.Name)
				}
			}
			for _, sm := range o.serviceMonitors {
				sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
				if err != nil {
					t.Fatal(err)
				}
				var found *corev1.Service
				for _, svc := range o.services {
					if sel.Matches(labels.Set(svc.Labels)) {
						if found != nil {
							t.Errorf("ServiceMonitor %s: selects Services %s and %s", sm.Name, found.Name, svc.Name)
						}
						found = svc
					}
				}
				if found == nil {
					t.Errorf("ServiceMonitor %s: selects no Service", sm.Name)
					continue
				}
				for _, ep := range sm.Spec.Endpoints {
					if !slices.ContainsFunc(found.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
						t.Errorf("ServiceMonitor %s: port %q is not a port of Service %s", sm.Name, ep.Port, found.Name)
					}
					if ep.Path != "/metrics" {
						t.Errorf("ServiceMonitor %s: path %q, want /metrics", sm.Name, ep.Path)
					}
				}
			}
		})
	}
}

// edgeConfig is the part of edge.toml the chart's invariants depend on.
type edgeConfig struct {
	Server struct {
		Address         string `toml:"address"`
		ShutdownTimeout string `toml:"shutdown_timeout"`
	} `toml:"server"`
	Admin struct {
		Address string `toml:"address"`
		Token   string `toml:"token"`
	} `toml:"admin"`
	Partition struct {
		Count int `toml:"count"`
	} `toml:"partition"`
	Backends struct {
		Template string   `toml:"template"`
		URLs     []string `toml:"urls"`
	} `toml:"backends"`
	Buffer struct {
		Path string `toml:"path"`
	} `toml:"buffer"`
}

// edgeTOML returns the edge.toml of the ConfigMap mounted by the edge
// StatefulSet at /etc/flowedge.
func (o *objects) edgeTOML(t *testing.T) string {
	t.Helper()
	e := o.edge()
	if e == nil {
		return ""
	}
	var cmName string
	for _, v := range e.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && mounted(e, v.Name, "/etc/flowedge") {
			cmName = v.ConfigMap.Name
		}
	}
	cm := o.configMap(cmName)
	if cm == nil {
		t.Fatalf("edge StatefulSet: no ConfigMap %q mounted at /etc/flowedge", cmName)
	}
	s, ok := cm.Data["edge.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no edge.toml", cm.Name)
	}
	return s
}

func mounted(s *appsv1.StatefulSet, volume, path string) bool {
	for _, c := range s.Spec.Template.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name == volume && m.MountPath == path {
				return true
			}
		}
	}
	return false
}

// TestEdgeMatchesBackends: the edge's partition count and URL template name
// the api-flow pods through their headless Service; listeners and the buffer
// path fit the container; the grace period outlasts the drain.
func TestEdgeMatchesBackends(t *testing.T) {
	for _, r := range renders(t) {
		t.Run(r.name, func(t *testing.T) {
			o := decodeStrict(t, r)
			e := o.edge()
			if e == nil {
				t.Skipf("%s renders no edge", r.name)
			}
			raw := o.edgeTOML(t)
			var cfg edgeConfig
			if _, err := toml.Decode(raw, &cfg); err != nil {
				t.Fatalf("edge.toml: %v\n%s", err, raw)
			}
			c := e.Spec.Template.Spec.Containers[0]
			if got, want := port(t, cfg.Server.Address), portNumber(c, "http"); got != want {
				t.Errorf("[server] address port %d, container port http %d", got, want)
			}
			if got, want := port(t, cfg.Admin.Address), portNumber(c, "admin"); got != want || !strings.HasPrefix(cfg.Admin.Address, "0.0.0.0:") {
				t.Errorf("[admin] address %q: want 0.0.0.0:%d so probes and scrapes reach it", cfg.Admin.Address, want)
			}
			if !strings.HasPrefix(cfg.Buffer.Path, "/data/") {
				t.Errorf("[buffer] path %q is not on the PVC mounted at /data", cfg.Buffer.Path)
			}
			if cfg.Admin.Token != "" && !slices.ContainsFunc(c.Env, func(v corev1.EnvVar) bool {
				return v.Name == "EDGE_ADMIN_TOKEN" && v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil
			}) {
				t.Errorf("[admin] token %q but no EDGE_ADMIN_TOKEN from a Secret", cfg.Admin.Token)
			}

			// Backends: the template names the pods of an api StatefulSet of
			// this render, through its governing headless Service.
			apis := o.apis()
			if len(apis) != 1 {
				t.Fatalf("%d api StatefulSets, want 1", len(apis))
			}
			api := apis[0]
			svc := o.service(api.Spec.ServiceName)
			if svc == nil {
				t.Fatalf("api StatefulSet %s: no Service %s", api.Name, api.Spec.ServiceName)
			}
			want := fmt.Sprintf("http://%s-{N}.%s:%d", api.Name, svc.Name, svc.Spec.Ports[0].Port)
			if cfg.Backends.Template != want || len(cfg.Backends.URLs) > 0 {
				t.Errorf("[backends] template %q urls %v, want template %q (the headless Service)", cfg.Backends.Template, cfg.Backends.URLs, want)
			}
			if u, err := url.Parse(strings.ReplaceAll(cfg.Backends.Template, "{N}", "0")); err != nil || u.Port() != strconv.Itoa(int(portNumber(api.Spec.Template.Spec.Containers[0], "http"))) {
				t.Errorf("[backends] template %q does not reach the api container port", cfg.Backends.Template)
			}
			if api.Spec.Replicas == nil || int(*api.Spec.Replicas) != cfg.Partition.Count {
				t.Errorf("[partition] count %d, api StatefulSet replicas %v: one backend per partition", cfg.Partition.Count, api.Spec.Replicas)
			}
			args := strings.Join(api.Spec.Template.Spec.Containers[0].Args, " ")
			if !strings.Contains(args, fmt.Sprintf("-partitions %d", cfg.Partition.Count)) {
				t.Errorf("api args %q do not pass -partitions %d", args, cfg.Partition.Count)
			}
			if !slices.ContainsFunc(api.Spec.Template.Spec.Containers[0].Env, func(v corev1.EnvVar) bool {
				return v.Name == "FLOW_PARTITION" && v.ValueFrom != nil && v.ValueFrom.FieldRef != nil &&
					v.ValueFrom.FieldRef.FieldPath == "metadata.labels['apps.kubernetes.io/pod-index']"
			}) {
				t.Errorf("api: FLOW_PARTITION does not come from the pod index")
			}

			// Drain: terminationGracePeriodSeconds > preStop sleep + shutdown_timeout.
			shutdown, err := time.ParseDuration(cfg.Server.ShutdownTimeout)
			if err != nil {
				t.Fatalf("[server] shutdown_timeout %q: %v", cfg.Server.ShutdownTimeout, err)
			}
			var preStop time.Duration
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
				preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
			grace := time.Duration(*e.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
			if grace <= shutdown+preStop {
				t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + shutdown_timeout %v", grace, preStop, shutdown)
			}

			// A config change rolls the pods.
			sum := e.Spec.Template.Annotations["checksum/config"]
			if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
				t.Errorf("edge pod template: checksum/config annotation %q is not a sha256", sum)
			}
			if e.Spec.PersistentVolumeClaimRetentionPolicy == nil ||
				e.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
				t.Errorf("edge StatefulSet: PVCs must be retained on scale-down (they hold queued requests)")
			}
		})
	}
}

func port(t *testing.T, hostport string) int32 {
	t.Helper()
	i := strings.LastIndex(hostport, ":")
	n, err := strconv.Atoi(hostport[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("address %q has no port", hostport)
	}
	return int32(n)
}

// TestConfigChecksumFollowsConfig: two renders with different edge.toml have
// different checksum/config annotations.
func TestConfigChecksumFollowsConfig(t *testing.T) {
	sums := map[string]string{} // checksum → edge.toml
	for _, r := range renders(t) {
		o := decodeStrict(t, r)
		e := o.edge()
		if e == nil {
			continue
		}
		cfg := o.edgeTOML(t)
		sum := e.Spec.Template.Annotations["checksum/config"]
		if prev, ok := sums[sum]; ok && prev != cfg {
			t.Errorf("%s: same checksum/config as another render with a different edge.toml", r.name)
		}
		sums[sum] = cfg
	}
}

// namedRender returns the render of the chart with the given values name.
func namedRender(t *testing.T, name string) render {
	t.Helper()
	for _, x := range renders(t) {
		if x.name == name {
			return x
		}
	}
	t.Fatalf("no %s render", name)
	return render{}
}

// TestDefaultRender pins the default install: no HPA (a scale-down would
// strand a removed pod's queue on its PVC), a fixed count of 3 edge pods.
func TestDefaultRender(t *testing.T) {
	o := decodeStrict(t, namedRender(t, "default"))
	if len(o.hpas) != 0 {
		t.Fatalf("%d HPAs in the default render, want none (autoscaling is off by default)", len(o.hpas))
	}
	e := o.edge()
	if e.Spec.Replicas == nil || *e.Spec.Replicas != 3 {
		t.Errorf("edge StatefulSet replicas %v, want 3", e.Spec.Replicas)
	}
	for _, name := range []string{"flowedge", "flowedge-edge-admin", "api-flow"} {
		if o.service(name) == nil {
			t.Errorf("no Service %s", name)
		}
	}
	if s := o.service("flowedge"); s != nil && (s.Spec.Type != corev1.ServiceTypeClusterIP || s.Spec.Ports[0].Port != 8080) {
		t.Errorf("Service flowedge: %s port %d, want ClusterIP 8080", s.Spec.Type, s.Spec.Ports[0].Port)
	}
	if s := o.service("flowedge-edge-admin"); s != nil && s.Spec.Ports[0].Port != 8686 {
		t.Errorf("Service flowedge-edge-admin: port %d, want 8686", s.Spec.Ports[0].Port)
	}
	if len(o.serviceMonitors)+len(o.promRules) > 0 {
		t.Errorf("the default render must not need the prometheus-operator CRDs")
	}
	if len(o.pdbs) != 2 {
		t.Errorf("%d PodDisruptionBudgets, want 2 (edge, api)", len(o.pdbs))
	}
}

// TestNetworkPolicyAdmitsOnlyTheEdge: the api pods accept connections from
// edge pods (and the configured extra peers) only.
func TestNetworkPolicyAdmitsOnlyTheEdge(t *testing.T) {
	for _, r := range renders(t) {
		t.Run(r.name, func(t *testing.T) {
			o := decodeStrict(t, r)
			for _, api := range o.apis() {
				var np *networkingv1.NetworkPolicy
				for _, p := range o.netpols {
					sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
					if err == nil && sel.Matches(labels.Set(api.Spec.Template.Labels)) {
						np = p
					}
				}
				if np == nil {
					t.Fatalf("no NetworkPolicy selects the pods of %s", api.Name)
				}
				if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || len(np.Spec.Ingress) < 1 || len(np.Spec.Ingress) > 2 {
					t.Fatalf("NetworkPolicy %s: want an Ingress rule for the api port and at most one for the metrics port", np.Name)
				}
				// A second rule admits its peers (Prometheus) to the metrics
				// port only, never to the api port.
				for _, rule := range np.Spec.Ingress[1:] {
					if len(rule.From) == 0 {
						t.Fatalf("NetworkPolicy %s: an empty from admits everyone", np.Name)
					}
					if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.String() != "metrics" {
						t.Errorf("NetworkPolicy %s: a second rule must admit only to the metrics port", np.Name)
					}
				}
				rule := np.Spec.Ingress[0]
				if len(rule.From) == 0 {
					t.Fatalf("NetworkPolicy %s: an empty from admits everyone", np.Name)
				}
				first := rule.From[0]
				if first.PodSelector == nil || first.NamespaceSelector != nil || first.IPBlock != nil {
					t.Fatalf("NetworkPolicy %s: first peer is not a pod selector in the namespace", np.Name)
				}
				sel, _ := metav1.LabelSelectorAsSelector(first.PodSelector)
				edgePods := map[string]string{"app.kubernetes.io/name": "flowedge", componentLabel: edgeComponent, "app.kubernetes.io/instance": "any-release"}
				if !sel.Matches(labels.Set(edgePods)) {
					t.Errorf("NetworkPolicy %s: edge pods (of any release) are not admitted", np.Name)
				}
				if sel.Matches(labels.Set(api.Spec.Template.Labels)) {
					t.Errorf("NetworkPolicy %s: admits api pods themselves", np.Name)
				}
				if r.name == "default" && len(rule.From) != 1 {
					t.Errorf("NetworkPolicy %s: default admits %d peers, want only the edge", np.Name, len(rule.From))
				}
				if len(rule.Ports) != 1 || rule.Ports[0].Port == nil || rule.Ports[0].Port.String() != "http" {
					t.Errorf("NetworkPolicy %s: want only the api port", np.Name)
				}
			}
		})
	}
}

// TestShippedFilesMatch: the PrometheusRule carries the rule file and the
// dashboard ConfigMap the dashboard file, unchanged.
func TestShippedFilesMatch(t *testing.T) {
	rulesFile, err := os.ReadFile(deployPath(t, "helm", "flowedge", "files", "prometheus", "flowedge.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(rulesFile, &want); err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(deployPath(t, "helm", "flowedge", "files", "grafana", "flowedge.json"))
	if err != nil {
		t.Fatal(err)
	}
	seenRule, seenDash := false, false
	for _, r := range renders(t) {
		o := decodeStrict(t, r)
		for _, pr := range o.promRules {
			seenRule = true
			b, _ := json.Marshal(pr.Spec.Groups)
			var got []any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(got), normalize(want.Groups)) {
				t.Errorf("%s: PrometheusRule %s differs from files/prometheus/flowedge.rules.yaml", r.name, pr.Name)
			}
		}
		for _, cm := range o.configMaps {
			if s, ok := cm.Data["flowedge.json"]; ok {
				seenDash = true
				if strings.TrimSpace(s) != strings.TrimSpace(string(dash)) {
					t.Errorf("%s: ConfigMap %s differs from files/grafana/flowedge.json", r.name, cm.Name)
				}
			}
		}
	}
	if !seenRule || !seenDash {
		t.Errorf("no render enables the PrometheusRule (%v) and the dashboard (%v): add them to a ci/*-values.yaml", seenRule, seenDash)
	}
}

// normalize turns a decoded JSON value into comparable form (numbers as
// strings, durations as written).
func normalize(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// TestAutoscalingRender: with edge.autoscaling.enabled the HPA scales the
// edge StatefulSet 3..10 on CPU 70% and the StatefulSet leaves replicas to it.
func TestAutoscalingRender(t *testing.T) {
	o := decodeStrict(t, namedRender(t, "autoscaling-values"))
	if len(o.hpas) != 1 {
		t.Fatalf("%d HPAs, want 1", len(o.hpas))
	}
	h := o.hpas[0]
	e := o.edge()
	if h.Spec.ScaleTargetRef.Kind != "StatefulSet" || h.Spec.ScaleTargetRef.Name != e.Name {
		t.Errorf("HPA targets %s %s, want StatefulSet %s", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, e.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 10 {
		t.Errorf("HPA min %v max %d, want 3..10", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Resource == nil || h.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU ||
		h.Spec.Metrics[0].Resource.Target.AverageUtilization == nil || *h.Spec.Metrics[0].Resource.Target.AverageUtilization != 70 {
		t.Errorf("HPA metrics %+v, want CPU 70%%", h.Spec.Metrics)
	}
	if e.Spec.Replicas != nil {
		t.Errorf("edge StatefulSet sets replicas while the HPA owns them")
	}
}
