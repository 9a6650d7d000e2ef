package container

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// dataDir is where the image keeps a node's Raft state.
const dataDir = "/data"

// scaleArgs repeats the replicas asked of every scaled service.
func (c *Cluster) scaleArgs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var args []string
	for _, svc := range slices.Sorted(maps.Keys(c.scaled)) {
		args = append(args, "--scale", svc+"="+strconv.Itoa(c.scaled[svc]))
	}
	return args
}

// Scale runs n containers of service, a service scaled with --scale
// (docker-compose.cluster.yml's "node"): compose starts the missing ones or
// stops (SIGTERM, then SIGKILL after StopGrace) and removes the surplus,
// whose anonymous /data volumes Scale then deletes. It returns the node
// names (host names) of the service's running containers, sorted; Admin,
// URL, ID, Kill, Stop and Start accept them.
func (c *Cluster) Scale(ctx context.Context, service string, n int) ([]string, error) {
	before, err := c.serviceContainers(ctx, service, true)
	if err != nil {
		return nil, err
	}
	volumes := map[string]string{}
	for _, id := range before {
		if v, err := c.dataVolume(ctx, id); err == nil && v != "" {
			volumes[id] = v
		}
	}
	c.mu.Lock()
	c.scaled[service] = n
	c.mu.Unlock()
	args := append([]string{"up", "-d", "--no-recreate", "-t", c.graceSeconds()}, c.scaleArgs()...)
	if _, err := c.compose(ctx, args...); err != nil {
		return nil, err
	}
	after, err := c.serviceContainers(ctx, service, true)
	if err != nil {
		return nil, err
	}
	var errs []error
	for id, v := range volumes {
		if !slices.Contains(after, id) {
			if _, err := c.docker(ctx, "volume", "rm", v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	names, err := c.learnScaled(ctx, service)
	return names, errors.Join(append(errs, err)...)
}

// Scaled returns the node names of service's running containers and learns
// their addresses, as Scale does.
func (c *Cluster) Scaled(ctx context.Context, service string) ([]string, error) {
	return c.learnScaled(ctx, service)
}

// learnScaled records the node name, container id and published HTTP
// address of every running container of service.
func (c *Cluster) learnScaled(ctx context.Context, service string) ([]string, error) {
	ids, err := c.serviceContainers(ctx, service, false)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, id := range ids {
		out, err := c.docker(ctx, "inspect", "-f", "{{.Config.Hostname}}", id)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSpace(string(out))
		out, err = c.docker(ctx, "port", id, c.cfg.HTTPPort)
		if err != nil {
			return nil, err
		}
		u, err := parsePort(out)
		if err != nil {
			return nil, fmt.Errorf("container: HTTP port of %s (%s): %w", name, service, err)
		}
		c.mu.Lock()
		c.extras[name], c.urls[name] = id, u
		c.mu.Unlock()
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// serviceContainers returns the ids of service's containers: running
// ones, or every one with all.
func (c *Cluster) serviceContainers(ctx context.Context, service string, all bool) ([]string, error) {
	args := []string{"ps", "-q", "--no-trunc",
		"--filter", "label=com.docker.compose.project=" + c.cfg.Project,
		"--filter", "label=com.docker.compose.service=" + service}
	if all {
		args = append(args, "-a")
	}
	out, err := c.docker(ctx, args...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// dataVolume returns the name of the volume container id mounts at /data.
func (c *Cluster) dataVolume(ctx context.Context, id string) (string, error) {
	out, err := c.docker(ctx, "inspect", "-f",
		`{{range .Mounts}}{{if eq .Destination "`+dataDir+`"}}{{.Name}}{{end}}{{end}}`, id)
	return strings.TrimSpace(string(out)), err
}

// StopAll stops every container of the project at once (compose stop:
// SIGTERM, then SIGKILL after StopGrace), keeping them and their volumes.
func (c *Cluster) StopAll(ctx context.Context) error {
	_, err := c.compose(ctx, "stop", "-t", c.graceSeconds())
	return err
}

// Recreate replaces every container of the project by a new one (compose
// up --force-recreate), volumes kept, and learns the new HTTP addresses.
func (c *Cluster) Recreate(ctx context.Context) error {
	args := append([]string{"up", "-d", "--force-recreate", "-t", c.graceSeconds()}, c.scaleArgs()...)
	if _, err := c.compose(ctx, args...); err != nil {
		return err
	}
	for _, s := range c.cfg.Services {
		if err := c.learnURL(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// Address returns the IP address of the container of service (or scaled
// node) on its network.
func (c *Cluster) Address(ctx context.Context, service string) (string, error) {
	id, err := c.ID(ctx, service)
	if err != nil {
		return "", err
	}
	out, err := c.docker(ctx, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id)
	if err != nil {
		return "", err
	}
	addrs := strings.Fields(string(out))
	if len(addrs) != 1 {
		return "", fmt.Errorf("container: %s has addresses %q, want one", service, addrs)
	}
	return addrs[0], nil
}

// holderService labels the containers of HoldAddresses, so that compose
// down --remove-orphans removes any left behind.
const holderService = "address-holder"

// HoldAddresses starts n containers on the network of the project's first
// service, from its image, that take part in nothing (a lone development
// node on loopback): Docker gives a new container the lowest free
// address, so holding the addresses nodes just freed makes the nodes
// created next get other ones. release removes them.
func (c *Cluster) HoldAddresses(ctx context.Context, n int) (release func(context.Context) error, err error) {
	id, err := c.ID(ctx, c.cfg.Services[0])
	if err != nil {
		return nil, err
	}
	out, err := c.docker(ctx, "inspect", "-f", "{{.Config.Image}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", id)
	if err != nil {
		return nil, err
	}
	image, networks, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
	nets := strings.Fields(networks)
	if len(nets) != 1 {
		return nil, fmt.Errorf("container: %s is on networks %q, want one", c.cfg.Services[0], nets)
	}
	var holders []string
	release = func(ctx context.Context) error {
		if len(holders) == 0 {
			return nil
		}
		_, err := c.docker(ctx, append([]string{"rm", "-f"}, holders...)...)
		return err
	}
	for i := range n {
		out, err := c.docker(ctx, "run", "-d", "--network", nets[0], "--read-only",
			"--tmpfs", dataDir+":uid=10001,gid=10001,mode=0700",
			"--label", "com.docker.compose.project="+c.cfg.Project,
			"--label", "com.docker.compose.service="+holderService,
			image, "--dev", "--name", "holder"+strconv.Itoa(i), "--data-dir", dataDir,
			"--http", "127.0.0.1:8080", "--gossip", "127.0.0.1:7946", "--raft", "127.0.0.1:8300", "--rpc", "127.0.0.1:7947")
		if err != nil {
			return nil, errors.Join(err, release(ctx))
		}
		holders = append(holders, strings.TrimSpace(string(out)))
	}
	return release, nil
}
