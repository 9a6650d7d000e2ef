package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// nameFile, in the data directory, records the name of the node whose
// Raft state the directory holds: the Raft server ID is the node name, so
// the state is only valid under that name.
const nameFile = "node-name"

// StoredName returns the node name recorded in dataDir by an earlier
// start, "" when none is (a new or older directory).
func StoredName(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, nameFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the node name of %s: %w", dataDir, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// claimDataDir records name in dataDir on the first start, and refuses a
// directory recorded under another name: started under a new name, a node
// would present another node's Raft state as its own. A container that
// gets a new host name when it is recreated (a scaled compose service)
// keeps its name through its volume (cmd/node reads StoredName when no
// --name is given).
func claimDataDir(dataDir, name string) error {
	stored, err := StoredName(dataDir)
	switch {
	case err != nil:
		return err
	case stored == name:
		return nil
	case stored != "":
		return fmt.Errorf("%w: data directory %s holds the Raft state of node %q, not %q: start it as --name %s, or give this node an empty data directory",
			ErrConfig, dataDir, stored, name, stored)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	tmp := filepath.Join(dataDir, nameFile+".tmp")
	if err := os.WriteFile(tmp, []byte(name+"\n"), 0o600); err != nil {
		return fmt.Errorf("record the node name: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, nameFile)); err != nil {
		return fmt.Errorf("record the node name: %w", err)
	}
	return nil
}
