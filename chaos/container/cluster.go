package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/presencehq/presence/chaos"
)

// Defaults of Config.
const (
	DefaultDocker    = "docker"
	DefaultHTTPPort  = "8080/tcp"
	DefaultStopGrace = 15 * time.Second
)

// Errors of Cluster's methods.
var (
	ErrBadConfig   = errors.New("container: invalid configuration")
	ErrCommand     = errors.New("container: command failed")
	ErrNoContainer = errors.New("container: no container for the service")
	ErrNoCompose   = errors.New("container: no compose client found")
	ErrNotReady    = errors.New("container: cluster not ready")
)

// projectName is what compose v1 and v2 both keep unchanged as a project
// name, so the label on the containers equals Config.Project.
var projectName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Config configures a Cluster.
type Config struct {
	// Compose is the compose client, e.g. {"docker", "compose"} or
	// {"docker-compose"}; required (DetectCompose finds one).
	Compose []string
	Docker  string // docker client; "" = DefaultDocker
	File    string // compose file; required
	// Overrides are further compose files layered on File, in order (each
	// a -f of its own), such as docker-compose.tls.yml.
	Overrides []string
	// Project is the compose project name: lower-case letters, digits,
	// '-' and '_'; required.
	Project string
	// Env is added to the environment of compose commands ("KEY=value"),
	// e.g. the secrets the compose file reads.
	Env []string
	// Services are the node services, each named like the node it runs
	// (--name), as in docker-compose.cluster.yml; nil = node1, node2,
	// node3.
	Services   []string
	HTTPPort   string // container port of the HTTP API; "" = DefaultHTTPPort
	AdminToken string // bearer token of /admin/*; required
	// StopGrace is how long docker stop and compose down wait after
	// SIGTERM before SIGKILL; 0 = DefaultStopGrace.
	StopGrace time.Duration
}

// Cluster is one compose project of node containers. Its methods are safe
// for concurrent use.
type Cluster struct {
	cfg Config
	run runFunc

	mu   sync.Mutex
	urls map[string]string // service or scaled node -> http://host:port, learnt by Up and Scale
	// scaled holds the replicas asked of each scaled service (Scale), which
	// every later up must repeat: a plain up scales a service back to the
	// compose file's count.
	scaled map[string]int
	extras map[string]string // a scaled container's node name -> its container id
}

// Exit is how a stopped container ended.
type Exit struct {
	Code int           // the node's exit code (137 when SIGKILL ended it)
	Took time.Duration // from sending SIGTERM until the container had exited
}

func (e Exit) String() string {
	return fmt.Sprintf("exit code %d after %v", e.Code, e.Took.Round(time.Millisecond))
}

// Attachment is a container's place on a network, kept by Disconnect so
// that Connect puts it back where the other nodes expect it.
type Attachment struct {
	Network string
	IP      string   // fixed IPv4 address; "" = none was configured
	Aliases []string // DNS names on the network, such as the service name
}

