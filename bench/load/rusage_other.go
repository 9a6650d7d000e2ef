//go:build !unix

package load

import "time"

// SelfCPU returns 0: the CPU time of the process is not read on this system.
func SelfCPU() time.Duration { return 0 }
