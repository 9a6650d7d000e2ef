package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// The deployment files, from this package's directory.
const (
	composeFile = "../../docker-compose.cluster.yml"
	k8sDir      = "../../deploy/kubernetes"
	dockerfile  = "../../Dockerfile"
)

// k8sMeta is what every Kubernetes object has.
type k8sMeta struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type k8sService struct {
	Spec struct {
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type k8sStatefulSet struct {
	Spec struct {
		ServiceName         string      `yaml:"serviceName"`
		Replicas            int         `yaml:"replicas"`
		PodManagementPolicy string      `yaml:"podManagementPolicy"`
		Selector            k8sSelector `yaml:"selector"`
		Template            struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
				Containers                    []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []k8sMeta `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom struct {
		SecretKeyRef struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sContainer struct {
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []k8sEnv `yaml:"env"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Limits struct {
			Memory string `yaml:"memory"`
		} `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sPDB struct {
	Spec struct {
		MaxUnavailable int         `yaml:"maxUnavailable"`
		Selector       k8sSelector `yaml:"selector"`
	} `yaml:"spec"`
}

// k8sObjects holds the documents of the kustomization's resources by
// "Kind/name", undecoded.
type k8sObjects map[string]*yaml.Node

func loadK8s(t *testing.T) k8sObjects {
	t.Helper()
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &kust)
	if len(kust.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	objs := k8sObjects{}
	for _, res := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, res))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", res, err)
			}
			var m k8sMeta
			if err := doc.Decode(&m); err != nil || m.Kind == "" || m.Metadata.Name == "" {
				t.Fatalf("%s: a document without kind or name (%v)", res, err)
			}
			objs[m.Kind+"/"+m.Metadata.Name] = &doc
		}
	}
	return objs
}

// get decodes the object kind/name into out.
func (o k8sObjects) get(t *testing.T, key string, out any) {
	t.Helper()
	doc, ok := o[key]
	if !ok {
		t.Fatalf("no %s among the manifests", key)
	}
	if err := doc.Decode(out); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// nodeFlags returns the node's flags by name.
func nodeFlags() map[string]*flag.Flag {
	var cfg server.Config
	var v flagValues
	out := map[string]*flag.Flag{}
	newFlagSet(&cfg, &v, io.Discard).VisitAll(func(f *flag.Flag) { out[f.Name] = f })
	return out
}

// goRuntimeVars are the Go runtime's variables a manifest may set.
var goRuntimeVars = map[string]bool{"GOMEMLIMIT": true, "GOGC": true}

// checkEnv wants every variable to be PRESENCE_<FLAG> of a flag of the
// node, and its value (when given here) accepted by that flag, or one of
// the Go runtime's.
func checkEnv(t *testing.T, where string, vars map[string]string) {
	t.Helper()
	flags := nodeFlags()
	for name, value := range vars {
		if goRuntimeVars[name] {
			continue
		}
		flagName, ok := strings.CutPrefix(name, "PRESENCE_")
		if !ok {
			t.Errorf("%s: %s is not a PRESENCE_ variable", where, name)
			continue
		}
		flagName = strings.ToLower(strings.ReplaceAll(flagName, "_", "-"))
		f, ok := flags[flagName]
		if !ok {
			t.Errorf("%s: %s names no flag of the node (--%s)", where, name, flagName)
			continue
		}
		if value != "" && !strings.Contains(value, "${") {
			if err := f.Value.Set(value); err != nil {
				t.Errorf("%s: %s=%q refused by --%s: %v", where, name, value, flagName, err)
			}
		}
	}
}

// checkMemoryLimit wants Go's soft memory limit set, within 75 to 95 % of
// the container's: the collector works harder before the pod is killed,
// and the stacks and buffers outside the heap still fit.
func checkMemoryLimit(t *testing.T, gomemlimit, container string) {
	t.Helper()
	soft, err1 := byteSize(gomemlimit, "MiB", "GiB")
	hard, err2 := byteSize(container, "Mi", "Gi")
	if err1 != nil || err2 != nil {
		t.Errorf("GOMEMLIMIT %q (%v) and limits.memory %q (%v): want both, in MiB/GiB and Mi/Gi", gomemlimit, err1, container, err2)
		return
	}
	if soft < hard*75/100 || soft > hard*95/100 {
		t.Errorf("GOMEMLIMIT %s is %d %% of limits.memory %s, want 75 to 95 %%", gomemlimit, soft*100/hard, container)
	}
}

// byteSize parses "<n><mebi>" or "<n><gibi>".
func byteSize(s, mebi, gibi string) (int64, error) {
	for unit, scale := range map[string]int64{mebi: 1 << 20, gibi: 1 << 30} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * scale, err
		}
	}
	return 0, fmt.Errorf("no %s or %s suffix", mebi, gibi)
}

// imagePorts reads the listeners' ports from the Dockerfile's ENV.
func imagePorts(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, v := range []string{"PRESENCE_HTTP", "PRESENCE_GOSSIP", "PRESENCE_RPC"} {
		i := bytes.Index(b, []byte(v+"=0.0.0.0:"))
		if i < 0 {
			t.Fatalf("Dockerfile does not set %s=0.0.0.0:<port>", v)
		}
		rest := string(b[i+len(v)+len("=0.0.0.0:"):])
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		port, err := strconv.Atoi(rest[:end])
		if err != nil {
			t.Fatalf("Dockerfile %s: %v", v, err)
		}
		out[v] = port
	}
	return out
}

// TestKubernetesManifests checks the manifests against the node: every
// variable is a flag's, the probes are routes that answer, the ports are
// the image's, and the objects refer to each other consistently (the
// headless Service is the StatefulSet's and the one the nodes join; the
// selectors match the pods; the secrets come from one Secret).
func TestKubernetesManifests(t *testing.T) {
	objs := loadK8s(t)
	var sts k8sStatefulSet
	objs.get(t, "StatefulSet/presence", &sts)
	var peers, clients k8sService
	objs.get(t, "Service/"+sts.Spec.ServiceName, &peers)
	objs.get(t, "Service/presence", &clients)
	var pdb k8sPDB
	objs.get(t, "PodDisruptionBudget/presence", &pdb)

	labels := sts.Spec.Template.Metadata.Labels
	for what, sel := range map[string]map[string]string{
		"the StatefulSet's selector": sts.Spec.Selector.MatchLabels, "the PDB's selector": pdb.Spec.Selector.MatchLabels,
		"the headless Service's selector": peers.Spec.Selector, "the client Service's selector": clients.Spec.Selector,
	} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s %s=%s does not match the pod labels %v", what, k, v, labels)
			}
		}
	}
	if peers.Spec.ClusterIP != "None" || !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("discovery Service %s: clusterIP %q, publishNotReadyAddresses %v; want a headless Service listing pods before they are ready",
			sts.Spec.ServiceName, peers.Spec.ClusterIP, peers.Spec.PublishNotReadyAddresses)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: the pods must start together to form the cluster", sts.Spec.PodManagementPolicy)
	}
	if g := sts.Spec.Template.Spec.TerminationGracePeriodSeconds; g <= 10 {
		t.Errorf("terminationGracePeriodSeconds %d: a node needs up to 10 s to leave", g)
	}
	if pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %d, want 1", pdb.Spec.MaxUnavailable)
	}

	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0]
	if len(c.Command) > 0 || len(c.Args) > 0 {
		t.Errorf("command %q args %q: configure the node through PRESENCE_ variables", c.Command, c.Args)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" && (ref.Name != "presence" || ref.Key == "") {
			t.Errorf("%s from secret %q key %q, want a key of the Secret presence", e.Name, ref.Name, ref.Key)
		}
	}
	checkEnv(t, "StatefulSet", env)
	checkMemoryLimit(t, env["GOMEMLIMIT"], c.Resources.Limits.Memory)
	for _, secret := range []string{"PRESENCE_JWT_SECRET", "PRESENCE_ADMIN_TOKEN", "PRESENCE_CLUSTER_KEY"} {
		i := slices.IndexFunc(c.Env, func(e k8sEnv) bool { return e.Name == secret })
		if i < 0 || c.Env[i].ValueFrom.SecretKeyRef.Name == "" {
			t.Errorf("%s does not come from the Secret", secret)
		}
	}
	if env["PRESENCE_JOIN"] != sts.Spec.ServiceName {
		t.Errorf("PRESENCE_JOIN %q, want the headless Service %q", env["PRESENCE_JOIN"], sts.Spec.ServiceName)
	}
	if env["PRESENCE_BOOTSTRAP_EXPECT"] != strconv.Itoa(sts.Spec.Replicas) {
		t.Errorf("PRESENCE_BOOTSTRAP_EXPECT %q, replicas %d", env["PRESENCE_BOOTSTRAP_EXPECT"], sts.Spec.Replicas)
	}

	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	img := imagePorts(t)
	for name, want := range map[string]int{"http": img["PRESENCE_HTTP"], "gossip-tcp": img["PRESENCE_GOSSIP"],
		"gossip-udp": img["PRESENCE_GOSSIP"], "rpc": img["PRESENCE_RPC"]} {
		if ports[name] != want {
			t.Errorf("container port %s = %d, the image listens on %d", name, ports[name], want)
		}
	}
	for _, p := range peers.Spec.Ports {
		if ports[p.Name] != p.Port {
			t.Errorf("headless Service port %s = %d, the container's is %d", p.Name, p.Port, ports[p.Name])
		}
	}
	for _, p := range clients.Spec.Ports {
		if _, ok := ports[p.TargetPort]; !ok {
			t.Errorf("client Service targets port %q, which the container does not name", p.TargetPort)
		}
	}
	probes := map[string]k8sProbe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
	for what, p := range probes {
		if _, ok := ports[p.HTTPGet.Port]; !ok {
			t.Errorf("%s probe on port %q, which the container does not name", what, p.HTTPGet.Port)
		}
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("probes %s and %s, want readiness /readyz and liveness /healthz",
			c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)
	}
	probeNode(t, c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path)

	if len(sts.Spec.VolumeClaimTemplates) != 1 || len(c.VolumeMounts) != 1 ||
		c.VolumeMounts[0].Name != sts.Spec.VolumeClaimTemplates[0].Metadata.Name || c.VolumeMounts[0].MountPath != "/data" {
		t.Errorf("volumes: claims %+v, mounts %+v; want one claim mounted at the image's /data", sts.Spec.VolumeClaimTemplates, c.VolumeMounts)
	}
}

// probeNode starts a node and wants 200 from each path once it is ready.
func probeNode(t *testing.T, paths ...string) {
	t.Helper()
	srv, err := server.New(server.Config{Name: "probe", HTTPAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		RPCAddr: "127.0.0.1:0", DataDir: t.TempDir(), Dev: true,
		FastTimings: true, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		srv.Kill()
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	for _, path := range paths {
		testkit.WaitForErr(t, testkit.DefaultWait, func() error {
			resp, err := http.Get("http://" + srv.HTTPAddr() + path)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
			}
			return nil
		})
	}
}

// composeFileT is the part of the compose file these checks read.
type composeFileT struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Hostname    string            `yaml:"hostname"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Networks    map[string]struct {
			Aliases []string `yaml:"aliases"`
		} `yaml:"networks"`
		Scale   *int     `yaml:"scale"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
	Networks map[string]struct {
		Ipam any `yaml:"ipam"`
	} `yaml:"networks"`
}

// TestComposeFile: every variable is a flag's; no address is pinned;
// every node joins the one DNS alias all of them carry; the three fixed
// nodes are named by their host name and keep /data in a volume; the
// scaled service starts at zero.
func TestComposeFile(t *testing.T) {
	var f composeFileT
	readYAML(t, composeFile, &f)
	if len(f.Services) == 0 {
		t.Fatal("no services")
	}
	for name, n := range f.Networks {
		if n.Ipam != nil {
			t.Errorf("network %s pins addresses (ipam %v)", name, n.Ipam)
		}
	}
	for name, s := range f.Services {
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = v
		}
		checkEnv(t, "compose service "+name, env)
		if len(s.Command) > 0 {
			t.Errorf("service %s: command %q: configure the node through PRESENCE_ variables", name, s.Command)
		}
		join := env["PRESENCE_JOIN"]
		if join == "" {
			t.Errorf("service %s joins nothing", name)
		}
		aliased := false
		for _, n := range s.Networks {
			aliased = aliased || slices.Contains(n.Aliases, join)
		}
		if !aliased {
			t.Errorf("service %s joins %q, which is not one of its network aliases %v", name, join, s.Networks)
		}
		switch {
		case s.Scale != nil:
			if *s.Scale != 0 {
				t.Errorf("scaled service %s starts at %d, want 0", name, *s.Scale)
			}
		case s.Hostname != name || len(s.Volumes) != 1 || !strings.HasSuffix(s.Volumes[0], ":/data"):
			t.Errorf("service %s: host name %q, volumes %v; want its name as host name and a volume at /data",
				name, s.Hostname, s.Volumes)
		}
	}
}

// TestDeployedEnvironmentStartsANode: the variables the deployments set,
// with secrets filled in, are accepted by the node's flag parsing and
// configuration checks.
func TestDeployedEnvironmentStartsANode(t *testing.T) {
	var f composeFileT
	readYAML(t, composeFile, &f)
	vars := map[string]string{
		"PRESENCE_JWT_SECRET": "s", "PRESENCE_ADMIN_TOKEN": "a",
		"PRESENCE_CLUSTER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "PRESENCE_DATA_DIR": t.TempDir(),
		"PRESENCE_HTTP": "0.0.0.0:8080", "PRESENCE_GOSSIP": "0.0.0.0:7946", "PRESENCE_RPC": "0.0.0.0:7947",
	}
	for k, v := range f.Services["node1"].Environment {
		if _, set := vars[k]; !set && !strings.Contains(v, "${") {
			vars[k] = v
		}
	}
	cfg, _, err := parseFlags(nil, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Join) != 1 || cfg.BootstrapExpect != 3 {
		t.Fatalf("join %v, bootstrap-expect %d", cfg.Join, cfg.BootstrapExpect)
	}
}