// New checks cfg and returns a Cluster; it runs nothing.
func New(cfg Config) (*Cluster, error) {
	if cfg.Docker == "" {
		cfg.Docker = DefaultDocker
	}
	if cfg.Services == nil {
		cfg.Services = []string{"node1", "node2", "node3"}
	}
	if cfg.HTTPPort == "" {
		cfg.HTTPPort = DefaultHTTPPort
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	switch {
	case len(cfg.Compose) == 0, cfg.File == "", cfg.AdminToken == "", len(cfg.Services) == 0:
		return nil, fmt.Errorf("%w: Compose, File, AdminToken and Services are required", ErrBadConfig)
	case !projectName.MatchString(cfg.Project):
		return nil, fmt.Errorf("%w: project name %q", ErrBadConfig, cfg.Project)
	case cfg.StopGrace < time.Second:
		return nil, fmt.Errorf("%w: StopGrace below a second", ErrBadConfig)
	}
	return &Cluster{cfg: cfg, run: execRun, urls: map[string]string{}, scaled: map[string]int{}, extras: map[string]string{}}, nil
}

// DetectCompose returns the first compose client that answers "version":
// the docker CLI plugin ("docker compose"), then docker-compose.
func DetectCompose(ctx context.Context, docker string) ([]string, error) {
	return detectCompose(ctx, execRun, docker)
}

func detectCompose(ctx context.Context, run runFunc, docker string) ([]string, error) {
	if docker == "" {
		docker = DefaultDocker
	}
	for _, cand := range [][]string{{docker, "compose"}, {"docker-compose"}} {
		if _, err := run(ctx, command{name: cand[0], args: append(cand[1:], "version")}); err == nil {
			return cand, nil
		}
	}
	return nil, ErrNoCompose
}

// Services returns the node services.
func (c *Cluster) Services() []string { return slices.Clone(c.cfg.Services) }

// Serving returns every service: with Admin it makes the cluster a
// chaos.Cluster. The project does not track which containers a test
// stopped; the suite uses the shared helpers with every node up.
func (c *Cluster) Serving() []string { return c.Services() }

var _ chaos.Cluster = (*Cluster)(nil)

// Up creates and starts whatever of the project is not running (with the
// replicas Scale asked for), then learns every service's published HTTP
// address.
func (c *Cluster) Up(ctx context.Context) error {
	if _, err := c.compose(ctx, append([]string{"up", "-d", "--remove-orphans"}, c.scaleArgs()...)...); err != nil {
		return err
	}
	for _, s := range c.cfg.Services {
		if err := c.learnURL(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// Down stops (SIGTERM, then SIGKILL after StopGrace) and removes the
// project's containers and network, and with volumes its named volumes.
func (c *Cluster) Down(ctx context.Context, volumes bool) error {
	args := []string{"down", "--remove-orphans", "-t", c.graceSeconds()}
	if volumes {
		args = append(args, "-v")
	}
	_, err := c.compose(ctx, args...)
	return err
}

// URL returns the base URL of service's HTTP API on the host, as learnt by
// the last Up; "" before that.
func (c *Cluster) URL(service string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.urls[service]
}

// URLs returns the base URL of every service, in service order.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.cfg.Services))
	for i, s := range c.cfg.Services {
		out[i] = c.URL(s)
	}
	return out
}

// Admin returns the admin client of service.
func (c *Cluster) Admin(service string) chaos.Admin {
	return chaos.Admin{URL: c.URL(service), Token: c.cfg.AdminToken}
}

// ID returns the id of service's container, running or not, or of the
// scaled container of that node name.
func (c *Cluster) ID(ctx context.Context, service string) (string, error) {
	c.mu.Lock()
	id, scaled := c.extras[service]
	c.mu.Unlock()
	if scaled {
		return id, nil
	}
	out, err := c.docker(ctx, "ps", "-a", "-q", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+c.cfg.Project,
		"--filter", "label=com.docker.compose.service="+service)
	if err != nil {
		return "", err
	}
	ids := strings.Fields(string(out))
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("%w: %s in project %s", ErrNoContainer, service, c.cfg.Project)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("container: %d containers for %s in project %s", len(ids), service, c.cfg.Project)
}

// Kill sends SIGKILL to service's container. The restart policy leaves a
// killed container stopped.
func (c *Cluster) Kill(ctx context.Context, service string) error {
	id, err := c.ID(ctx, service)
	if err != nil {
		return err
	}
	_, err = c.docker(ctx, "kill", id)
	return err
}

// Stop sends SIGTERM to service's container and waits until it exits
// (SIGKILL after StopGrace), measuring how long that took.
func (c *Cluster) Stop(ctx context.Context, service string) (Exit, error) {
	id, err := c.ID(ctx, service)
	if err != nil {
		return Exit{}, err
	}
	began := time.Now()
	if _, err := c.docker(ctx, "stop", "-t", c.graceSeconds(), id); err != nil {
		return Exit{}, err
	}
	took := time.Since(began)
	out, err := c.docker(ctx, "inspect", "-f", "{{.State.ExitCode}}", id)
	if err != nil {
		return Exit{}, err
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return Exit{}, fmt.Errorf("container: exit code of %s: %q", service, out)
	}
	return Exit{Code: code, Took: took}, nil
}

// Start starts service's stopped container.
func (c *Cluster) Start(ctx context.Context, service string) error {
	id, err := c.ID(ctx, service)
	if err != nil {
		return err
	}
	_, err = c.docker(ctx, "start", id)
	return err
}

// Disconnect takes service's container off its network (the container must
// have exactly one) and returns where it was.
func (c *Cluster) Disconnect(ctx context.Context, service string) (Attachment, error) {
	id, err := c.ID(ctx, service)
	if err != nil {
		return Attachment{}, err
	}
	out, err := c.docker(ctx, "inspect", "-f", "{{json .NetworkSettings.Networks}}", id)
	if err != nil {
		return Attachment{}, err
	}
	att, err := parseAttachment(out, id)
	if err != nil {
		return Attachment{}, fmt.Errorf("container: networks of %s: %w", service, err)
	}
	_, err = c.docker(ctx, "network", "disconnect", att.Network, id)
	return att, err
}

// Connect puts service's container back on the network of att, at its
// address and with its aliases.
func (c *Cluster) Connect(ctx context.Context, service string, att Attachment) error {
	id, err := c.ID(ctx, service)
	if err != nil {
		return err
	}
	args := []string{"network", "connect"}
	if att.IP != "" {
		args = append(args, "--ip", att.IP)
	}
	for _, a := range att.Aliases {
		args = append(args, "--alias", a)
	}
	_, err = c.docker(ctx, append(args, att.Network, id)...)
	return err
}

// SaveLogs writes the log of every service's container, with timestamps,
// to dir/<service>.log; services without a container are left out.
func (c *Cluster) SaveLogs(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, s := range c.cfg.Services {
		id, err := c.ID(ctx, s)
		if errors.Is(err, ErrNoContainer) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := c.run(ctx, command{name: c.cfg.Docker, args: []string{"logs", "-t", id}, combined: true})
		if err != nil {
			errs = append(errs, err)
		}
		if err := os.WriteFile(filepath.Join(dir, s+".log"), out, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// learnURL asks docker which host address publishes service's HTTP port.
func (c *Cluster) learnURL(ctx context.Context, service string) error {
	id, err := c.ID(ctx, service)
	if err != nil {
		return err
	}
	out, err := c.docker(ctx, "port", id, c.cfg.HTTPPort)
	if err != nil {
		return err
	}
	u, err := parsePort(out)
	if err != nil {
		return fmt.Errorf("container: HTTP port of %s: %w", service, err)
	}
	c.mu.Lock()
	c.urls[service] = u
	c.mu.Unlock()
	return nil
}

// parsePort turns docker port's answer ("127.0.0.1:8081", maybe more lines
// for IPv6) into a base URL, preferring IPv4 and dialling 0.0.0.0 as
// loopback.
func parsePort(out []byte) (string, error) {
	var hosts []string
	for _, line := range strings.Fields(string(out)) {
		host, port, err := net.SplitHostPort(line)
		if err != nil {
			continue
		}
		switch host {
		case "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		hosts = append(hosts, net.JoinHostPort(host, port))
	}
	if len(hosts) == 0 {
		return "", fmt.Errorf("not published: %q", out)
	}
	slices.SortStableFunc(hosts, func(a, b string) int { return strings.Count(a, ":") - strings.Count(b, ":") })
	return "http://" + hosts[0], nil
}

// parseAttachment reads docker inspect's NetworkSettings.Networks of
// container id, which must name exactly one network. The container's own
// short id, which docker adds as an alias by itself, is left out.
func parseAttachment(out []byte, id string) (Attachment, error) {
	var nets map[string]struct {
		IPAMConfig *struct {
			IPv4Address string
		}
		Aliases []string
	}
	if err := json.Unmarshal(out, &nets); err != nil {
		return Attachment{}, err
	}
	if len(nets) != 1 {
		return Attachment{}, fmt.Errorf("on %d networks, want 1", len(nets))
	}
	var att Attachment
	for name, n := range nets {
		att.Network = name
		if n.IPAMConfig != nil {
			att.IP = n.IPAMConfig.IPv4Address
		}
		for _, a := range n.Aliases {
			if !strings.HasPrefix(id, a) {
				att.Aliases = append(att.Aliases, a)
			}
		}
	}
	return att, nil
}

func (c *Cluster) graceSeconds() string {
	return strconv.Itoa(int(c.cfg.StopGrace / time.Second))
}

// Run runs a one-off container of service with args (compose run --rm),
// such as a tool service outside the nodes, and returns its output.
func (c *Cluster) Run(ctx context.Context, service string, args ...string) ([]byte, error) {
	return c.compose(ctx, append([]string{"run", "--rm", service}, args...)...)
}

func (c *Cluster) compose(ctx context.Context, args ...string) ([]byte, error) {
	full := append(slices.Clone(c.cfg.Compose[1:]), "-f", c.cfg.File)
	for _, f := range c.cfg.Overrides {
		full = append(full, "-f", f)
	}
	full = append(full, "-p", c.cfg.Project)
	return c.run(ctx, command{env: c.cfg.Env, name: c.cfg.Compose[0], args: append(full, args...)})
}

func (c *Cluster) docker(ctx context.Context, args ...string) ([]byte, error) {
	return c.run(ctx, command{name: c.cfg.Docker, args: args})
}

// command is one run of a client program.
type command struct {
	env      []string // added to this process's environment
	name     string
	args     []string
	combined bool // return standard error with standard output
}

// runFunc runs cmd and returns its output; the error carries its standard
// error. Tests replace it.
type runFunc func(ctx context.Context, cmd command) ([]byte, error)

func execRun(ctx context.Context, cmd command) ([]byte, error) {
	x := exec.CommandContext(ctx, cmd.name, cmd.args...)
	x.Env = append(os.Environ(), cmd.env...)
	var stdout, stderr bytes.Buffer
	x.Stdout, x.Stderr = &stdout, &stderr
	if cmd.combined {
		x.Stderr = &stdout
	}
	if err := x.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s %s: %v: %s", ErrCommand, cmd.name, strings.Join(cmd.args, " "),
			err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
