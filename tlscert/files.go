package tlscert

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File modes: a private key is readable by its owner only; a certificate
// is public.
const (
	keyFileMode  fs.FileMode = 0o600
	certFileMode fs.FileMode = 0o644
	dirMode      fs.FileMode = 0o700
)

// ErrExists is returned by WritePair when a file it would write exists:
// an existing key or certificate is never overwritten.
var ErrExists = errors.New("tlscert: file exists")

// WritePair writes a certificate and its private key into dir (created
// when missing, mode 0700) as <base>.pem and <base>-key.pem, the key with
// mode 0600. It fails with ErrExists, writing nothing, when either file
// exists. It returns the two paths.
func WritePair(dir, base string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return "", "", fmt.Errorf("tlscert: %w", err)
	}
	certPath = filepath.Join(dir, base+".pem")
	keyPath = filepath.Join(dir, base+"-key.pem")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%w: %s; remove it or write elsewhere", ErrExists, p)
		}
	}
	if err := writeNew(keyPath, keyPEM, keyFileMode); err != nil {
		return "", "", err
	}
	if err := writeNew(certPath, certPEM, certFileMode); err != nil {
		_ = os.Remove(keyPath)
		return "", "", err
	}
	return certPath, keyPath, nil
}

// writeNew creates path with mode (never following or replacing an
// existing file) and writes data to it.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("tlscert: %w", err)
	}
	// The umask may have removed bits but never adds any: the key is at
	// most 0600 already. Chmod anyway so a permissive umask cannot matter.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("tlscert: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("tlscert: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("tlscert: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("tlscert: %w", err)
	}
	return nil
}
