// Package container drives the three-node compose cluster of
// docker-compose.cluster.yml for container-level fault tests, through the
// docker and compose command-line clients: it brings a compose project up
// and down, kills, stops (SIGTERM, exit measured) and starts node
// containers, disconnects a node from the cluster network and connects it
// back at the same address, waits until the nodes agree on one cluster and
// saves their logs.
//
// The fault tests themselves are in this package's tests behind the build
// tag "container" (scripts/container-test.sh runs them); they drive the
// cluster with the chaos toolkit's clients on the host, through the
// published HTTP ports.
package container
