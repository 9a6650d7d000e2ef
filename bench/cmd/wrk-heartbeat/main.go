// Command wrk-heartbeat prepares and reports the heartbeat benchmark that
// heartbeat-wrk.sh runs with wrk (issue #17, target 1).
//
//	wrk-heartbeat gen --out DIR [--users 40000 --channels 1000 ...]
//	    writes DIR/requests.tsv (a token and a body per user) and
//	    DIR/heartbeat.lua, the wrk script sending them
//	wrk-heartbeat report [--baseline bare --subject node] RUN-FILE...
//	    tabulates the runs (files of "# key: value" headers and wrk's
//	    output), in the order given
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/presencehq/presence/bench/wrk"
)

// devJWTSecret is the secret of a node started with --dev.
const devJWTSecret = "dev-jwt-secret-not-for-production"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: wrk-heartbeat gen|report [flags]; -h after either for its flags")
		return 2
	}
	var err error
	switch args[0] {
	case "gen":
		err = gen(args[1:], stdout, stderr)
	case "report":
		err = report(args[1:], stdout, stderr)
	default:
		err = fmt.Errorf("unknown command %q (gen or report)", args[0])
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "wrk-heartbeat:", err)
		return 2
	}
	return 0
}

func gen(args []string, stdout, stderr io.Writer) error {
	var cfg wrk.GenConfig
	fs := flag.NewFlagSet("wrk-heartbeat gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write requests.tsv and heartbeat.lua into (required)")
	fs.IntVar(&cfg.Users, "users", wrk.DefaultUsers, "users; user u heartbeats channel <prefix><u mod channels>")
	fs.IntVar(&cfg.Channels, "channels", wrk.DefaultChannels, "channels")
	fs.StringVar(&cfg.Prefix, "prefix", wrk.DefaultPrefix, "channel name prefix (the node's --dev makes /demo/... public)")
	fs.StringVar(&cfg.Path, "path", wrk.DefaultPath, "path of the update endpoint")
	fs.StringVar(&cfg.RunID, "run-id", wrk.DefaultRunID, "user ids are <run-id>-u<u>, client ids <run-id>-c<u>")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", devJWTSecret, "HS256 secret of the servers (default: the node's --dev secret)")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", wrk.DefaultTokenTTL, "tokens expire this long after now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("gen: --out DIR is required, and nothing else")
	}
	script, err := wrk.Generate(cfg, *out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, script)
	return nil
}

func report(args []string, stdout, stderr io.Writer) error {
	var cfg wrk.ReportConfig
	fs := flag.NewFlagSet("wrk-heartbeat report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Baseline, "baseline", "bare", "the bare handler's server name")
	fs.StringVar(&cfg.Subject, "subject", "node", "the node's server name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("report: give the run files")
	}
	var runs []wrk.Run
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		r, err := wrk.ParseRun(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		runs = append(runs, r)
	}
	return wrk.Report(stdout, runs, cfg)
}
