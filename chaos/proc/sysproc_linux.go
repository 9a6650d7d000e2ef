package proc

import "syscall"

// sysProcAttr puts a node in its own process group (a terminal's Ctrl-C
// reaches only the test, which then stops the nodes) and kills it when the
// test process dies, so no node outlives a crashed test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
