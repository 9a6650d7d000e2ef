//go:build unix

package proc

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// nodePackage is the presence-node main package, by import path, so that
// Build works from any directory of the module.
const nodePackage = "github.com/presencehq/presence/cmd/node"

// Build compiles presence-node into dir with the go command of PATH and
// returns the binary's path: the suites that need a binary and were not
// given one build the module's own.
func Build(dir string) (string, error) {
	binary := filepath.Join(dir, "presence-node")
	out, err := exec.Command("go", "build", "-o", binary, nodePackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("proc: go build %s: %v\n%s", nodePackage, err, out)
	}
	return binary, nil
}
