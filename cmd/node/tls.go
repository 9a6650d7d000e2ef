package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/presencehq/presence/tlscert"
)

const day = 24 * time.Hour

const tlsUsage = `usage:
  presence-node tls ca   [--dir DIR] [--days N] [--common-name NAME]
  presence-node tls cert --name NODE [--host HOST]... [--dir DIR] [--days N] [--ca FILE] [--ca-key FILE]

tls ca writes a certificate authority (presence-ca.pem, presence-ca-key.pem);
tls cert writes a certificate it signs for one node (NODE.pem, NODE-key.pem),
valid as server and client for mutual TLS between nodes and for HTTPS.
Existing files are never overwritten; private keys are written with mode 0600.`

// tlsCommand runs "presence-node tls ca|cert ...", which write the files of
// node-to-node mutual TLS (and certificates usable for HTTPS), as consul
// tls does. It reads no environment variables: every input is explicit.
func tlsCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, tlsUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "ca":
		err = tlsCA(args[1:], stdout, stderr)
	case "cert":
		err = tlsCert(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, tlsUsage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown tls command %q\n%s", errUsage, args[0], tlsUsage)
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "presence-node tls:", err)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "presence-node tls:", err)
		return 1
	}
	return 0
}

// errUsage marks a command line that cannot work (exit code 2).
var errUsage = errors.New("usage")

func tlsCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence-node tls ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory to write the files to")
	days := fs.Int("days", int(tlscert.DefaultCAValidity/day), "days the CA is valid")
	name := fs.String("common-name", tlscert.DefaultCACommonName, "common name of the CA")
	if err := parseSubcommand(fs, args); err != nil {
		return err
	}
	if *days < 1 {
		return fmt.Errorf("%w: --days must be at least 1", errUsage)
	}
	cert, key, err := tlscert.NewCA(tlscert.CAOptions{CommonName: *name, Validity: time.Duration(*days) * day})
	if err != nil {
		return err
	}
	certPath, keyPath, err := tlscert.WritePair(*dir, strings.TrimSuffix(tlscert.CAFile, ".pem"), cert, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "==> CA certificate: %s\n==> CA key (keep it private, off the nodes): %s\n", certPath, keyPath)
	return nil
}

func tlsCert(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence-node tls cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the node's name (--name of the node); required")
	var hosts hostList
	fs.Var(&hosts, "host", "further DNS name or IP address of the node (repeat, or comma-separated)")
	dir := fs.String("dir", ".", "directory to write the files to")
	days := fs.Int("days", int(tlscert.DefaultCertValidity/day), "days the certificate is valid")
	caFile := fs.String("ca", tlscert.CAFile, "CA certificate")
	caKeyFile := fs.String("ca-key", tlscert.CAKeyFile, "CA private key")
	if err := parseSubcommand(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("%w: --name is required", errUsage)
	}
	if *days < 1 {
		return fmt.Errorf("%w: --days must be at least 1", errUsage)
	}
	caCert, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("CA certificate: %w (create one with: presence-node tls ca)", err)
	}
	caKey, err := os.ReadFile(*caKeyFile)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	cert, key, err := tlscert.NewCert(tlscert.CertOptions{
		Name: *name, Hosts: hosts, CACert: caCert, CAKey: caKey, Validity: time.Duration(*days) * day,
	})
	if err != nil {
		return err
	}
	certPath, keyPath, err := tlscert.WritePair(*dir, *name, cert, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "==> certificate of %s: %s\n==> its key: %s\n==> CA to trust: %s\n",
		*name, certPath, keyPath, filepath.Clean(*caFile))
	return nil
}

// parseSubcommand parses args, refusing stray arguments.
func parseSubcommand(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return err
	} else if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// hostList collects --host values, repeated or comma-separated.
type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	*h = append(*h, splitList(v)...)
	return nil
}
