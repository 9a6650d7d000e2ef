package testkit

import (
	"strings"
	"testing"
)

// FileName returns t's name as one file name, for the logs and screenshots
// a test leaves behind: every character but ASCII letters, digits, '-', '_'
// and '.' (the '/' of a subtest among them) becomes '_'.
func FileName(t testing.TB) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, t.Name())
}
