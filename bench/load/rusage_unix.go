//go:build unix

package load

import (
	"syscall"
	"time"
)

// SelfCPU returns the CPU time (user and system) this process used so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
