//go:build unix && !linux

package proc

import "syscall"

// sysProcAttr puts a node in its own process group, so a terminal's Ctrl-C
// reaches only the test, which then stops the nodes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
