package server

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirBelongsToOneNode: the first start records the name; the same
// name starts again; another name is refused with a configuration error
// naming the recorded one.
func TestDataDirBelongsToOneNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if name, err := StoredName(dir); err != nil || name != "" {
		t.Fatalf("StoredName of a missing directory = %q, %v", name, err)
	}
	if err := claimDataDir(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := claimDataDir(dir, "n1"); err != nil {
		t.Fatalf("the same name again: %v", err)
	}
	if name, err := StoredName(dir); err != nil || name != "n1" {
		t.Fatalf("StoredName = %q, %v; want n1", name, err)
	}
	err := claimDataDir(dir, "n2")
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("another name: %v, want ErrConfig", err)
	}
	if _, err := os.Stat(filepath.Join(dir, nameFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}
